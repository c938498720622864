"""Build the queue mover the gearman_server role runs on a server host: one zip application (PEP 441).

It holds the project's own `islandora_job` package (the `queue move` command, not a copy of its logic) and
python-gearman, whose packet table the package's codec uses; both are pure Python, so the file runs with the
host's python3 and needs no package index, no venv and no compiler there. The zip is byte-for-byte the same for
the same sources (fixed timestamps, sorted entries), so copying it to a host changes nothing on a rerun.

Usage: build_queue_mover.py --source PROJECT_DIR --out FILE.pyz
The controller's Python (the one running Ansible) must be able to import `gearman` (pygearman).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import zipfile
from pathlib import Path

MAIN = b'''"""queue-mover: `islandora-job queue move` alone (built by the gearman_server role)."""
import argparse
import sys

from islandora_job.cli import queue

parser = argparse.ArgumentParser(prog="queue-mover")
queue.register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
args = parser.parse_args()
sys.exit(int(args.handler(args)))
'''
STAMP = (2020, 1, 1, 0, 0, 0)


def add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def package_files(root: Path, package: str) -> list[tuple[str, Path]]:
    top = root / package
    return sorted((str(path.relative_to(root)), path) for path in top.rglob("*.py") if "__pycache__" not in path.parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the project's directory (holds islandora_job/)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    source = Path(args.source)
    if not (source / "islandora_job" / "queue_move.py").is_file():
        print(f"{source}: no islandora_job/queue_move.py (gearman_server needs the project's source)", file=sys.stderr)
        return 2
    spec = importlib.util.find_spec("gearman")
    if spec is None or not spec.submodule_search_locations:
        print(
            f"{sys.executable} cannot import gearman: install pygearman in the Python that runs Ansible "
            "(the gearman_server role ships it to the server host to move queued jobs)",
            file=sys.stderr,
        )
        return 2
    gearman_root = Path(next(iter(spec.submodule_search_locations))).parent
    files = package_files(source, "islandora_job") + package_files(gearman_root, "gearman")
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".queue-mover-")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            add(zf, "__main__.py", MAIN)
            for name, path in files:
                add(zf, name, path.read_bytes())
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
