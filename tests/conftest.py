"""Fixtures: every API test runs on SQLite and on the local PostgreSQL server.

PostgreSQL tests use a database of their own, created for the session and dropped after,
so they never touch data that is not theirs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from urbanhub.api.app import create_app
from urbanhub.config import Settings
from urbanhub.hub.runtime import Hub
from urbanhub.ngsild.context import ContextLoader

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ROOT.parent / "shared" / "external"
PG_ADMIN = os.environ.get("URBANHUB_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ("api_keys", "member_roles", "members", "organisations", "audit_log", "dead_letters",
          "devices", "rollup_hourly", "history", "attributes", "entity_types", "entities",
          "datasets", "purposes", "catalog_revision")


def _ensure_services() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=False,
                   capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    _ensure_services()
    name = f"urbanhub_test_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def offline_loader() -> ContextLoader:
    """A context loader that fails at once for URLs not shipped or preloaded."""

    def refuse(url: str, _timeout: float) -> object:
        raise OSError(f"network disabled in tests ({url})")

    return ContextLoader(fetch=refuse)


@pytest.fixture
def hub(database_url: str, offline_loader: ContextLoader) -> Iterator[Hub]:
    settings = Settings(database_url=database_url, mqtt_url=None)
    instance = Hub(settings, loader=offline_loader)
    instance.upgrade_schema()
    if instance.store.dialect == "postgresql":
        with instance.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    yield instance
    instance.close()


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub.settings, hub=hub)) as test_client:
        yield test_client


@pytest.fixture
def sdm_dir() -> Path:
    return EXTERNAL / "smart-data-models"
