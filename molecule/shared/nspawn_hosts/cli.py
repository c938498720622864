"""The command line of ``molecule/shared/nspawn-hosts`` (all subcommands need root):

  check [SUITE...]          prerequisites (root, systemd-nspawn, debootstrap, iptables, ssh-keygen, overlayfs,
                            a free address range); exit 2 with a message naming what is missing
  image [SUITE...] [--force]
                            build (once per machine) the cached Debian base image of SUITE (bookworm, trixie;
                            default bookworm)
  up SPEC.json              clean leftovers, then boot the hosts of SPEC.json; prints the instance config
                            molecule needs (JSON) on stdout
  down                      remove every host, network namespace, veth, the bridge, the NAT/forward rules,
                            the overlay mounts and the run's state, whatever state an earlier run left behind
  status                    what is up (for debugging)
  shell NAME [CMD...]       a command (default: a login shell) inside host NAME, through nsenter

SPEC.json: {"platforms": [{"name": "h1", "suite": "bookworm", "address": "198.18.2.11" or 11 (optional),
                           "egress": true (optional: false blocks every destination outside 198.18.0.0/15),
                           "policy_rc_d": false (optional: true gives the host a /usr/sbin/policy-rc.d that
                                                 denies every service start, as Docker-derived images ship)}]}

Only one harness run per machine at a time: `up` and `down` remove *every* host of this harness (they are all
named and marked as ours), which is what makes a rerun after a killed run work.
Exit status: 0 done, 2 a harness error (one message on stderr) or a usage error; `shell` exits with the command's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import settings
from .hosts import down, shell, status, up
from .image import image
from .prerequisites import check
from .system import HarnessError, locked, log


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="nspawn-hosts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("check", help="prerequisites")
    p.add_argument("suites", nargs="*", metavar="SUITE")
    p = sub.add_parser("image", help="build the cached base image")
    p.add_argument("suites", nargs="*", metavar="SUITE")
    p.add_argument("--force", action="store_true", help="rebuild even if the cached image is current")
    p = sub.add_parser("up", help="boot the hosts of SPEC.json")
    p.add_argument("spec", metavar="SPEC.json")
    sub.add_parser("down", help="remove everything of the harness")
    sub.add_parser("status", help="what is up")
    p = sub.add_parser("shell", help="a command inside a host")
    p.add_argument("name", metavar="NAME")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    return top


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        check(args.suites)
        print("prerequisites ok")
    elif args.command == "image":
        for suite in args.suites or [settings.DEFAULT_SUITE]:
            print(image(suite, force=args.force))
    elif args.command == "up":
        up(args.spec)
    elif args.command == "down":
        with locked(settings.lock_path()):
            down()
    elif args.command == "status":
        status()
    else:
        return shell(args.name, args.cmd)
    return 0


def main(argv: Sequence[str]) -> int:
    top = parser()
    if not argv:
        top.print_help()
        return 0
    args = top.parse_args(argv)
    try:
        return dispatch(args)
    except HarnessError as exc:
        log(str(exc))
        return 2
