"""One version for the package, the collection and the changelog: a release is named the same everywhere."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_the_package_the_collection_and_the_changelog_name_the_same_version() -> None:
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    collection = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    releases = list(yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())["releases"])
    assert package == collection, "pyproject.toml and galaxy.yml disagree on the version"
    assert releases[-1] == package, f"the newest changelog release is {releases[-1]}, the package {package}"
