#!/usr/bin/env python3
"""Build, or reuse, a wheelhouse for islandora-job on the Ansible controller; or make its lock.

Run by the islandora_job_worker role (delegated to localhost) once per target Python version, so that
target hosts install without any package index. Prints one JSON object on stdout:

  {"changed": bool, "release": "0.1.0-1a2b3c4d5e", "wheelhouse": DIR, "requirements": "requirements.txt", ...}

- Local sources (--source, the project and the site's job packages) are built with `pip wheel --no-deps`
  and SOURCE_DATE_EPOCH fixed, so one source tree gives the same wheel bytes on every build.
- Third-party wheels come only from the locks (--lock: requirements/worker.lock of the project, and the
  site's lock for its job packages): pinned versions, fetched with `pip download --require-hashes` for the
  *target* Python version. A dependency that no lock pins is an error naming it and the command to lock it.
- The wheelhouse holds requirements.txt naming every wheel with its sha256; the target installs it with
  `pip install --no-index --require-hashes`.
- The release name is the main package's version plus a digest of the wheels' contents (RECORD and
  timestamps excluded) and of the third-party files: any change gives a new release, an unchanged tree the same.
- A digest of the source trees and locks is the build cache key: an unchanged tree costs no build at all, and
  each local wheel is kept by the digest of its own tree. `--cached` only looks the key up (the role's check
  mode: no build, nothing written); release "" means nothing was built for these sources yet.

`build_wheelhouse.py lock --output FILE [--job-package DIR_OR_SPEC ...]` makes a lock (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

try:
    from packaging.markers import Marker, default_environment
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.markers import Marker, default_environment  # type: ignore[assignment]
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # type: ignore[assignment]

T = TypeVar("T")
# The project this script belongs to (roles/islandora_job_worker/files/ -> the repository or collection root).
PROJECT = Path(__file__).resolve().parents[3]
PROJECT_LOCK = "requirements/worker.lock"
# Python of each supported target: Debian 12 (3.11), Debian 13 (3.13). A lock is valid for these.
TARGET_PYTHONS = ("3.11", "3.13")
LOCK_COMMAND = "python3 roles/islandora_job_worker/files/build_wheelhouse.py lock --output FILE"
# Zip timestamps of our own wheels (1980-01-01, the earliest a zip can hold), unless the caller sets one.
SOURCE_DATE_EPOCH = "315532800"
REQUIREMENTS = "requirements.txt"
# Bumped when the wheelhouse layout changes, so that cached builds of an older layout are not reused.
FORMAT = 2

# Never part of a wheel; skipped when digesting and copying a source tree.
SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".tox",
    ".nox",
    ".ansible",
    ".cache",
    "node_modules",
    ".molecule",
    # molecule/run-scenarios' logs, written while a scenario converges (the check run must find the same build).
    ".molecule-logs",
}


# Also left out of the cache key (not of the build): a project's tests, docs and deployment files
# never go into its wheel, and editing them must not cost a rebuild.
NOT_IN_WHEEL = {
    "tests",
    "test",
    "docs",
    "doc",
    "molecule",
    "roles",
    "inventory",
    "playbooks",
    "benchmarks",
    "changelogs",
    "meta",
    "scripts",
    ".ci",
    ".config",
    ".github",
    "examples",
}


def skipped(name: str) -> bool:
    return name in SKIP_DIRS or name.endswith(".egg-info")


def tree_digest(root: Path, nested_sources: list[Path]) -> str:
    """Digest of the files of a source tree (paths and contents), skipping caches and other sources."""
    digest = hashlib.sha256()
    nested = {p.resolve() for p in nested_sources}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not skipped(d) and not (here == root and d in NOT_IN_WHEEL) and (here / d).resolve() not in nested
        )
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo", ".whl")):
                continue
            path = here / name
            if not path.is_file():
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def clean_copy(src: Path, dest: Path, nested_sources: list[Path]) -> None:
    """Copy a source tree without build leftovers: setuptools reuses build/lib, and a module deleted
    from the sources would otherwise still ship in the wheel."""
    nested = {p.resolve() for p in nested_sources}

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        return {n for n in names if skipped(n) or n.endswith((".pyc", ".whl")) or (here / n).resolve() in nested}

    shutil.copytree(src, dest, ignore=ignore, symlinks=True)


def wheel_digest(wheel: Path) -> str:
    """Digest of a wheel's members (names and bytes), independent of zip timestamps and RECORD."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith(".dist-info/RECORD"):
                continue
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def normalize(name: str) -> str:
    """PEP 503 name: what pip compares."""
    return re.sub(r"[-_.]+", "-", name).lower()


def target_env(python_version: str) -> dict[str, str]:
    """Marker environment of the target: the controller's platform, the target's Python version."""
    env = {str(k): str(v) for k, v in default_environment().items()}
    env.update(
        python_version=python_version,
        python_full_version=f"{python_version}.0",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return env


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode("utf-8")


def metadata_field(text: str, field: str) -> list[str]:
    prefix = f"{field}: "
    return [line[len(prefix) :].strip() for line in text.splitlines() if line.startswith(prefix)]


def applies(req: Requirement, env: dict[str, str], extras: Iterable[str]) -> bool:
    """Whether a Requires-Dist entry holds on the target, for the extras asked of its package."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in [*extras, ""])


def requirements_for_target(wheels: list[Path], extras: list[str], python_version: str) -> list[Requirement]:
    """Requires-Dist of the local wheels whose markers hold on the target Python (minus the local wheels).

    pip does not evaluate environment markers for --python-version (it uses the running interpreter), so
    conditional dependencies (tomli for Python < 3.11) are resolved here.
    """
    texts = [wheel_metadata(w) for w in wheels]
    local_names = {normalize(metadata_field(t, "Name")[0]) for t in texts}
    env = target_env(python_version)
    result: dict[str, Requirement] = {}
    for index, text in enumerate(texts):
        for line in metadata_field(text, "Requires-Dist"):
            req = Requirement(line)
            if normalize(req.name) in local_names or not applies(req, env, extras if index == 0 else []):
                continue
            req.marker = None
            result[str(req)] = req
    return [result[k] for k in sorted(result)]


# --- The lock: requirements with --hash, one file for every target Python --------------------------------


@dataclass
class LockEntry:
    name: str
    version: str
    marker: str
    hashes: list[str]
    lock: Path


def read_lock(path: Path) -> tuple[list[str], dict[str, list[LockEntry]]]:
    """The Python versions a lock was made for (its "# python:" line) and its pinned entries."""
    if not path.is_file():
        raise SystemExit(f"{path}: lock file not found (make it with: {LOCK_COMMAND})")
    pythons: list[str] = []
    entries: dict[str, list[LockEntry]] = {}
    logical = ""
    for number, raw in enumerate([*path.read_text().splitlines(), ""], 1):
        if raw.startswith("# python:"):
            pythons = raw.split(":", 1)[1].split()
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            logical += " " + line[:-1]
            continue
        logical += " " + line
        logical, text = "", logical.strip()
        if not text:
            continue
        hashes = re.findall(r"--hash[= ](sha256:[0-9a-f]{64})", text)
        spec = re.sub(r"--hash[= ]\S+", "", text).strip()
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise SystemExit(f"{path}:{number}: not a requirement: {spec!r} ({exc})") from None
        pins = [s for s in req.specifier if s.operator == "=="]
        if not hashes or len(pins) != 1 or len(req.specifier) != 1:
            raise SystemExit(
                f"{path}:{number}: {spec!r}: a lock entry needs exactly one ==version and --hash=sha256:..."
            )
        entry = LockEntry(req.name, pins[0].version, str(req.marker or ""), hashes, path)
        entries.setdefault(normalize(req.name), []).append(entry)
    if not pythons:
        raise SystemExit(f"{path}: no '# python: X.Y ...' line: not made by this script ({LOCK_COMMAND})")
    return pythons, entries


def locked_for_target(locks: list[Path], python_version: str) -> dict[str, LockEntry]:
    """One entry per package for the target Python, from every lock; refuse a lock not made for it."""
    chosen: dict[str, LockEntry] = {}
    env = target_env(python_version)
    for path in locks:
        pythons, entries = read_lock(path)
        if python_version not in pythons:
            raise SystemExit(
                f"{path}: made for Python {', '.join(pythons)}, the target runs {python_version}: "
                f"remake it with --python-version {python_version} added ({LOCK_COMMAND})"
            )
        for name, candidates in entries.items():
            for entry in candidates:
                if entry.marker and not Marker(entry.marker).evaluate(env):
                    continue
                other = chosen.get(name)
                if other is not None and other.version != entry.version:
                    raise SystemExit(
                        f"{name} is pinned twice for Python {python_version}: {other.version} in {other.lock}, "
                        f"{entry.version} in {entry.lock}"
                    )
                chosen[name] = entry
    return chosen


def closure(
    wanted: list[Requirement],
    locked: dict[str, T],
    local_names: set[str],
    python_version: str,
    requires: Callable[[T], list[str]],
    version: Callable[[T], str],
    where: str,
) -> list[str]:
    """Names of every third-party package the wanted requirements need on the target, each checked against
    what is locked (present, version in range); extras of a dependency are followed."""
    env = target_env(python_version)
    todo = [(req, "the job packages") for req in wanted]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: list[str] = []
    while todo:
        req, parent = todo.pop()
        name = normalize(req.name)
        if name in local_names or (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        item = locked.get(name)
        if item is None:
            raise SystemExit(
                f"{req} (needed by {parent}) is not in {where} for Python {python_version}: add it with {LOCK_COMMAND}"
            )
        if not req.specifier.contains(version(item), prereleases=True):
            raise SystemExit(
                f"{req} (needed by {parent}) does not match {name}=={version(item)} in {where}: "
                f"remake the lock ({LOCK_COMMAND})"
            )
        if name not in names:
            names.append(name)
        for line in requires(item):
            dep = Requirement(line)
            if applies(dep, env, req.extras):
                todo.append((dep, f"{name}=={version(item)}"))
    return sorted(names)


def file_hash(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# pip of the Python running this script, quiet about its own version, never asking a question.
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def pip(command: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a pip command; on failure, its output (pip masks passwords in URLs) without the command line, which
    may carry --pip-arg values."""
    proc = subprocess.run(
        [*PIP, command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        sys.stderr.write(f"pip {command} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n")
        raise SystemExit(1)
    return proc.stdout


def reproducible_env() -> dict[str, str]:
    """Wheel builds with fixed zip timestamps (the wheel package honours SOURCE_DATE_EPOCH): one source
    tree gives one wheel, byte for byte, on every controller with the same build backend."""
    return {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)}


def build_local(
    sources: list[Path],
    into: Path,
    tmp: Path,
    pip_args: list[str],
    cache: Path | None = None,
) -> list[Path]:
    """Wheels of the local projects (islandora-job first, then the job packages), built reproducibly; a wheel is
    reused from cache/local/<digest of its source tree> when that tree did not change (a job package edit does not
    rebuild islandora-job)."""
    wheels: list[Path] = []
    into.mkdir(parents=True, exist_ok=True)
    for index, src in enumerate(sources):
        others = [s for s in sources if s != src]
        kept = cache / "local" / tree_digest(src, others)[:24] if cache else None
        if kept is not None and len(list(kept.glob("*.whl"))) == 1:
            [wheel] = kept.glob("*.whl")
            wheels.append(Path(shutil.copy2(wheel, into / wheel.name)))
            continue
        before = set(into.glob("*.whl"))
        copy = tmp / f"src{index}"
        clean_copy(src, copy, others)
        pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(into), *pip_args, str(copy), env=reproducible_env())
        built = sorted(set(into.glob("*.whl")) - before)
        if len(built) != 1:
            raise SystemExit(f"{src}: expected one wheel, got {[b.name for b in built]}")
        if kept is not None:
            staging = tmp / f"kept{index}"
            staging.mkdir()
            shutil.copy2(built[0], staging / built[0].name)
            kept.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # built at the same time by another run: same content
                staging.rename(kept)
        wheels.append(built[0])
    return wheels


def check_sources(sources: list[Path]) -> None:
    for src in sources:
        if not (src / "pyproject.toml").is_file() and not (src / "setup.py").is_file():
            raise SystemExit(f"{src}: not a Python project (no pyproject.toml or setup.py)")


def build(args: argparse.Namespace) -> int:
    sources = [Path(s).resolve() for s in args.source]
    check_sources(sources)
    locks = [Path(p).expanduser().resolve() for p in args.lock]
    if not locks:
        raise SystemExit(f"no --lock given: third-party wheels come only from a lock ({LOCK_COMMAND})")
    locked = locked_for_target(locks, args.python_version)
    cache = Path(args.cache).expanduser().resolve()

    key = hashlib.sha256()
    key.update(json.dumps([FORMAT, args.python_version, sorted(args.extra), args.requirement, args.pip_arg]).encode())
    for src in sources:
        key.update(str(src).encode() + b"\0" + tree_digest(src, [s for s in sources if s != src]).encode())
    for path in locks:
        key.update(path.read_bytes())
    manifest_path = cache / "builds" / key.hexdigest()[:24] / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if Path(manifest["wheelhouse"]).is_dir():
            manifest["changed"] = False
            print(json.dumps(manifest))
            return 0
    if args.cached:
        # Nothing built for these sources yet: the release it would make is unknown until it is built.
        print(json.dumps({"release": "", "wheelhouse": "", "requirements": REQUIREMENTS, "changed": True}))
        return 0

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        local_wheels = build_local(sources, tmp / "local", tmp, args.pip_arg, cache)
        local_names = {normalize(metadata_field(wheel_metadata(w), "Name")[0]) for w in local_wheels}
        wanted = [
            *requirements_for_target(local_wheels, args.extra, args.python_version),
            *(Requirement(r) for r in args.requirement),
        ]
        deps_dir = tmp / "deps"
        deps_dir.mkdir()
        # Everything the locks pin for this Python, hashes checked by pip; then only what is needed is kept.
        pinned = tmp / "pinned.txt"
        pinned.write_text(
            "".join(f"{e.name}=={e.version} {' '.join('--hash=' + h for h in e.hashes)}\n" for e in locked.values())
        )
        if locked:
            pip(
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--only-binary=:all:",
                "--python-version",
                args.python_version,
                "--dest",
                str(deps_dir),
                *args.pip_arg,
                "-r",
                str(pinned),
            )
        downloaded = {normalize(w.name.split("-")[0]): w for w in deps_dir.glob("*.whl")}
        needed = closure(
            wanted,
            {n: downloaded[n] for n in locked if n in downloaded},
            local_names,
            args.python_version,
            requires=lambda w: metadata_field(wheel_metadata(w), "Requires-Dist"),
            version=lambda w: metadata_field(wheel_metadata(w), "Version")[0],
            where=" + ".join(str(p) for p in locks),
        )
        dep_wheels = [downloaded[n] for n in needed]

        release_digest = hashlib.sha256()
        for wheel in local_wheels:
            release_digest.update(wheel.name.encode() + b"\0" + wheel_digest(wheel).encode())
        for wheel in dep_wheels:
            release_digest.update(wheel.name.encode() + b"\0" + file_hash(wheel).encode())
        version = metadata_field(wheel_metadata(local_wheels[0]), "Version")[0]
        release = f"{version}-{release_digest.hexdigest()[:10]}"

        # What the target installs, every file by its hash (pip --require-hashes).
        extras = f"[{','.join(sorted(args.extra))}]" if args.extra else ""
        lines = []
        for index, wheel in enumerate([*local_wheels, *dep_wheels]):
            meta = wheel_metadata(wheel)
            name, wheel_version = metadata_field(meta, "Name")[0], metadata_field(meta, "Version")[0]
            lines.append(f"{name}{extras if index == 0 else ''}=={wheel_version} --hash={file_hash(wheel)}\n")

        wheelhouse = cache / "wheelhouses" / f"{release}-py{args.python_version}"
        changed = not wheelhouse.is_dir()
        if changed:
            staging = tmp / "wheelhouse"
            staging.mkdir()
            for wheel in [*local_wheels, *dep_wheels]:
                shutil.copy2(wheel, staging / wheel.name)
            (staging / REQUIREMENTS).write_text("".join(lines))
            wheelhouse.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(wheelhouse)
            except OSError:  # built at the same time for another host: same content
                if not wheelhouse.is_dir():
                    raise

    manifest = {
        "release": release,
        "version": version,
        "python_version": args.python_version,
        "wheelhouse": str(wheelhouse),
        "wheels": sorted(p.name for p in wheelhouse.glob("*.whl")),
        "requirements": REQUIREMENTS,
    }
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest_path.with_name(f".manifest.{os.getpid()}")
    partial.write_text(json.dumps(manifest))
    partial.replace(manifest_path)
    manifest["changed"] = changed
    print(json.dumps(manifest))
    return 0


def make_lock(args: argparse.Namespace) -> int:
    """Resolve the dependencies of islandora-job (and of a site's job packages) for every target Python and
    write them pinned, with the sha256 of every wheel file a target may pick."""
    project = Path(args.project).resolve()
    packages: list[str] = list(args.job_package)
    local = [Path(p).expanduser().resolve() for p in packages if p.startswith(("/", ".", "~"))]
    index_reqs = [Requirement(p) for p in packages if not p.startswith(("/", ".", "~"))]
    sources = [project, *local]
    check_sources(sources)
    base = Path(args.base_lock).resolve() if args.base_lock else None
    if base is None and packages:
        base = project / PROJECT_LOCK
    pythons = args.python_version or list(TARGET_PYTHONS)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wheels = build_local(sources, tmp / "local", tmp, args.pip_arg)
        local_names = {normalize(metadata_field(wheel_metadata(w), "Name")[0]) for w in wheels}
        for python in pythons:
            base_pins = locked_for_target([base], python) if base else {}
            constraints = tmp / f"constraints-{python}.txt"
            constraints.write_text("".join(f"{e.name}=={e.version}\n" for e in base_pins.values()))
            wanted = [*requirements_for_target(wheels, args.extra, python), *index_reqs]
            if not wanted:
                continue
            report = tmp / f"report-{python}.json"
            pip(
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--only-binary=:all:",
                "--python-version",
                python,
                "--report",
                str(report),
                "-c",
                str(constraints),
                *args.pip_arg,
                *(str(r) for r in wanted),
            )
            items = {normalize(i["metadata"]["name"]): i for i in json.loads(report.read_text())["install"]}
            needed = closure(
                wanted,
                items,
                local_names,
                python,
                requires=lambda i: i["metadata"].get("requires_dist", []),
                version=lambda i: i["metadata"]["version"],
                where=f"pip's resolution (run this command with Python {python}: markers differ)",
            )
            for name in needed:
                if name in base_pins:
                    continue
                item = items[name]
                digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
                if not digest:
                    raise SystemExit(f"{name}: the index gave no sha256 for {item['download_info'].get('url')}")
                entry = found.setdefault(
                    (item["metadata"]["name"], item["metadata"]["version"]), {"hashes": set(), "pythons": set()}
                )
                entry["hashes"].add(f"sha256:{digest}")
                entry["pythons"].add(python)
    out = [
        "# Pinned third-party wheels, with their sha256, for the islandora-job worker"
        + (" (a site's job packages)" if packages else "")
        + ".",
        "# Made by (do not edit by hand):",
        f"#   {LOCK_COMMAND.replace('FILE', args.output)}" + "".join(f" --job-package {p}" for p in packages),
        f"# python: {' '.join(pythons)}",
    ]
    if base:
        out.append(f"# on top of: {base.name}")
    for (name, version), entry in sorted(found.items(), key=lambda kv: (normalize(kv[0][0]), kv[0][1])):
        marker = (
            ""
            if entry["pythons"] == set(pythons)
            else " ; " + " or ".join(f'python_version == "{p}"' for p in sorted(entry["pythons"]))
        )
        out.append(f"{name}=={version}{marker} \\")
        hashes = sorted(entry["hashes"])
        out.extend(f"    --hash={h}" + (" \\" if i < len(hashes) - 1 else "") for i, h in enumerate(hashes))
    output = Path(args.output)
    partial = output.with_name(f".{output.name}.{os.getpid()}")
    partial.write_text("\n".join(out) + "\n")
    partial.replace(output)
    print(f"{output}: {len(found)} packages for Python {', '.join(pythons)}")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["lock"]:
        parser = argparse.ArgumentParser(prog="build_wheelhouse.py lock", description=make_lock.__doc__)
        parser.add_argument("--output", required=True, help="the lock file to write")
        parser.add_argument("--project", default=str(PROJECT), help="the islandora-job project (default: %(default)s)")
        parser.add_argument(
            "--job-package",
            action="append",
            default=[],
            help="a site's job package: a directory, or a requirement spec (as in the role variable)",
        )
        parser.add_argument(
            "--base-lock", help=f"pins the site lock builds on (default with job packages: {PROJECT_LOCK})"
        )
        parser.add_argument("--extra", action="append", default=["metrics"], help="extras of islandora-job to lock")
        parser.add_argument(
            "--python-version",
            action="append",
            default=[],
            help=f"a target Python (default: {' '.join(TARGET_PYTHONS)})",
        )
        parser.add_argument(
            "--pip-arg",
            action="append",
            default=[],
            help="extra pip argument (on the command line: keep credentials in a PIP_CONFIG_FILE instead)",
        )
        return make_lock(parser.parse_args(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", default=[], help="a local project to build (first: islandora-job)")
    parser.add_argument("--requirement", action="append", default=[], help="a package from the index (name, spec)")
    parser.add_argument("--lock", action="append", default=[], help="a lock file of pinned, hashed wheels")
    parser.add_argument("--extra", action="append", default=[], help="an extra of the first source, e.g. metrics")
    parser.add_argument("--python-version", required=True, help="target Python, e.g. 3.11")
    parser.add_argument("--cache", required=True, help="directory for builds and wheelhouses")
    parser.add_argument(
        "--cached",
        action="store_true",
        help='only report a build of these sources made earlier (release "" if none); build and write nothing '
        "(the role's check mode)",
    )
    parser.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        help="extra pip argument (on the command line: keep credentials in a PIP_CONFIG_FILE instead)",
    )
    return build(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
