"""Reproducible releases (issue 9): the worker's third-party wheels come from requirements/worker.lock by hash,
two wheelhouse builds from one lock are the same, our wheel is byte-identical, and the target installs with
hashes required (a file changed in transit is refused). Needs PyPI (pygearman, prometheus-client: two
small wheels, fetched once per build)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

from tests.ansible.helpers import REPO, ROLES, run

BUILDER = ROLES / "islandora_job_worker" / "files" / "build_wheelhouse.py"
LOCK = REPO / "requirements" / "worker.lock"
# The Python of each supported platform (Debian 12, Debian 13): the lock must hold for both.
TARGETS = ["3.11", "3.13"]


def build(cache: Path, python: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        str(BUILDER),
        "--python-version",
        python,
        "--cache",
        str(cache),
        "--source",
        str(REPO),
        "--lock",
        str(LOCK),
        *extra,
    ]
    return run(argv, timeout=300)


def manifest(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_entries() -> dict[str, tuple[str, set[str]]]:
    text = LOCK.read_text().replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            spec = re.sub(r"--hash=\S+", "", line).split(";")[0].strip()
            name, version = spec.split("==")
            entries[name.lower().replace("_", "-")] = (version, set(re.findall(r"sha256:([0-9a-f]{64})", line)))
    return entries


def test_lock_covers_the_runtime_dependencies_for_every_target_python() -> None:
    assert f"# python: {' '.join(TARGETS)}" in LOCK.read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entries = lock_entries()
    for spec in [*project["dependencies"], *project["optional-dependencies"]["metrics"]]:
        req = Requirement(spec)
        needed = any(req.marker is None or req.marker.evaluate({"python_version": v}) for v in TARGETS)
        if not needed:  # tomli: below 3.11 only
            assert req.name.lower() not in entries
            continue
        version, hashes = entries[req.name.lower()]
        assert req.specifier.contains(version), (spec, version)
        assert hashes, spec


def test_the_build_backend_of_our_wheel_is_pinned() -> None:
    """Our wheel is built in pip's isolated build environment: an unpinned setuptools would be whatever PyPI
    has that day, and a new one could change the wheel with no change of ours."""
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires, "pyproject.toml: build-system.requires is empty"
    for spec in requires:
        specifiers = list(Requirement(spec).specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"pyproject.toml: {spec!r} is not pinned"


def test_two_builds_from_one_lock_are_identical(tmp_path: Path) -> None:
    python = "3.13"  # not the controller's 3.11: built for the target's version
    first = manifest(build(tmp_path / "a", python, "--extra", "metrics"))
    second = manifest(build(tmp_path / "b", python, "--extra", "metrics"))
    one, two = Path(str(first["wheelhouse"])), Path(str(second["wheelhouse"]))
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir())
    assert first["release"] == second["release"]
    for name in files:  # third-party wheels, our wheel (SOURCE_DATE_EPOCH) and requirements.txt, byte for byte
        assert sha256(one / name) == sha256(two / name), name
    entries = lock_entries()
    for wheel in one.glob("*.whl"):
        dist = wheel.name.split("-")[0].lower().replace("_", "-")
        if dist == "islandora-job":
            with zipfile.ZipFile(wheel) as archive:
                assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
            continue
        assert sha256(wheel) in entries[dist][1], f"{wheel.name}: not the locked file"


def test_target_installs_with_hashes_required_and_refuses_a_changed_file(tmp_path: Path) -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    built = manifest(build(tmp_path / "cache", python))
    # Without the metrics extra, prometheus-client stays out although the lock pins it.
    assert not [w for w in built["wheels"] if str(w).startswith("prometheus")], built  # type: ignore[union-attr]
    house = Path(str(built["wheelhouse"]))
    requirements = (house / "requirements.txt").read_text()
    assert all("--hash=sha256:" in line for line in requirements.splitlines()), requirements
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = [
        str(venv / "bin" / "pip"),
        "install",
        "--no-index",
        "--disable-pip-version-check",
        "--require-hashes",
        "--find-links",
        str(house),
        "--requirement",
        str(house / "requirements.txt"),
    ]
    installed = run(pip, timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:]
    assert run([str(venv / "bin" / "islandora-job"), "--version"]).returncode == 0

    # A wheel altered after the build (in transit, on disk) is refused by its hash.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in house.iterdir():
        data = path.read_bytes()
        (tampered / path.name).write_bytes(data + b"\0" if path.name.startswith("pygearman") else data)
    venv2 = tmp_path / "venv2"
    assert run([sys.executable, "-m", "venv", str(venv2)]).returncode == 0
    refused = run(
        [
            str(venv2 / "bin" / "pip"),
            *pip[1:-4],
            "--find-links",
            str(tampered),
            "--requirement",
            str(tampered / "requirements.txt"),
        ],
        timeout=300,
    )
    assert refused.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stdout, refused.stdout[
        -2000:
    ]


def test_a_dependency_no_lock_pins_is_refused_by_name(tmp_path: Path) -> None:
    package = tmp_path / "site_jobs"
    (package / "site_jobs").mkdir(parents=True)
    (package / "site_jobs" / "__init__.py").write_text("")
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "site-jobs"\nversion = "1.0"\ndependencies = ["islandora-job", "six>=1.16"]\n'
    )
    result = build(tmp_path / "cache", "3.11", "--source", str(package))
    assert result.returncode == 1
    assert "six>=1.16 (needed by the job packages) is not in" in result.stdout and "lock" in result.stdout
    assert "Traceback" not in result.stdout

    # The documented command makes the site's lock; with it the build passes and ships six by its hash.
    site_lock = tmp_path / "site.lock"
    made = run(
        [sys.executable, str(BUILDER), "lock", "--output", str(site_lock), "--job-package", str(package)], timeout=300
    )
    assert made.returncode == 0, made.stdout[-3000:]
    text = site_lock.read_text()
    assert re.search(r"^six==[\d.]+ \\$", text, re.MULTILINE) and "pygearman" not in text, text
    house = manifest(build(tmp_path / "cache", "3.11", "--source", str(package), "--lock", str(site_lock)))
    assert any(str(w).startswith("six-") for w in house["wheels"]), house  # type: ignore[union-attr]


def test_a_target_python_the_lock_was_not_made_for_is_refused(tmp_path: Path) -> None:
    result = build(tmp_path / "cache", "3.12")
    assert result.returncode == 1
    assert "made for Python 3.11, 3.13, the target runs 3.12" in result.stdout, result.stdout[-2000:]


def test_cached_only_reports_an_earlier_build_and_builds_nothing(tmp_path: Path) -> None:
    """--cached (the role's check mode): the release of a build made earlier for the same sources, or "" when
    there is none; it builds nothing and writes nothing, not even the cache directory."""
    cache = tmp_path / "cache"
    missed = manifest(build(cache, "3.11", "--cached"))
    assert missed["release"] == "" and missed["changed"] is True
    assert not cache.exists()
    built = manifest(build(cache, "3.11"))
    listing = sorted(cache.rglob("*"))
    found = manifest(build(cache, "3.11", "--cached"))
    assert found["release"] == built["release"] and found["wheelhouse"] == built["wheelhouse"]
    assert found["changed"] is False
    assert sorted(cache.rglob("*")) == listing
