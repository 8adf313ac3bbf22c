"""Disposal's SQL: finding and removing expired rows, partitions and entities.

Each function is one step in the caller's transaction; ``delete=False`` counts what the
step would remove (a dry run) with the same predicate, so a dry run reports exactly what a
real run at that moment would remove.

PostgreSQL deletes per dataset, one statement each: history is append-only, so a long
DELETE blocks no writer, and the cut-off prunes the partitions scanned. SQLite has one
writer at a time, so expired rows are removed a rowid range at a time
(``expire_rows_in_range``), each range a short write transaction of its own: a big
disposal never holds the database's write lock for more than one range.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Column, Connection, Engine, and_, delete, exists, func, not_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import ColumnElement

from urbanhub.governance.retention import Cutoffs, Partition, RowSpan
from urbanhub.model.catalog import UNCATALOGUED_ID
from urbanhub.model.devices import DeviceStatus
from urbanhub.store import rollups
from urbanhub.store.db import id_sets
from urbanhub.store.tables import (
    attributes,
    devices,
    entities,
    entity_tombstones,
    entity_types,
    history,
    quality_flags,
    rollup_daily,
    rollup_hourly,
)

#: The columns by which rows of each table expire: history, hourly rollups, quality flags.
EXPIRING: tuple[Column[datetime], ...] = (
    history.c.observed_at, rollup_hourly.c.hour, quality_flags.c.observed_at)
#: Key of the PostgreSQL advisory lock that lets one disposal run at a time (ASCII "urbhdisp").
DISPOSAL_LOCK_KEY = 0x7572_6268_6469_7370
#: Names of the partitions the history writer creates; no other table is ever dropped.
_PARTITION_NAME = re.compile(r"history_y\d{4}m\d{2}")
_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


# --- one disposal at a time ---------------------------------------------------------------

@contextmanager
def disposal_lock(engine: Engine) -> Iterator[bool]:
    """Hold the PostgreSQL disposal lock for the block; yields False when another process
    holds it. SQLite needs none across processes: deleting an expired row twice is a no-op.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        acquired = bool(conn.exec_driver_sql(
            f"SELECT pg_try_advisory_lock({DISPOSAL_LOCK_KEY})").scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({DISPOSAL_LOCK_KEY})")
                conn.commit()


# --- which dataset a row belongs to -----------------------------------------------------

def _owned_by(entity_id: ColumnElement[str], owner: str,
              cutoffs: Cutoffs) -> ColumnElement[bool]:
    """Rows (by their entity id column) that ``owner``'s retention applies to: those of its
    entities and of its deleted entities (tombstones; an id is never in both)."""
    if owner != UNCATALOGUED_ID:
        return entity_id.in_(
            select(entities.c.id).where(entities.c.dataset_id == owner).union_all(
                select(entity_tombstones.c.entity_id).where(
                    entity_tombstones.c.dataset_id == owner)))
    return and_(
        not_(exists().where(entities.c.id == entity_id,
                            entities.c.dataset_id.in_(cutoffs.catalogued))),
        not_(exists().where(entity_tombstones.c.entity_id == entity_id,
                            entity_tombstones.c.dataset_id.in_(cutoffs.catalogued))))


def _entity_of(owner: str, cutoffs: Cutoffs) -> ColumnElement[bool]:
    """Entities ``owner``'s retention applies to."""
    if owner != UNCATALOGUED_ID:
        return entities.c.dataset_id == owner
    return entities.c.dataset_id.not_in(cutoffs.catalogued)


def _entity_expired(cut: datetime) -> ColumnElement[bool]:
    """Nothing about the entity is current at ``cut``: no write since, no attribute observed
    since, and no registered device that may write again (any but a retired one) writes it."""
    return and_(entities.c.modified_at < cut,
                not_(exists().where(attributes.c.entity_id == entities.c.id,
                                    attributes.c.observed_at >= cut)),
                not_(exists().where(devices.c.entity_id == entities.c.id,
                                    devices.c.status != DeviceStatus.RETIRED.value)))


# --- rows ---------------------------------------------------------------------------------

def expire_rows(conn: Connection, column: Column[datetime], owner: str, cutoffs: Cutoffs, *,
                delete_rows: bool) -> RowSpan:
    """Remove (or count) the rows of ``column``'s table that expired for ``owner``."""
    table = column.table
    expired = and_(column < cutoffs.at[owner], _owned_by(table.c.entity_id, owner, cutoffs))
    if delete_rows:
        gone = delete(table).where(expired).returning(column.label("t")).cte("gone")
        query = select(func.count(), func.min(gone.c.t), func.max(gone.c.t))
    else:
        query = select(func.count(), func.min(column), func.max(column)).where(expired)
    rows, first, last = conn.execute(query).one()
    return RowSpan(int(rows), first, last)


def expire_rows_in_range(conn: Connection, column: Column[datetime], cutoffs: Cutoffs,
                         after: int, scan: int, *,
                         delete_rows: bool) -> tuple[int | None, dict[str, RowSpan]]:
    """SQLite: remove (or count) the expired rows among the next ``scan`` rows after rowid
    ``after``, for every dataset at once. Returns the last rowid looked at (None when there
    was nothing after ``after``) and what expired, by owning dataset.

    One pass over a table in rowid ranges reads each row once, whatever the number of
    datasets; the cut-offs come in as a VALUES list joined through the row's entity.
    """
    table, time = column.table.name, column.name
    upper = conn.exec_driver_sql(
        f"SELECT max(rowid) FROM (SELECT rowid FROM {table} WHERE rowid > ? ORDER BY rowid"
        " LIMIT ?)", (after, scan)).scalar()
    if upper is None:
        return None, {}
    listed = list(cutoffs.at.items())
    values = ", ".join(["(?, ?)"] * len(listed))
    with_cutoffs = f"WITH cutoffs(dataset_id, cutoff) AS (VALUES {values}) "
    cutoff_params: list[Any] = [v for ident, cut in listed for v in (ident, _sqlite_time(cut))]
    expired = (f" FROM {table} t LEFT JOIN entities e ON e.id = t.entity_id"
               " LEFT JOIN entity_tombstones d ON d.entity_id = t.entity_id"
               " LEFT JOIN cutoffs c ON c.dataset_id = coalesce(e.dataset_id, d.dataset_id)"
               f" WHERE t.rowid > ? AND t.rowid <= ? AND t.{time} < coalesce(c.cutoff, ?)")
    range_params = [after, upper, _sqlite_time(cutoffs.at[UNCATALOGUED_ID])]
    found = {
        owner: RowSpan(int(rows), _sqlite_parse(first), _sqlite_parse(last))
        for owner, rows, first, last in conn.exec_driver_sql(
            with_cutoffs + f"SELECT coalesce(c.dataset_id, ?), count(*), min(t.{time}),"
            f" max(t.{time})" + expired + " GROUP BY 1",
            (*cutoff_params, UNCATALOGUED_ID, *range_params))}
    if delete_rows and found:
        conn.exec_driver_sql(
            with_cutoffs + f"DELETE FROM {table} WHERE rowid IN (SELECT t.rowid" + expired + ")",
            (*cutoff_params, *range_params))
    return int(upper), found


# --- partitions (PostgreSQL) --------------------------------------------------------------

def history_partitions(conn: Connection) -> list[Partition]:
    """The monthly partitions of history the writer created, with their bounds."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'history'::regclass")
    found = []
    for name, bound in rows:
        match = _BOUNDS.fullmatch(bound or "")
        if _PARTITION_NAME.fullmatch(name) and match:
            lower, upper = (datetime.fromisoformat(t).astimezone(UTC) for t in match.groups())
            found.append(Partition(lower, upper, name))
    return sorted(found)


def partition_census(conn: Connection, partition: Partition, *,
                     lock_timeout_s: float | None) -> dict[str | None, RowSpan]:
    """Rows of a partition by their entity's dataset, a deleted entity's from its
    tombstone (None: neither is known).

    With ``lock_timeout_s`` the partition is first locked against writes (other months stay
    writable) until the transaction ends, so no row can arrive between this census and
    dropping the partition; waiting longer than that raises OperationalError.
    """
    _check_partition_name(partition)
    if lock_timeout_s is not None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
        conn.exec_driver_sql(f"LOCK TABLE {partition.name} IN SHARE MODE")
    rows = conn.exec_driver_sql(
        f"SELECT coalesce(e.dataset_id, d.dataset_id), count(*), min(h.observed_at),"
        f" max(h.observed_at) FROM {partition.name} h LEFT JOIN entities e ON e.id = h.entity_id"
        " LEFT JOIN entity_tombstones d ON d.entity_id = h.entity_id GROUP BY 1")
    return {dataset_id: RowSpan(int(count), first, last)
            for dataset_id, count, first, last in rows}


def lock_timed_out(error: OperationalError) -> bool:
    """Whether a partition census or drop gave up waiting for its locks."""
    return isinstance(error.orig, psycopg.errors.LockNotAvailable)


def drop_partition(conn: Connection, partition: Partition) -> None:
    """Detach and drop a partition: instant, and gives the disk space back at once.

    DETACH takes a brief exclusive lock on history; the caller's lock timeout bounds the
    wait behind long readers (the partition is then left for the next run).
    """
    _check_partition_name(partition)
    conn.exec_driver_sql(f"ALTER TABLE history DETACH PARTITION {partition.name}")
    conn.exec_driver_sql(f"DROP TABLE {partition.name}")


def _check_partition_name(partition: Partition) -> None:
    if not _PARTITION_NAME.fullmatch(partition.name):
        raise ValueError(f"{partition.name!r} is not a history partition")


# --- entities -----------------------------------------------------------------------------

def expired_entity_ids(conn: Connection, owner: str, cutoffs: Cutoffs, limit: int) -> list[str]:
    return list(conn.scalars(select(entities.c.id).where(
        _entity_of(owner, cutoffs), _entity_expired(cutoffs.at[owner]))
        .order_by(entities.c.id).limit(limit)))


def count_expired_entities(conn: Connection, owner: str, cutoffs: Cutoffs) -> int:
    return int(conn.scalar(select(func.count()).select_from(entities).where(
        _entity_of(owner, cutoffs), _entity_expired(cutoffs.at[owner]))) or 0)


def delete_entities(conn: Connection, ids: Sequence[str]) -> None:
    """Delete entities whole: current attributes, types, the entity row."""
    for column in (attributes.c.entity_id, entity_types.c.entity_id, entities.c.id):
        for among in id_sets(conn.dialect.name, column, ids):
            conn.execute(delete(column.table).where(among))


def expire_rollup_days(conn: Connection, owner: str, cutoffs: Cutoffs, *,
                       delete_rows: bool) -> int:
    """PostgreSQL: remove (or count) the expired hours of compacted day rollups for
    ``owner``; returns the hours."""
    return rollups.expire_days(conn, _owned_by(rollup_daily.c.entity_id, owner, cutoffs),
                               cutoffs.at[owner], delete_rows=delete_rows)


def forget_tombstones(conn: Connection) -> int:
    """Remove the tombstones of deleted entities with nothing left: no history, rollup
    hours or quality flags (each looked up by its primary key's first column)."""
    tables = [history, rollup_hourly, quality_flags]
    if conn.dialect.name == "postgresql":
        tables.append(rollup_daily)
    return conn.execute(delete(entity_tombstones).where(*(
        not_(exists().where(table.c.entity_id == entity_tombstones.c.entity_id))
        for table in tables))).rowcount


def expire_attribute_values(conn: Connection, owner: str, cutoffs: Cutoffs, *,
                            delete_rows: bool) -> int:
    """Remove (or count) current values observed before the cut-off on entities that are
    kept: a sensor's last reading of an attribute it stopped reporting is expired data too.
    Values without observedAt (static attributes) are left alone."""
    cut = cutoffs.at[owner]
    expired = and_(attributes.c.observed_at < cut, attributes.c.entity_id.in_(
        select(entities.c.id).where(_entity_of(owner, cutoffs), not_(_entity_expired(cut)))))
    if delete_rows:
        return conn.execute(delete(attributes).where(expired)).rowcount
    return int(conn.scalar(select(func.count()).select_from(attributes).where(expired)) or 0)


def _sqlite_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_SQLITE_TIME)


def _sqlite_parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)
