"""The molecule scenarios as molecule sees them: the base config (.config/molecule/config.yml) deep-merged under
each molecule/*/molecule.yml, with molecule's own merge. Every scenario gets the harness's driver and playbooks,
and no scenario repeats a setting the base already gives (a copy would drift from the base unnoticed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from molecule.util import merge_dicts

REPO = Path(__file__).parents[2]
BASE = REPO / ".config" / "molecule" / "config.yml"
SCENARIOS = sorted(p.parent for p in (REPO / "molecule").glob("*/molecule.yml"))


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def repeated(base: object, own: object, path: str = "") -> list[str]:
    """Keys of own whose value equals the base's at the same place (what the scenario need not say)."""
    if isinstance(base, dict) and isinstance(own, dict):
        return [p for k in own if k in base for p in repeated(base[k], own[k], f"{path}.{k}")]
    return [path] if base == own else []


def test_scenarios_found() -> None:
    assert {p.name for p in SCENARIOS} >= {"default", "cluster", "harness", "fresh-host", "mysql", "postgres"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_scenario_holds_only_its_own_settings(scenario: Path) -> None:
    own = load(scenario / "molecule.yml")
    assert repeated(load(BASE), own) == []
    assert own.get("platforms"), "a scenario names its own hosts"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_merged_scenario_runs_on_the_harness(scenario: Path) -> None:
    merged = merge_dicts(load(BASE), load(scenario / "molecule.yml"))
    assert merged["driver"] == {"name": "default", "options": {"managed": True}}
    playbooks = merged["ansible"]["playbooks"]
    for step in ("create", "destroy"):
        assert (scenario / playbooks[step]).resolve().is_file(), (step, playbooks[step])
    assert (scenario / playbooks["destroy"]).resolve() == REPO / "molecule" / "shared" / "destroy.yml"
    sequence = merged["scenario"]["test_sequence"]
    # Destroy before create (leftovers of a killed run) and at the end; converge and verify always run.
    assert sequence.index("destroy") < sequence.index("create") < sequence.index("converge") < sequence.index("verify")
    assert sequence[-1] == "destroy"
    if "prepare" in sequence:
        assert (scenario / "prepare.yml").is_file(), "a prepare step needs a prepare playbook"
