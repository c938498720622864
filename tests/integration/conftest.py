"""Fixtures shared by integration test modules: a Drupal site's database, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import drupal_databases as dbs
from tests.integration.drupal_databases import Site


@pytest.fixture(scope="session")
def mariadb_site() -> Iterator[Site]:
    """A real MariaDB holding a Drupal 7 site's database (the module's status table, prefix ``site1_``)."""
    with dbs.mariadb() as site:
        yield site


@pytest.fixture(scope="session")
def postgresql_site() -> Iterator[Site]:
    """The same on a real PostgreSQL."""
    with dbs.postgresql() as site:
        yield site
