"""Engine creation and schema upgrades for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, cast

from alembic import command
from alembic.config import Config
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Connection, Engine, Text, any_, bindparam, create_engine, event, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import ColumnElement


def make_engine(url: str, *, autocommit: bool = False) -> Engine:
    """An engine tuned per backend: SQLite in WAL mode, PostgreSQL through psycopg 3.

    ``autocommit`` (PostgreSQL only) makes an engine for reads: under READ COMMITTED each
    statement takes its own snapshot anyway, so a read transaction's BEGIN and ROLLBACK
    were two wasted round trips of a GET's five. It has a pool of its own: switching a
    shared pool's connections per checkout cost more round trips than it saved.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False))
    # Session settings ride on the connection start-up packet, costing no round trip: UTC
    # (times are formatted and bucketed in UTC), and no JIT, whose compilation cost more
    # than the hub's index-driven queries themselves (a page of hourly aggregates: ~as
    # much as the query).
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True,
                           connect_args={"options": "-c timezone=UTC -c jit=off"}, **options)

    @event.listens_for(engine, "connect")
    def _binary_lists(dbapi_connection: Any, _record: Any) -> None:
        # Lists (the id arrays of a page's reads) go as binary arrays: psycopg's text dumper
        # runs a regular expression on every element to quote it, 3 ms for 1,000 ids.
        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)

    return engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location",
                           str(resources.files("urbanhub.store").joinpath("migrations")))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create the schema or bring it up to ``revision``; safe to run on every start."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        row = connection.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return row[0] if row else None


def lock_sqlite_database(connection: Connection) -> None:
    """Take SQLite's database write lock now, unless this transaction already holds it.

    pysqlite defers BEGIN to the first write, so whatever a transaction reads before it
    writes may be stale by the time it writes; ``BEGIN IMMEDIATE`` takes the lock, across
    processes, before the read.
    """
    if not cast(sqlite3.Connection, connection.connection.driver_connection).in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def id_sets(dialect: str, column: ColumnElement[str], ids: Sequence[str],
            ) -> Iterator[ColumnElement[bool]]:
    """``column`` among ``ids`` in as few clauses as the backend allows: PostgreSQL takes the
    ids as one array parameter (an expanded IN of 1,000 ids costs more to build and parse
    than the rows cost to read); SQLite takes expanded IN lists, in chunks under its limit
    on bound variables. No clause for no ids."""
    if dialect == "postgresql":
        if ids:
            yield column == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(Text)))
        return
    for start in range(0, len(ids), 900):
        yield column.in_(list(ids[start:start + 900]))
