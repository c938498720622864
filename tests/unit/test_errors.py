"""One error hierarchy: every exception class of the package derives from IslandoraJobError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import islandora_job
from islandora_job.address import ServerAddress
from islandora_job.connection import ConnectFailed
from islandora_job.errors import IslandoraJobError
from islandora_job.payload import PayloadError

#: Classes outside the hierarchy on purpose, each with the reason.
OUTSIDE = {
    "islandora_job.worker.router.Fail": "raised by job code to fail its job, not by the package",
    "islandora_job.worker.deadletters._NoTable": "private control flow inside one function, never escapes",
}


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(islandora_job.__path__, "islandora_job."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_the_package_defines_the_exceptions_this_test_is_about() -> None:
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in _exception_classes()}
    assert {"islandora_job.connection.ConnectFailed", "islandora_job.worker.bridge.BridgeRefused"} <= names
    assert set(OUTSIDE) <= names  # an entry for a class that is gone must go too


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_exception_class_derives_from_islandora_job_error(cls: type[BaseException]) -> None:
    name = f"{cls.__module__}.{cls.__qualname__}"
    assert issubclass(cls, IslandoraJobError) != (name in OUTSIDE)


def test_the_stdlib_bases_callers_rely_on_stay() -> None:
    error = ConnectFailed(ServerAddress("127.0.0.1", 1), "refused")
    assert isinstance(error, OSError)
    assert str(error) == "127.0.0.1:1: refused"
    assert issubclass(PayloadError, ValueError)
