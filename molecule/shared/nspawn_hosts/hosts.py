"""The test hosts themselves: an overlay root per host on the cached image, booted with systemd-nspawn in its
network namespace, ready when systemd finished booting and sshd answers; and their removal from any state.

``up`` and ``down`` remove *every* host of this harness (they are all named and marked as ours), which is what
makes a rerun after a killed run work: one harness run per machine at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import image, network, settings
from .platform import Platform, parse_spec
from .prerequisites import check
from .system import (
    HarnessError,
    children,
    locked,
    log,
    mounts_under,
    nspawn_pids_under,
    read_pid,
    run,
    running,
    wait_gone,
)

NSENTER = ["nsenter", "--mount", "--uts", "--ipc", "--net", "--pid"]


def instance_dir(name: str) -> Path:
    return settings.instances_dir() / name


def ssh_dir() -> Path:
    return settings.STATE / "ssh"


def make_key() -> Path:
    """The run's SSH key (root's authorized key in every host), made once per run."""
    ssh_dir().mkdir(parents=True, exist_ok=True)
    ssh_dir().chmod(0o700)
    key = ssh_dir() / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", settings.COMMENT, "-f", str(key)])
    return key


def apt_cache(suite: str) -> Path:
    return settings.CACHE / "apt-archives" / suite


def seed_apt_archive(suite: str, upper: Path) -> None:
    """Give a host every package already downloaded on this machine, as hard links in its own apt archive.

    Each host has its own /var/cache/apt/archives (hosts running apt at the same time would otherwise fight over
    one lock, which apt does not wait for); harvest_apt_archive() brings what they downloaded back at destroy."""
    cache = apt_cache(suite)
    cache.mkdir(parents=True, exist_ok=True)
    target = upper / "var/cache/apt/archives"
    for d in (upper / "var", upper / "var/cache", upper / "var/cache/apt", target):
        d.mkdir(mode=0o755, exist_ok=True)
    for deb in cache.glob("*.deb"):
        with contextlib.suppress(OSError):
            os.link(deb, target / deb.name)


def harvest_apt_archive(instance: Path) -> None:
    """Keep the packages a host downloaded (complete .debs only: apt renames them out of partial/ when verified)."""
    try:
        suite = (instance / "suite").read_text().strip()
    except OSError:
        return
    if suite not in settings.SUITES:
        return
    cache = apt_cache(suite)
    cache.mkdir(parents=True, exist_ok=True)
    for deb in (instance / "upper/var/cache/apt/archives").glob("*.deb"):
        if not (cache / deb.name).exists():
            with contextlib.suppress(OSError):
                tmp = cache / f".{deb.name}.tmp"
                shutil.copyfile(deb, tmp)
                tmp.rename(cache / deb.name)


def etc_hosts(p: Platform, platforms: Sequence[Platform]) -> str:
    """Every host of the run by name, as a small site's DNS would give them."""
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {p.name}", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{q.address} {q.name}" for q in platforms if q.name != p.name]
    return "\n".join(lines) + "\n"


def prepare_root(p: Platform, key: Path, platforms: Sequence[Platform]) -> Path:
    """Mount the host's overlay root (lower: the cached image) and give it the run's key, names and resolver."""
    base = instance_dir(p.name)
    upper, work, root = base / "upper", base / "work", base / "root"
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    (base / "suite").write_text(p.suite + "\n")
    seed_apt_archive(p.suite, upper)
    lower = image.image_dir(p.suite)
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(root)])
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    (ssh / "authorized_keys").chmod(0o600)
    (root / "etc/hosts").write_text(etc_hosts(p, platforms))
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    if p.policy_rc_d:
        # What Docker-derived images and this project's own machines have: no service starts from a package
        # install (invoke-rc.d asks this file; 101 = action forbidden). systemctl itself is not affected.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    return root


def nspawn_argv(p: Platform, root: Path) -> list[str]:
    return [
        "systemd-nspawn", "-D", str(root), "-M", p.name,
        "--register=no", "--keep-unit", "-q", "-b",
        f"--network-namespace-path=/run/netns/{p.netns()}",
        "--capability=CAP_NET_ADMIN",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only",
    ]  # fmt: skip


def boot(p: Platform, root: Path) -> int:
    """Start systemd-nspawn detached (own session, console to console.log); its pid."""
    base = instance_dir(p.name)
    env = dict(os.environ)
    if p.suite != "bookworm":
        # systemd >= 256 refuses to boot on the legacy/hybrid cgroup hierarchy this host has: give it cgroup v2.
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    with (base / "console.log").open("wb") as out:
        proc = subprocess.Popen(
            nspawn_argv(p, root),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    (base / "nspawn.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def is_namespace_init(pid: int) -> bool:
    """PID 1 of its own PID namespace (NSpid: <outer> 1)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            fields = line.split()
            if fields[:1] == ["NSpid:"] and len(fields) == 3 and fields[2] == "1":
                return True
    return False


def init_pid(nspawn_pid: int, timeout: float = 20) -> int:
    """The container's systemd: the descendant of nspawn that is PID 1 of its own PID namespace.

    nspawn forks helper children before the init exists, so the first child is not necessarily the init."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo = children(nspawn_pid)
        while todo:
            pid = todo.pop()
            if is_namespace_init(pid):
                return pid
            todo += children(pid)
        if not running(nspawn_pid):
            break
        time.sleep(0.05)
    raise HarnessError("the container's init did not start")


def nsenter(init: int, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run([NSENTER[0], "--target", str(init), *NSENTER[1:], "--", *cmd], check=False, timeout=timeout)


def wait_booted(p: Platform, nspawn_pid: int, deadline: float) -> None:
    """Until systemd inside says running (or degraded: the failed units are logged)."""
    state = ""
    while time.monotonic() < deadline:
        if not running(nspawn_pid):
            raise HarnessError("systemd-nspawn exited")
        init = init_pid(nspawn_pid)
        res = nsenter(init, "systemctl", "is-system-running", "--wait", timeout=max(1, deadline - time.monotonic()))
        state = res.stdout.strip() or res.stderr.strip()
        if state == "degraded":
            failed = nsenter(init, "systemctl", "--failed", "--no-legend", "--plain").stdout
            log(f"{p.name}: systemd is degraded; failed units:\n{failed}")
        if state in ("running", "degraded"):
            return
        time.sleep(0.2)
    raise HarnessError(f"systemd inside did not finish booting (state '{state}')")


def wait_ssh(p: Platform, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((str(p.address), 22), timeout=1):
            return
        time.sleep(0.1)
    raise HarnessError(f"sshd on {p.address}:22 does not answer")


def wait_ready(p: Platform, nspawn_pid: int, timeout: float = 90) -> None:
    """Booted and reachable over SSH within timeout seconds, or an error with the console's last lines."""
    deadline = time.monotonic() + timeout
    try:
        wait_booted(p, nspawn_pid, deadline)
        wait_ssh(p, deadline)
    except (HarnessError, subprocess.TimeoutExpired) as exc:
        console = instance_dir(p.name) / "console.log"
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(console.read_text(errors="replace").splitlines()[-30:])
        raise HarnessError(f"host {p.name} did not come up: {exc}\n--- {console} (tail) ---\n{tail}") from None


def kill_containers() -> list[str]:
    """SIGKILL to a container's init ends its whole PID namespace; nspawn then exits."""
    nspawns = nspawn_pids_under(settings.instances_dir())
    for pid in nspawns:
        for child in children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    left = wait_gone(nspawns, 10)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = wait_gone(left, 5)
    if left:
        raise HarnessError(f"systemd-nspawn processes {left} did not exit")
    return [f"container (nspawn pid {pid})" for pid in nspawns]


def down(*, quiet: bool = False) -> None:
    """Remove everything of this harness. Idempotent; works from any leftover state."""
    removed = kill_containers()
    # Overlay and bind mounts under the state dir.
    for target in mounts_under(settings.instances_dir()):
        if run(["umount", target], check=False).returncode != 0:
            run(["umount", "-l", target], check=False)
        removed.append(f"mount {target}")
    removed += network.teardown()
    # Per-run state (instance roots' upper layers, logs, the run's SSH key), after keeping the downloaded packages.
    instances = settings.instances_dir()
    if instances.exists():
        leftover = mounts_under(instances)
        if leftover:
            raise HarnessError(f"still mounted, not removing {instances}: {leftover}")
        for instance in instances.iterdir():
            harvest_apt_archive(instance)
        shutil.rmtree(instances)
    if ssh_dir().exists():
        shutil.rmtree(ssh_dir())
    if not quiet and removed:
        log("removed: " + "; ".join(removed))


def instance_config(platforms: Sequence[Platform], key: Path) -> list[dict[str, object]]:
    """What molecule needs to reach each host (molecule_instance_config)."""
    return [
        {
            "instance": p.name,
            "address": str(p.address),
            "user": "root",
            "port": 22,
            "identity_file": str(key),
            "suite": p.suite,
        }
        for p in platforms
    ]


def load_spec(spec_path: str) -> list[Platform]:
    try:
        spec = json.loads(Path(spec_path).read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{spec_path}: cannot read the spec: {exc}") from None
    return parse_spec(spec, settings.SUBNET)


def up(spec_path: str) -> None:
    """Clean leftovers, boot the hosts of the spec, print the instance config (JSON) on stdout."""
    platforms = load_spec(spec_path)
    suites = sorted({p.suite for p in platforms})
    t0 = time.monotonic()
    with locked(settings.lock_path()):
        down()  # leftovers of an earlier (failed, killed) run
        check(suites)
    for suite in suites:
        image.image(suite)
    t_img = time.monotonic()
    with locked(settings.lock_path()):
        try:
            settings.instances_dir().mkdir(parents=True, exist_ok=True)
            network.setup(platforms)
            key = make_key()
            pids = {p.name: boot(p, prepare_root(p, key, platforms)) for p in platforms}
            for p in platforms:
                wait_ready(p, pids[p.name])
        except BaseException:
            log("bringing the hosts up failed; removing what was created")
            with contextlib.suppress(Exception):
                down(quiet=True)
            raise
    log(f"{len(platforms)} host(s) up in {time.monotonic() - t_img:.1f} s (images {t_img - t0:.1f} s)")
    json.dump(instance_config(platforms, key), sys.stdout, indent=2)
    print()


def status() -> None:
    """What is up (for debugging)."""
    for pid in nspawn_pids_under(settings.instances_dir()):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            name = argv[argv.index(b"-M") + 1].decode() if b"-M" in argv else "?"
            print(f"container {name}: nspawn pid {pid}, init pid {children(pid)}")
    for m in mounts_under(settings.instances_dir()):
        print(f"mount {m}")
    for ns in network.our_netns():
        print(f"netns {ns}")
    for table in network.TABLES:
        for rule in network.our_rules(table):
            print(f"iptables -t {table} {shlex.join(rule)}")


def shell(name: str, cmd: Sequence[str]) -> int:
    """Run cmd (default: a login shell) inside host name, through nsenter; its exit status."""
    pid = read_pid(instance_dir(name) / "nspawn.pid")
    if pid is None or not running(pid):
        raise HarnessError(f"no running host '{name}'")
    argv = list(cmd) or ["/bin/bash", "-l"]
    return subprocess.call([NSENTER[0], "--target", str(init_pid(pid)), *NSENTER[1:], "--", *argv])
