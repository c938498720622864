#!/usr/bin/env python3
"""Build, or reuse, a wheelhouse for islandora-job on the Ansible controller.

Run by the islandora_job_worker role (delegated to localhost) once per target Python version, so that
target hosts install without any package index. Prints one JSON object on stdout:

  {"changed": bool, "release": "0.1.0-1a2b3c4d5e", "wheelhouse": DIR, "install": [FILE, ...], ...}

- Local sources (--source, the repository and job packages) are built with `pip wheel --no-deps`;
  their dependencies are downloaded as wheels for the *target* Python version (`pip download
  --python-version X.Y --only-binary=:all:`), so environment markers resolve as on the target.
- The release name is the main package's version plus a digest of the wheels' contents (RECORD and
  build timestamps excluded): any code change gives a new release (the role installs it side by side
  and restarts), an unchanged tree gives the same release (nothing to do on the hosts).
- A digest of the source trees is the build cache key, so an unchanged tree costs no build at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Never part of a wheel; skipped when digesting and copying a source tree.
SKIP_DIRS = {
    ".git", ".venv", "venv", "build", "dist", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".hypothesis", ".tox", ".nox", ".ansible", ".cache", "node_modules", ".molecule",
}


# Also left out of the cache key (not of the build): a project's tests, docs and deployment files
# never go into its wheel, and editing them must not cost a rebuild.
NOT_IN_WHEEL = {
    "tests", "test", "docs", "doc", "molecule", "roles", "inventory", "playbooks", "benchmarks", "changelogs",
    "meta", "scripts", ".ci", ".github", "examples",
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
            if not skipped(d)
            and not (here == root and d in NOT_IN_WHEEL)
            and (here / d).resolve() not in nested
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
        return {
            n for n in names
            if skipped(n) or n.endswith((".pyc", ".whl")) or (here / n).resolve() in nested
        }

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


def requirements_for_target(wheels: list[Path], extras: list[str], python_version: str) -> list[str]:
    """Requires-Dist of the local wheels whose markers hold on the target Python.

    pip download --python-version does not evaluate environment markers for that version (it uses the
    running interpreter), so conditional dependencies (tomli for Python < 3.11) are resolved here.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    local_names = set()
    metadata = []
    for index, wheel in enumerate(wheels):
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(name).decode("utf-8")
        wanted_extras = extras if index == 0 else []
        metadata.append((text, wanted_extras))
        for line in text.splitlines():
            if line.startswith("Name: "):
                local_names.add(line[6:].strip().lower().replace("_", "-"))
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    result: list[str] = []
    for text, wanted_extras in metadata:
        for line in text.splitlines():
            if not line.startswith("Requires-Dist: "):
                continue
            req = Requirement(line[len("Requires-Dist: "):])
            if req.name.lower().replace("_", "-") in local_names:
                continue
            if req.marker is not None:
                candidates = [{**env, "extra": extra} for extra in wanted_extras] or [{**env, "extra": ""}]
                if not any(req.marker.evaluate(c) for c in candidates):
                    continue
            spec = f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"
            result.append(spec)
    return sorted(set(result))


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout[-4000:]}\n")
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", default=[], help="a local project to build (first: islandora-job)")
    parser.add_argument("--requirement", action="append", default=[], help="a package from the index (name, spec)")
    parser.add_argument("--extra", action="append", default=[], help="an extra of the first source, e.g. metrics")
    parser.add_argument("--python-version", required=True, help="target Python, e.g. 3.11")
    parser.add_argument("--cache", required=True, help="directory for builds and wheelhouses")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra pip argument (e.g. --index-url=URL)")
    args = parser.parse_args()

    sources = [Path(s).resolve() for s in args.source]
    for src in sources:
        if not (src / "pyproject.toml").is_file() and not (src / "setup.py").is_file():
            sys.stderr.write(f"{src}: not a Python project (no pyproject.toml or setup.py)\n")
            return 2
    cache = Path(args.cache).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)

    key = hashlib.sha256()
    key.update(json.dumps([args.python_version, sorted(args.extra), args.requirement, args.pip_arg]).encode())
    for src in sources:
        key.update(str(src).encode() + b"\0" + tree_digest(src, [s for s in sources if s != src]).encode())
    manifest_path = cache / "builds" / key.hexdigest()[:24] / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if Path(manifest["wheelhouse"]).is_dir():
            manifest["changed"] = False
            print(json.dumps(manifest))
            return 0

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        local_dir = Path(tmp) / "local"
        deps_dir = Path(tmp) / "deps"
        local_wheels: list[Path] = []
        for index, src in enumerate(sources):
            before = set(local_dir.glob("*.whl")) if local_dir.exists() else set()
            copy = Path(tmp) / f"src{index}"
            clean_copy(src, copy, [s for s in sources if s != src])
            run([*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(local_dir), *args.pip_arg, str(copy)])
            built = sorted(set(local_dir.glob("*.whl")) - before)
            if len(built) != 1:
                sys.stderr.write(f"{src}: expected one wheel, got {[b.name for b in built]}\n")
                return 1
            local_wheels.append(built[0])
        extras = f"[{','.join(sorted(args.extra))}]" if args.extra else ""
        wanted = [*requirements_for_target(local_wheels, args.extra, args.python_version), *args.requirement]
        deps_dir.mkdir()
        if wanted:
            run([
                *pip, "download", "--quiet", "--only-binary=:all:", "--python-version", args.python_version,
                "--dest", str(deps_dir), *args.pip_arg, *wanted,
            ])
        local_names = {w.name for w in local_wheels}
        dep_wheels = sorted(w for w in deps_dir.glob("*.whl") if w.name not in local_names)

        release_digest = hashlib.sha256()
        for wheel in local_wheels:
            release_digest.update(wheel.name.encode() + b"\0" + wheel_digest(wheel).encode())
        for wheel in dep_wheels:
            release_digest.update(wheel.name.encode() + b"\0")
        version = local_wheels[0].name.split("-")[1]
        release = f"{version}-{release_digest.hexdigest()[:10]}"

        wheelhouse = cache / "wheelhouses" / f"{release}-py{args.python_version}"
        changed = not wheelhouse.is_dir()
        if changed:
            staging = Path(tmp) / "wheelhouse"
            staging.mkdir()
            for wheel in [*local_wheels, *dep_wheels]:
                shutil.copy2(wheel, staging / wheel.name)
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
        "install": [f"{local_wheels[0].name}{extras}", *(w.name for w in local_wheels[1:]), *args.requirement],
    }
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest_path.with_name(f".manifest.{os.getpid()}")
    partial.write_text(json.dumps(manifest))
    partial.replace(manifest_path)
    manifest["changed"] = changed
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
