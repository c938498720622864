"""The molecule harness's platform options (molecule/shared/nspawn-hosts) that need no root: the spec's flags have
their defaults and are checked, with the platform and the key named.

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
    assert (p["egress"], p["policy_rc_d"]) == (True, False)
    for flag in ("policy_rc_d", "egress"):
        with pytest.raises(harness.HarnessError, match=f"platform h2: {flag} must be true or false"):
            harness.validate({"platforms": [{"name": "h2", flag: "yes"}]})
