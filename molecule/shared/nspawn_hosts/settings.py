"""Every fact the harness is configured by, in one place: the directories it owns, the address range, the mirrors.

Read once from the environment (``IJM_*``) at import. The other modules read these as ``settings.NAME`` at call
time, so that a test can point them at a temporary directory with ``monkeypatch.setattr(settings, ...)``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

CACHE = Path(os.environ.get("IJM_CACHE_DIR", "/var/cache/islandora-job-molecule"))
STATE = Path(os.environ.get("IJM_STATE_DIR", "/var/lib/islandora-job-molecule"))
SUBNET = ipaddress.IPv4Network(os.environ.get("IJM_SUBNET", "198.18.2.0/24"))
MIRROR = os.environ.get("IJM_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("IJM_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
# A cached image older than this is rebuilt (fresh packages and lists, like a recently installed server).
IMAGE_MAX_AGE_DAYS = float(os.environ.get("IJM_IMAGE_MAX_AGE_DAYS", "30"))

# The range reserved for benchmarking (RFC 2544): test hosts and their traffic never leave it.
TEST_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
BRIDGE = "ijm-br0"
PREFIX = "ijm"  # netns ijm-<name>, veths ijmv<n> / ijmp<n>
COMMENT = "islandora-job-molecule"  # on every iptables rule of the harness: how down finds them
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = "bookworm"
# The first host number given to a platform without an address (198.18.2.11, .12, ... in 198.18.2.0/24).
FIRST_HOST = 11


def instances_dir() -> Path:
    """Per-run state: one directory per host (overlay layers, console log, nspawn pid)."""
    return STATE / "instances"


def lock_path() -> Path:
    """Held while hosts are created or removed, so two harness commands never interleave."""
    return STATE / "lock"
