"""The package's layering: the client side (the flat modules) never imports the worker side (islandora_job.worker).

A client-only user (the ``islandora-job submit`` command, a script with JobClient) must not depend on the worker's
code, and the worker side builds on the client side's codec, connection and payload, not the other way round.
docs/architecture.md explains the layers. Read from the source with ``ast``, so an import inside a function or
under ``TYPE_CHECKING`` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import islandora_job

PACKAGE = Path(islandora_job.__file__).parent
WORKER = "islandora_job.worker"

#: Flat modules allowed to import the worker side, each with the reason.
ABOVE_THE_WORKER = {
    "islandora_job": "the job author's API (job, current_job, Fail, JobContext) is documented at the top",
    "islandora_job.child": "the former name of the worker process's entry point, for a supervisor of before the move",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module name that ``path`` imports."""
    name = module_name(path)
    return imports_of(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def imports_of(source: str, package: str) -> set[str]:
    """The modules a source in ``package`` imports, relative imports resolved; ``from p import m`` counts as p.m."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_worker_side(name: str) -> bool:
    return name == WORKER or name.startswith(WORKER + ".")


FLAT = sorted(PACKAGE.glob("*.py"))
WORKER_SIDE = sorted((PACKAGE / "worker").rglob("*.py"))


def test_the_package_has_both_sides() -> None:
    """The globs below find something: a moved package would make the other tests pass on nothing."""
    assert {"client.py", "codec.py", "connection.py", "payload.py"} <= {path.name for path in FLAT}
    assert {"process.py", "pool.py", "child.py", "router.py"} <= {path.name for path in WORKER_SIDE}
    assert set(ABOVE_THE_WORKER) <= {module_name(path) for path in FLAT}  # a gone entry must go too


@pytest.mark.parametrize(
    "path", [path for path in FLAT if module_name(path) not in ABOVE_THE_WORKER], ids=lambda path: path.name
)
def test_no_flat_module_imports_the_worker_side(path: Path) -> None:
    wrong = sorted(target for target in imported(path) if is_worker_side(target))
    assert not wrong, f"{path.relative_to(PACKAGE.parent)} (client side) imports the worker side: {', '.join(wrong)}"


@pytest.mark.parametrize("path", WORKER_SIDE, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_the_worker_side_does_not_import_the_command_line(path: Path) -> None:
    wrong = sorted(target for target in imported(path) if target.startswith("islandora_job.cli"))
    assert not wrong, f"{path.relative_to(PACKAGE.parent)} imports the command line: {', '.join(wrong)}"


#: The modules that hold protocol logic without I/O (docs/architecture.md, rule 2), and what they must not import.
NO_IO = ["codec.py", "worker/protocol.py", "worker/router.py"]
IO_MODULES = {"socket", "select", "selectors", "time", "threading", "subprocess", "asyncio"}


@pytest.mark.parametrize("name", NO_IO)
def test_the_protocol_logic_imports_no_io(name: str) -> None:
    wrong = sorted(imported(PACKAGE / name) & IO_MODULES)
    assert not wrong, f"islandora_job/{name} holds protocol logic without I/O, yet imports {', '.join(wrong)}"


def test_the_reader_sees_relative_nested_and_guarded_imports() -> None:
    """The import reader itself, so that the tests above cannot pass by reading nothing."""
    source = """
from typing import TYPE_CHECKING
from . import client
from .worker import pool
if TYPE_CHECKING:
    import islandora_job.worker.config
def late():
    from ..worker.router import Fail
"""
    found = imports_of(source, "islandora_job.cli")
    assert {
        "islandora_job.cli.client",
        "islandora_job.cli.worker.pool",
        "islandora_job.worker.config",
        "islandora_job.worker.router.Fail",
    } <= found
    assert sorted(name for name in imports_of(source, "islandora_job") if is_worker_side(name)) == [
        "islandora_job.worker",
        "islandora_job.worker.config",
        "islandora_job.worker.pool",
    ]
    assert "islandora_job.errors.ProtocolError" in imported(PACKAGE / "codec.py")
