"""The @job decorator and job discovery."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from islandora_job import job
from islandora_job.worker import runtime
from islandora_job.worker.config import load
from islandora_job.worker.registry import JobSpec, Registry, RegistryError, discover, entry_point_modules, jobs_of


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


def _declared(name: str, **options: object) -> JobSpec:
    return job(name, **options)(lambda *args: name).__islandora_job__  # type: ignore[arg-type,no-any-return]


@pytest.mark.parametrize("builtin_first", [True, False])
def test_a_builtin_steps_aside_for_a_site_job_on_its_name_or_function(
    builtin_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    builtin = _declared("unit.beat", alias="ub", steps_aside=True)
    for rival in (_declared("unit.beat"), _declared("unit.other", alias="ub")):
        registry = Registry(multisite_prefixes=["s1"])
        order = [(builtin, "builtin"), (rival, "site")] if builtin_first else [(rival, "site"), (builtin, "builtin")]
        with caplog.at_level(logging.INFO, logger="islandora_job.worker.registry"):
            for spec, origin in order:
                registry.add(spec, origin)
        assert [entry.spec for entry in registry] == [rival]
        assert all(registry.by_function(f) is rival for f in registry.functions())
        assert f"built-in job 'unit.beat' steps aside: job {rival.name!r}" in caplog.text


def test_two_jobs_that_do_not_step_aside_are_still_refused() -> None:
    registry = Registry()
    registry.add(_declared("unit.x", alias="ux"), "a")
    with pytest.raises(RegistryError, match="Gearman function 'ux' is served by two jobs"):
        registry.add(_declared("unit.y", alias="ux"), "b")
    with pytest.raises(RegistryError, match="declared twice"):
        registry.add(_declared("unit.x"), "b")


def test_a_builtin_withdraws_from_a_function_a_command_entry_serves(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(multisite_prefixes=["s1"])
    registry.add(_declared("unit.hb", alias="uh", steps_aside=True), "builtin")
    registry.add(_declared("unit.plain"), "site")
    with caplog.at_level(logging.INFO, logger="islandora_job.worker.registry"):
        assert registry.withdraw("s1_uh", "a command_jobs entry")
    assert registry.functions_of("unit.hb") == ["uh"]  # still serves the functions no command entry took
    assert "built-in job 'unit.hb' steps aside from Gearman function 's1_uh': a command_jobs entry" in caplog.text
    assert registry.withdraw("uh", "a command_jobs entry") and "unit.hb" not in registry
    assert not registry.withdraw("unit.plain", "a command_jobs entry")  # a site's job is a real conflict
    assert registry.withdraw("nobody.serves.this", "a command_jobs entry")


def test_the_builtin_heartbeat_is_the_modules_on_function_ijh() -> None:
    registry = discover(use_entry_points=True)
    heartbeat = registry.get("islandora_job_heartbeat")
    assert heartbeat is not None and heartbeat.steps_aside and heartbeat.payload == "any"
    assert registry.functions_of("islandora_job_heartbeat") == ["ijh"]
    assert heartbeat.fn("ping", 1764750000) is True


def test_a_command_entry_found_by_discover_argv_serves_ijh_and_the_builtin_steps_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a migrating site has: drush's islandora-job-list-functions prints ijh among its functions."""
    lister = tmp_path / "list-functions"
    lister.write_text("#!/bin/sh\nprintf 'islandora_derivatives\\nijh\\n'\n")
    lister.chmod(0o755)
    config_file = tmp_path / "worker.toml"
    config_file.write_text(f"[[command_jobs]]\ndiscover_argv = ['{lister}']\nargv = ['/bin/cat']\n")
    with caplog.at_level(logging.INFO, logger="islandora_job.worker.registry"):
        built = runtime.build(runtime.run_discovery(load(str(config_file), environ={})))
    assert "ijh" in built.bridge and "islandora_job_heartbeat" not in built.registry
    assert built.router.functions().count("ijh") == 1
    assert "built-in job 'islandora_job_heartbeat' steps aside from Gearman function 'ijh'" in caplog.text
    assert built.registry.get("islandora_job.ping") is not None  # the other built-in is untouched
