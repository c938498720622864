"""The molecule harness's platform options (molecule/shared/nspawn-hosts) that need no root: the spec's flags are
checked, and the pip cache a host is seeded with cannot be changed from inside the host.

The harness is a script (standard library only, run by the system python3): loaded from its path, with its cache and
state directories pointed at a temporary directory.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "molecule" / "shared" / "nspawn-hosts"


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("nspawn_hosts", str(SCRIPT))
    spec = importlib.util.spec_from_loader("nspawn_hosts", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    monkeypatch.setattr(module, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(module, "STATE", tmp_path / "state")
    return module


def test_flags_default_and_must_be_booleans(harness: ModuleType) -> None:
    [p] = harness.validate({"platforms": [{"name": "h1"}]})
    assert (p["egress"], p["policy_rc_d"], p["pip_cache"]) == (True, False, False)
    for flag in ("policy_rc_d", "pip_cache", "egress"):
        with pytest.raises(harness.HarnessError, match=f"platform h2: {flag} must be true or false"):
            harness.validate({"platforms": [{"name": "h2", flag: "yes"}]})


def test_pip_cache_seeded_as_links_and_new_entries_kept(harness: ModuleType, tmp_path: Path) -> None:
    kept = harness.pip_cache() / "http-v2" / "a" / "entry"
    kept.parent.mkdir(parents=True)
    kept.write_text("from an earlier run")
    instance = harness.instances_dir() / "h1"
    upper = instance / "upper"
    upper.mkdir(parents=True)
    (instance / "pip_cache").touch()

    harness.seed_pip_cache(upper)
    seeded = upper / "root/.cache/pip/http-v2/a/entry"
    assert seeded.stat().st_ino == kept.stat().st_ino
    assert oct((upper / "root").stat().st_mode & 0o777) == "0o700"

    # Inside the host pip replaces an entry by renaming a new file over it, and adds new ones.
    replacement = seeded.with_name("tmp")
    replacement.write_text("rewritten in the host")
    replacement.replace(seeded)
    (seeded.parent / "new").write_text("downloaded in the host")

    harness.harvest_pip_cache(instance)
    assert kept.read_text() == "from an earlier run"
    assert (kept.parent / "new").read_text() == "downloaded in the host"
    assert sorted(p.name for p in kept.parent.iterdir()) == ["entry", "new"]


def test_no_harvest_without_the_option(harness: ModuleType) -> None:
    instance = harness.instances_dir() / "h1"
    entry = instance / "upper/root/.cache/pip/wheels/x.whl"
    entry.parent.mkdir(parents=True)
    entry.write_text("a host without pip_cache")
    harness.harvest_pip_cache(instance)
    assert not harness.pip_cache().exists()
