"""Fixtures: every API test runs on SQLite and on the local PostgreSQL server.

PostgreSQL tests use a database of their own, created for the session and dropped after,
so they never touch data that is not theirs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.stakeholders import People, city_people
from urbanhub.api.app import create_app
from urbanhub.config import Settings
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.governance import OrganisationKind, Purpose, PurposeKind, Role
from urbanhub.model.identity import Organisation
from urbanhub.ngsild.context import ContextLoader

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ROOT.parent / "shared" / "external"
PG_ADMIN = os.environ.get("URBANHUB_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ("api_keys", "member_roles", "members", "organisations", "audit_log", "dead_letters",
          "devices", "rollup_hourly", "rollup_daily", "entity_tombstones", "history",
          "attributes", "entity_types", "entities",
          "datasets", "purposes", "catalog_revision", "device_revision", "quality_rules",
          "quality_flags", "grants", "data_use_decisions", "data_use_requests",
          "grant_revision", "consents")


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
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A database no other test uses (a new SQLite file; a new PostgreSQL database), for
    tests that migrate a schema step by step."""
    if database_url.startswith("sqlite"):
        yield database_url.replace("hub.db", "fresh.db")
        return
    name = f"urbanhub_fresh_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield database_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def offline_loader() -> ContextLoader:
    """A context loader that fails at once for URLs not shipped or preloaded."""

    def refuse(url: str, _timeout: float) -> object:
        raise OSError(f"network disabled in tests ({url})")

    return ContextLoader(fetch=refuse)


#: Keys of the pseudonymisation obligation in tests (never the key file of a developer).
PSEUDONYM_KEYS = {"test": "00112233445566778899aabbccddeeff"}
#: The purpose the default client states: running the city's services.
OPERATIONS = "city-operations"
CITY = Organisation("city", "City of Testville", OrganisationKind.DEPARTMENT)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, mqtt_url=None, pseudonym_keys=PSEUDONYM_KEYS,
                    **overrides)


@pytest.fixture
def hub(database_url: str, offline_loader: ContextLoader) -> Iterator[Hub]:
    instance = Hub(make_settings(database_url), loader=offline_loader)
    instance.upgrade_schema()
    if instance.store.dialect == "postgresql":
        with instance.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    yield instance
    instance.close()


def member_key(hub: Hub, subject: str, *roles: Role, organisation: Organisation = CITY) -> str:
    """An API key of a (new or existing) member, made through the hub's identity service."""
    issued = hub.identities.service_account_key(
        Caller.system("tests"), organisation, subject, frozenset(roles), timedelta(days=1),
        "tests")
    return issued.key


def operations_purpose(hub: Hub) -> None:
    if all(p.id != OPERATIONS for p in hub.catalog.purposes()):
        hub.catalog.create_purpose(Caller.system("tests"), Purpose(
            OPERATIONS, "Running the city's services", PurposeKind.OPERATIONS))


def operator_headers(hub: Hub) -> dict[str, str]:
    """Credentials of a city operator (a department's member with the operator role) stating
    the operations purpose: it may write entity data and read the city's internal data."""
    operations_purpose(hub)
    return {"X-API-Key": member_key(hub, "operator", Role.OPERATOR),
            "Urbanhub-Purpose": OPERATIONS}


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    """A city operator's client (``operator_headers``)."""
    with TestClient(create_app(hub.settings, hub=hub),
                    headers=operator_headers(hub)) as test_client:
        yield test_client


@pytest.fixture
def public_client(hub: Hub) -> Iterator[TestClient]:
    """Anyone on the internet: no credentials."""
    with TestClient(create_app(hub.settings, hub=hub)) as test_client:
        yield test_client


@pytest.fixture
def sdm_dir() -> Path:
    return EXTERNAL / "smart-data-models"


@pytest.fixture
def people(hub: Hub) -> People:
    """The device tests' stakeholders, each with a real API key (tests/stakeholders.py)."""
    return city_people(hub)
