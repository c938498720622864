"""The worker's persistent runners on this host, as JSON: the unit's main PID, its worker processes (children of the
main PID running islandora_job.worker.child) and each runner (a child of a worker process running runner.php) with its
argv and its Seccomp and NoNewPrivs lines. Standard library only (it runs on the test host)."""

import json
import os
import subprocess
import sys

unit = sys.argv[1]
main = int(subprocess.check_output(["systemctl", "show", "-P", "MainPID", unit], text=True))
procs = {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open(f"/proc/{entry}/stat") as stat:
            ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
            argv = [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0")[:-1]]
        with open(f"/proc/{entry}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except (OSError, ValueError, IndexError):
        continue  # gone meanwhile
    procs[int(entry)] = (ppid, argv, {k: fields.get(k, "").strip() for k in ("Seccomp", "NoNewPrivs")})
workers = sorted(
    pid for pid, (ppid, argv, _) in procs.items() if main and ppid == main and "islandora_job.worker.child" in argv
)
runners = {
    str(pid): {"parent": ppid, "argv": argv, **status}
    for pid, (ppid, argv, status) in procs.items()
    if ppid in workers and any(arg.endswith("/runner.php") for arg in argv)
}
print(json.dumps({"main": main, "workers": workers, "runners": runners}))
