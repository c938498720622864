#!/usr/bin/python3
"""Rewrite a host's gearmand settings into the layout the gearman_server role deployed before issue 17.

Before issue 17 PARAMS in /etc/default/gearman-job-server held only the listen and tuning options and
--config-file=/etc/gearmand.conf; the queue type and every queue option, passwords included (the PostgreSQL one
inside the conninfo URI), were lines of /etc/gearmand.conf (0640 root:gearman). The verify playbooks put a
converged host back in that layout, restart gearmand on it with jobs queued, and converge again: the role must
move the settings without losing a job. The queue's password is read from stdin (never an argument: ps).
"""

import grp
import os
import re
import shlex
import sys
import urllib.parse

DEFAULTS = "/etc/default/gearman-job-server"
CONFIG = "/etc/gearmand.conf"
PGPASS = "/var/lib/gearman/.pgpass"
QUEUE = (
    "--queue-type",
    "--libsqlite3-",
    "--store-queue-on-shutdown",
    "--mysql-",
    "--libpq-",
    "--redis-",
    "--libmemcached-",
)


def main() -> int:
    password = sys.stdin.read().strip()
    with open(DEFAULTS, encoding="utf-8") as f:
        lines = f.read().splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith("PARAMS=")]
    words = " ".join(shlex.split(lines[index][len("PARAMS=") :])).split()
    queue = [w for w in words if w.startswith(QUEUE)]
    rest = [w for w in words if not w.startswith(QUEUE) and not w.startswith("--config-file=")]
    config = []
    for word in queue:
        if word.startswith("--libpq-conninfo="):  # the password back into the URI, no password file
            conninfo = re.sub(r"[?&]passfile=[^&]*", "", word)
            word = conninfo.replace("@", ":" + urllib.parse.quote(password, safe="") + "@", 1)
        config.append(word)
    if any(w.startswith("--mysql-") for w in queue):
        config.append(f"--mysql-password={password}")
    if any(w.startswith("--redis-") for w in queue) and password:
        config.append(f"--redis-password={password}")
    lines[index] = 'PARAMS="' + " ".join([*rest, f"--config-file={CONFIG}"]) + '"'
    with open(DEFAULTS, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# gearmand queue settings, as the role wrote them before issue 17\n" + "\n".join(config) + "\n")
    os.chmod(CONFIG, 0o640)
    os.chown(CONFIG, 0, grp.getgrnam("gearman").gr_gid)
    if os.path.exists(PGPASS):
        os.unlink(PGPASS)
    print(" ".join(w.split("=")[0] for w in config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
