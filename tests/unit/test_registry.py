"""The @job decorator and job discovery."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from islandora_job import job
from islandora_job.worker.registry import Registry, RegistryError, discover, entry_point_modules, jobs_of


@pytest.fixture
def fake_modules() -> Iterator[dict[str, types.ModuleType]]:
    created: dict[str, types.ModuleType] = {}

    yield created
    for name in created:
        sys.modules.pop(name, None)


def _module(created: dict[str, types.ModuleType], name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    created[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def test_the_decorator_returns_the_function_and_describes_it() -> None:
    def fn(a: int) -> int:
        return a + 1

    decorated = job("unit.inc", alias="inc", timeout=5, retries=2)(fn)
    assert decorated is fn and fn(1) == 2
    spec = fn.__islandora_job__  # type: ignore[attr-defined]
    assert (spec.name, spec.alias, spec.timeout, spec.retries, spec.payload) == ("unit.inc", "inc", 5.0, 2, "islandora")
    assert spec.functions() == ["inc"]
    assert spec.functions(["site1"]) == ["inc", "site1_inc"]
    assert "test_registry.py" in spec.where


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "a\0b"}, "NUL"),
        ({"name": " a"}, "surrounding spaces"),
        ({"name": "a", "timeout": 0}, "timeout must be a positive"),
        ({"name": "a", "payload": "json"}, "payload must be"),
        ({"name": "a", "retries": -1}, "retries must be"),
        ({"name": "a", "retries": True}, "retries must be"),
        ({"name": "a", "min_backoff": 5, "max_backoff": 1}, "min_backoff"),
    ],
)
def test_bad_declarations_are_refused_when_declared(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        job(**kwargs)  # type: ignore[arg-type]


def test_duplicate_names_name_both_places(fake_modules: dict[str, types.ModuleType]) -> None:
    src = "from islandora_job import job\n@job('unit.dup')\ndef {fn}():\n    pass\n"
    _module(fake_modules, "unit_jobs_a", src.format(fn="first"))
    _module(fake_modules, "unit_jobs_b", src.format(fn="second"))
    with pytest.raises(RegistryError) as error:
        discover(["unit_jobs_a", "unit_jobs_b"], use_entry_points=False)
    message = str(error.value)
    assert "job 'unit.dup' is declared twice" in message
    assert "unit_jobs_a.first" in message
    assert "unit_jobs_b.second" in message
    assert "module 'unit_jobs_a'" in message and "module 'unit_jobs_b'" in message


def test_a_function_served_twice_is_an_error(fake_modules: dict[str, types.ModuleType]) -> None:
    _module(
        fake_modules,
        "unit_jobs_c",
        "from islandora_job import job\n"
        "@job('unit.c1', alias='shared')\ndef c1():\n    pass\n"
        "@job('shared')\ndef c2():\n    pass\n",
    )
    with pytest.raises(RegistryError, match="Gearman function 'shared' is served by two jobs"):
        discover(["unit_jobs_c"], use_entry_points=False)


def test_the_same_module_twice_is_not_a_duplicate(fake_modules: dict[str, types.ModuleType]) -> None:
    _module(fake_modules, "unit_jobs_d", "from islandora_job import job\n@job('unit.d')\ndef d():\n    pass\n")
    registry = discover(["unit_jobs_d", "unit_jobs_d"], use_entry_points=False)
    assert [entry.spec.name for entry in registry] == ["unit.d"]


def test_reexported_jobs_belong_to_the_module_that_exports_them(fake_modules: dict[str, types.ModuleType]) -> None:
    _module(fake_modules, "unit_jobs_e", "from islandora_job import job\n@job('unit.e')\ndef e():\n    pass\n")
    package = _module(fake_modules, "unit_pkg", "from unit_jobs_e import e\n")
    assert [spec.name for spec in jobs_of(package)] == ["unit.e"]


def test_an_import_error_names_the_module_and_where_it_came_from() -> None:
    with pytest.raises(RegistryError, match=r"module 'no_such_module_xyz' .*cannot import 'no_such_module_xyz'"):
        discover(["no_such_module_xyz"], use_entry_points=False)


def test_entry_points_bring_the_builtin_ping_and_the_demo_jobs() -> None:
    modules = dict(entry_point_modules())
    assert "islandora_job.worker.builtin_jobs" in modules
    registry = discover()
    ping = registry.get("islandora_job.ping")
    assert ping is not None and ping.fn() == "pong"
    assert registry.get("islandora_job_demo.add") is not None
    assert next(e.origin for e in registry if e.spec is ping) == "entry point 'builtin' of islandora-job"


def test_registry_lookup_by_function_includes_multisite_prefixes() -> None:
    @job("unit.m", alias="m_alias")
    def m() -> None:
        pass

    registry = Registry(multisite_prefixes=["siteA"])
    registry.add(m.__islandora_job__, "test")  # type: ignore[attr-defined]
    assert registry.by_function("m_alias") is registry.by_function("siteA_m_alias") is registry.get("unit.m")
    assert registry.functions() == ["m_alias", "siteA_m_alias"]
