"""scripts/render_role_variables.py: docs/deploy.md's variable tables come from the roles' argument specs, and
`--check` (in `make check`) fails, naming the role, when the committed tables differ from them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "render_role_variables.py"

TINY_SPEC = """\
argument_specs:
  main:
    short_description: A tiny role
    options:
      tiny_port:
        type: int
        default: 4730
        description: TCP port.
      tiny_name:
        type: str
        default: ""
        description:
          - First sentence.
          - Second one, with a | in it.
      tiny_level:
        type: str
        default: "yes"
        choices: ["yes", "no"]
        description: A level.
      tiny_sapis:
        type: list
        elements: str
        default: [cli, fpm]
        choices: [cli, fpm, apache2]
        description: >-
          Folded
          text.
      tiny_on:
        type: bool
        default: false
        description: A flag.
      tiny_servers:
        type: list
        elements: str
        description: Computed by defaults/main.yml.
      tiny_jobs:
        type: list
        elements: dict
        default: []
        description: Jobs.
        options:
          name:
            type: str
            required: true
            description: Job name.
          timeout:
            type: int
            description: Seconds.
"""

TINY_TABLE = """\
| Variable | Default | Description |
|---|---|---|
| `tiny_port` | `4730` | TCP port. |
| `tiny_name` | `""` | First sentence. Second one, with a \\| in it. |
| `tiny_level` | `yes`<br>one of `yes`, `no` | A level. |
| `tiny_sapis` | `[cli, fpm]`<br>one of `cli`, `fpm`, `apache2` | Folded text. |
| `tiny_on` | `false` | A flag. |
| `tiny_servers` | (computed) | Computed by defaults/main.yml. |
| `tiny_jobs` | `[]` | Jobs. |
| `tiny_jobs[].name` | (required) | Job name. |
| `tiny_jobs[].timeout` | (unset) | Seconds. |
"""


@pytest.fixture(scope="module")
def render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_role_variables", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A roles directory with the tiny role, and a document with its (empty) marked table."""
    roles = tmp_path / "roles"
    (roles / "tiny" / "meta").mkdir(parents=True)
    (roles / "tiny" / "meta" / "argument_specs.yml").write_text(TINY_SPEC)
    doc = tmp_path / "deploy.md"
    doc.write_text(
        "# Doc\n\n### `tiny`\n\n<!-- BEGIN role-variables tiny -->\n<!-- END role-variables tiny -->\n\nEnd.\n"
    )
    return roles, doc


def test_renders_a_tiny_spec(render: ModuleType, tree: tuple[Path, Path]) -> None:
    roles, _ = tree
    options = render.load_options(roles / "tiny" / "meta" / "argument_specs.yml")
    assert render.render_table(options) == TINY_TABLE


def test_rewrites_then_check_passes(render: ModuleType, tree: tuple[Path, Path]) -> None:
    roles, doc = tree
    args = ["--doc", str(doc), "--roles", str(roles)]
    assert render.main([*args, "--check"]) == 1
    assert render.main(args) == 0
    text = doc.read_text()
    assert text.startswith("# Doc\n\n### `tiny`\n\n<!-- BEGIN role-variables tiny -->\n" + TINY_TABLE)
    assert text.endswith("<!-- END role-variables tiny -->\n\nEnd.\n")
    assert render.main([*args, "--check"]) == 0


def test_check_names_the_stale_role(
    render: ModuleType, tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    roles, doc = tree
    args = ["--doc", str(doc), "--roles", str(roles)]
    render.main(args)
    spec = roles / "tiny" / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("description: TCP port.", "description: TCP port of the server."))
    before = doc.read_text()
    capsys.readouterr()
    assert render.main([*args, "--check"]) == 1
    assert "variable table of tiny is stale" in capsys.readouterr().err
    assert doc.read_text() == before, "--check must not write"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda doc, roles: doc.write_text("# no markers\n"),
            "no <!-- BEGIN/END role-variables ROLE --> markers for tiny",
        ),
        (
            lambda doc, roles: (roles / "tiny" / "meta" / "argument_specs.yml").write_text(
                TINY_SPEC.replace("        description: TCP port.\n", "")
            ),
            "tiny_port: no description",
        ),
        (
            lambda doc, roles: (roles / "tiny" / "meta" / "argument_specs.yml").write_text("argument_specs: {}\n"),
            "no argument_specs.main.options",
        ),
        (
            lambda doc, roles: doc.write_text(
                doc.read_text() + "<!-- BEGIN role-variables gone -->\n<!-- END role-variables gone -->\n"
            ),
            "marker names role 'gone'",
        ),
    ],
    ids=["no-markers", "no-description", "no-options", "unknown-role"],
)
def test_bad_input_is_named_not_a_traceback(
    render: ModuleType,
    tree: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    change: Callable[[Path, Path], object],
    message: str,
) -> None:
    roles, doc = tree
    change(doc, roles)
    before = doc.read_text()
    assert render.main(["--doc", str(doc), "--roles", str(roles)]) == 2
    assert message in capsys.readouterr().err
    assert doc.read_text() == before


def test_committed_tables_are_current(render: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/deploy.md as committed matches the roles' argument specs (what `make check` runs)."""
    assert render.main(["--check"]) == 0, capsys.readouterr().err
