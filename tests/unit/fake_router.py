"""A stand-in for ``drush islandora-job-router``: reads the payload on stdin, acts on its ``func``."""

import json
import os
import subprocess
import sys
import time

payload = json.loads(sys.stdin.read() or "{}")
func = payload.get("func")
args = payload.get("args", [])
if func == "echo":
    sys.stdout.write(json.dumps(payload))
elif func == "argv":
    sys.stdout.write(json.dumps(sys.argv[1:]))
elif func == "fail":
    sys.stderr.write("first line\n" + "x" * 10000 + "\nthe last words\n")
    sys.exit(3)
elif func == "hang":
    # like drush starting php: a child in the same process group that must die with us
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(args[0], "w") as file:
        file.write(str(child.pid))
    time.sleep(3600)
elif func == "big":
    sys.stdout.write("y" * int(args[0]))
elif func == "islandora_job_heartbeat":
    sys.stdout.write("1")  # the original's heartbeat returns TRUE, echoed as "1"
elif func == "list":
    print("-f islandora_derivatives -f islandora_other\n")
else:
    sys.stderr.write(f"unknown {func}\n")
    sys.exit(1)
sys.stdout.flush()
os._exit(0)
