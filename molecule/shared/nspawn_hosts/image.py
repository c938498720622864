"""The cached Debian base image a host boots from: debootstrap once per machine, atomic, rebuilt on recipe change.

Only what Ansible needs to reach and drive the host, plus what every real Debian server has (procps, dbus).
Everything the roles install (gearmand, PHP, python3-venv, ...) is NOT here: the roles install it for real.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from . import settings
from .prerequisites import check
from .system import HarnessError, locked, log, nspawn_pids_under

INCLUDE = "python3,systemd,systemd-sysv,dbus,iproute2,openssh-server,procps"
RECIPE_VERSION = "4"  # bump when configure() changes what it builds: cached images are rebuilt
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
STAMP = ".ijm-image"
# Masked in the image. Determinism: no background apt runs during a converge, no gettys on a console nobody reads.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "console-getty.service",
    "getty@.service",
    "systemd-firstboot.service",
)


def images_dir() -> Path:
    return settings.CACHE / "images"


def image_dir(suite: str) -> Path:
    return images_dir() / suite


def recipe_stamp(suite: str) -> str:
    return hashlib.sha256(f"{RECIPE_VERSION}|{suite}|{INCLUDE}|{settings.MIRROR}".encode()).hexdigest()[:16]


def is_current(final: Path, stamp: str) -> bool:
    """The image exists, was built by this recipe and is younger than IJM_IMAGE_MAX_AGE_DAYS."""
    stamp_file = final / STAMP
    try:
        words = stamp_file.read_text().split()
        age = time.time() - stamp_file.stat().st_mtime
    except OSError:
        return False
    return bool(words) and words[0] == stamp and age < settings.IMAGE_MAX_AGE_DAYS * 86400


def image(suite: str, *, force: bool = False) -> Path:
    """Build the cached image once per machine; rebuild when the recipe changed. Atomic: tmp dir + rename."""
    check((suite,))
    final = image_dir(suite)
    stamp = recipe_stamp(suite)
    with locked(images_dir() / ".lock"):
        if not force and is_current(final, stamp):
            return final
        if nspawn_pids_under(settings.instances_dir()):
            raise HarnessError(
                f"the {suite} image must be (re)built but test hosts are running on it: run 'down' first"
            )
        t0 = time.monotonic()
        tmp = images_dir() / f".{suite}.building"
        if tmp.exists():
            shutil.rmtree(tmp)
        log(f"building the {suite} base image in {final} (debootstrap, once per machine; ~2 minutes)")
        res = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={INCLUDE}",
                f"--keyring={KEYRING}",
                suite,
                str(tmp),
                settings.MIRROR,
            ],
            text=True,
            capture_output=True,
            check=False,
        )
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-20:])
            raise HarnessError(f"debootstrap {suite} failed (is {settings.MIRROR} reachable?):\n{tail}")
        configure(tmp, suite)
        built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (tmp / STAMP).write_text(f"{stamp} {suite} built {built}\n")
        old = images_dir() / f".{suite}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
        log(f"{suite} image ready in {time.monotonic() - t0:.0f} s")
    return final


def configure(root: Path, suite: str) -> None:
    """Make a debootstrapped tree a server the harness can boot and reach, with fresh package lists."""
    # Full apt sources like a real server (updates and security too), deb822 style.
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {settings.MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n"
        f"Signed-By: {KEYRING}\n\n"
        f"Types: deb\nURIs: {settings.SECURITY_MIRROR}\nSuites: {suite}-security\nComponents: main\n"
        f"Signed-By: {KEYRING}\n"
    )
    # Keep downloaded packages: destroy copies them into the per-machine cache, create seeds each host with it.
    (root / "etc/apt/apt.conf.d/90ijm-keep-debs").write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')
    # dpkg without fsync per file: a throw-away host, and installs on 2 cores take a third of the time.
    (root / "etc/dpkg/dpkg.cfg.d/90ijm-unsafe-io").write_text("force-unsafe-io\n")
    (root / "etc/apt/apt.conf.d/90ijm-no-languages").write_text('Acquire::Languages "none";\n')
    # Key-only root login over SSH, no DNS lookups (there is no reverse DNS for 198.18.0.0/15).
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/ijm.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    )
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        if not link.is_symlink():
            link.symlink_to("/dev/null")
    # A fresh machine-id per boot (nspawn provides one); the hostname comes from nspawn (-M).
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    # The package lists, so the first apt run of a role with cache_valid_time has nothing to fetch.
    if not (root / "etc/resolv.conf").is_symlink():
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    res = subprocess.run(["chroot", str(root), "apt-get", "update", "-q"], text=True, capture_output=True, check=False)
    if res.returncode != 0:
        raise HarnessError(f"apt-get update in the new {suite} image failed:\n{res.stdout}{res.stderr}")
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=False)
