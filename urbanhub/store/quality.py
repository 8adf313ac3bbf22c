"""Repository for data quality: rules per dataset, flags of failing readings, and the counts
the quality report needs (computed in SQL, so only figures leave the database)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, func, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from urbanhub.governance.quality import ReadingKey
from urbanhub.store.entities import HistoryRow
from urbanhub.store.tables import (
    UTCDateTime,
    attributes,
    devices,
    entities,
    history,
    quality_flags,
    quality_rules,
)

#: SQLite's limit on bound parameters is 999 in older builds.
_CHUNK = 900
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_SQLITE_TIME)


# --- rules ------------------------------------------------------------------------------------

def all_rules(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every dataset's stored rules (JSON), by dataset id."""
    return {row.dataset_id: row.rules for row in conn.execute(select(quality_rules))}


def get_rules(conn: Connection, dataset_id: str) -> dict[str, Any] | None:
    return conn.scalar(select(quality_rules.c.rules).where(
        quality_rules.c.dataset_id == dataset_id))


def put_rules(conn: Connection, dataset_id: str, rules: dict[str, Any] | None,
              now: datetime) -> None:
    """Store a dataset's rules; None removes them."""
    if rules is None:
        conn.execute(quality_rules.delete().where(quality_rules.c.dataset_id == dataset_id))
        return
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    insert = dialect_insert(quality_rules).values(dataset_id=dataset_id, rules=rules,
                                                 modified_at=now)
    conn.execute(insert.on_conflict_do_update(
        index_elements=["dataset_id"],
        set_={"rules": insert.excluded.rules, "modified_at": insert.excluded.modified_at}))


# --- flags (the ingest hook) -------------------------------------------------------------------

def entity_datasets(conn: Connection, entity_ids: Iterable[str],
                    dataset_ids: Sequence[str]) -> dict[str, str]:
    """The catalog dataset of those entities that are in one of ``dataset_ids``."""
    ids = list(entity_ids)
    if conn.dialect.name == "postgresql":  # one array each: no IN list to build and parse
        return dict(conn.exec_driver_sql(
            "SELECT id, dataset_id FROM entities WHERE id = ANY(%(ids)b::text[])"
            " AND dataset_id = ANY(%(datasets)b::text[])",
            {"ids": ids, "datasets": list(dataset_ids)}).all())
    found: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        found.update(conn.execute(select(entities.c.id, entities.c.dataset_id).where(
            entities.c.id.in_(ids[start:start + _CHUNK]),
            entities.c.dataset_id.in_(dataset_ids))).all())
    return found


def stored_readings(conn: Connection, keys: Sequence[ReadingKey]) -> list[HistoryRow]:
    """The readings history holds under these keys (what a replay left in place)."""
    found: list[HistoryRow] = []
    key = tuple_(history.c.entity_id, history.c.name, history.c.dataset_id,
                 history.c.observed_at)
    for start in range(0, len(keys), _CHUNK // 4):
        rows = conn.execute(select(history.c.entity_id, history.c.name, history.c.dataset_id,
                                   history.c.observed_at, history.c.instance,
                                   history.c.value_num)
                            .where(key.in_(list(keys[start:start + _CHUNK // 4]))))
        found.extend(HistoryRow(r.entity_id, r.name, r.dataset_id, r.observed_at,
                                orjson.loads(r.instance), r.value_num) for r in rows)
    return found


def previous_values(conn: Connection, series: Sequence[tuple[str, str, str, datetime]],
                    count: int) -> dict[tuple[str, str, str], list[tuple[float | None, Any]]]:
    """For each (entity, attribute, datasetId, before): the ``count`` newest readings
    observed before ``before``, oldest first, as (number, instance): the instance is parsed
    only when the value is not a number.

    One primary-key range scan per series, backwards from ``before``. Driver-level SQL:
    this runs on every ingest batch of a dataset with a maxRepeats rule.
    """
    rows: list[Any] = []
    if conn.dialect.name == "postgresql":
        rows.extend(conn.exec_driver_sql(
            "SELECT k.entity_id, k.name, k.dataset_id, h.observed_at, h.value_num,"
            " CASE WHEN h.value_num IS NULL THEN h.instance END"
            " FROM unnest(%(entity_ids)b::text[], %(names)b::text[], %(dataset_ids)b::text[],"
            " %(befores)b::timestamptz[]) AS k(entity_id, name, dataset_id, before)"
            " CROSS JOIN LATERAL (SELECT observed_at, value_num, instance FROM history h"
            " WHERE h.entity_id = k.entity_id AND h.name = k.name"
            " AND h.dataset_id = k.dataset_id AND h.observed_at < k.before"
            " ORDER BY h.observed_at DESC LIMIT %(count)s) h"
            " ORDER BY k.entity_id, k.name, k.dataset_id, h.observed_at",
            {"entity_ids": [s[0] for s in series], "names": [s[1] for s in series],
             "dataset_ids": [s[2] for s in series], "befores": [s[3] for s in series],
             "count": count}).all())
    else:
        for start in range(0, len(series), _CHUNK // 4):
            chunk = series[start:start + _CHUNK // 4]
            # LIMIT cannot refer to the outer query in SQLite, hence one count for all.
            rows.extend(conn.exec_driver_sql(
                "WITH k(entity_id, name, dataset_id, before) AS (VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk)) + ")"
                " SELECT k.entity_id, k.name, k.dataset_id, h.observed_at, h.value_num,"
                " CASE WHEN h.value_num IS NULL THEN h.instance END"
                " FROM k JOIN history h ON h.rowid IN (SELECT rowid FROM history x"
                " WHERE x.entity_id = k.entity_id AND x.name = k.name"
                " AND x.dataset_id = k.dataset_id AND x.observed_at < k.before"
                " ORDER BY x.observed_at DESC LIMIT ?)"
                " ORDER BY k.entity_id, k.name, k.dataset_id, h.observed_at",
                (*(v for e, n, d, t in chunk for v in (e, n, d, _sqlite_time(t))), count)).all())
    found: dict[tuple[str, str, str], list[tuple[float | None, Any]]] = {}
    for row in rows:  # in series and time order (chunks hold whole series)
        found.setdefault((row[0], row[1], row[2]), []).append(
            (row[4], None if row[5] is None else orjson.loads(row[5])))
    return found


def put_flags(conn: Connection, flags: Mapping[ReadingKey, int]) -> None:
    """Store the flags of failing readings (a replay judged again overwrites them).

    One statement of arrays on PostgreSQL, executemany on SQLite: a rule every reading
    fails (a wrong unit) must not slow ingest down to a round trip per reading.
    """
    if not flags:
        return
    upsert = (" ON CONFLICT (entity_id, name, dataset_id, observed_at)"
              " DO UPDATE SET flags = excluded.flags")
    if conn.dialect.name == "postgresql":
        keys = list(flags)
        conn.exec_driver_sql(
            "INSERT INTO quality_flags (entity_id, name, dataset_id, observed_at, flags)"
            " SELECT * FROM unnest(%(entity_ids)b::text[], %(names)b::text[],"
            " %(dataset_ids)b::text[], %(times)b::timestamptz[], %(flags)b::int[])" + upsert,
            {"entity_ids": [k[0] for k in keys], "names": [k[1] for k in keys],
             "dataset_ids": [k[2] for k in keys], "times": [k[3] for k in keys],
             "flags": [int(flags[k]) for k in keys]})
    else:
        conn.exec_driver_sql(
            "INSERT INTO quality_flags (entity_id, name, dataset_id, observed_at, flags)"
            " VALUES (?, ?, ?, ?, ?)" + upsert,
            [(e, n, d, _sqlite_time(t), int(mask)) for (e, n, d, t), mask in flags.items()])


# --- the report ---------------------------------------------------------------------------------

def _of_dataset(dataset_id: str) -> Any:
    return select(entities.c.id).where(entities.c.dataset_id == dataset_id)


def entity_count(conn: Connection, dataset_id: str) -> int:
    return int(conn.scalar(select(func.count()).select_from(entities).where(
        entities.c.dataset_id == dataset_id)) or 0)


def entities_having(conn: Connection, dataset_id: str, names: Sequence[str]) -> dict[str, int]:
    """How many entities of the dataset have each attribute (any datasetId instance)."""
    if not names:
        return {}
    query = (select(attributes.c.name, func.count(func.distinct(attributes.c.entity_id)))
             .where(attributes.c.name.in_(list(names)),
                    attributes.c.entity_id.in_(_of_dataset(dataset_id)))
             .group_by(attributes.c.name))
    return {name: int(count) for name, count in conn.execute(query).all()}


def received_periods(conn: Connection, dataset_id: str, start: datetime, end: datetime,
                     step_s: int) -> int:
    """(entity, period of ``step_s`` seconds since the epoch) pairs with a reading."""
    if conn.dialect.name == "postgresql":
        period = "floor(extract(epoch FROM h.observed_at) / :step)"
    else:
        period = "CAST(strftime('%s', h.observed_at) AS INTEGER) / :step"
    query = text(
        f"SELECT count(*) FROM (SELECT DISTINCT h.entity_id, {period} FROM history h"
        " JOIN entities e ON e.id = h.entity_id WHERE e.dataset_id = :dataset"
        " AND h.observed_at >= :start AND h.observed_at < :end) AS periods").bindparams(
        bindparam("start", type_=UTCDateTime), bindparam("end", type_=UTCDateTime))
    return int(conn.scalar(query, {"dataset": dataset_id, "start": start, "end": end,
                                   "step": step_s}) or 0)


def readings_between(conn: Connection, dataset_id: str, start: datetime, end: datetime) -> int:
    return int(conn.scalar(select(func.count()).select_from(history).where(
        history.c.entity_id.in_(_of_dataset(dataset_id)), history.c.observed_at >= start,
        history.c.observed_at < end)) or 0)


def flag_counts(conn: Connection, dataset_id: str, start: datetime,
                end: datetime) -> list[tuple[str, int, int]]:
    """(attribute, flag mask, readings) of the dataset's flagged readings in the window."""
    query = (select(quality_flags.c.name, quality_flags.c.flags, func.count())
             .where(quality_flags.c.entity_id.in_(_of_dataset(dataset_id)),
                    quality_flags.c.observed_at >= start, quality_flags.c.observed_at < end)
             .group_by(quality_flags.c.name, quality_flags.c.flags))
    return [(name, int(mask), int(count)) for name, mask, count in conn.execute(query).all()]


@dataclass(frozen=True)
class LastSeen:
    """When an entity was last heard of: its newest observation, else its last write."""

    entity_id: str
    at: datetime
    device_id: str | None


def last_seen(conn: Connection, dataset_id: str) -> list[LastSeen]:
    newest = func.max(attributes.c.observed_at)
    query = (select(entities.c.id, newest, entities.c.modified_at, devices.c.id)
             .select_from(entities.outerjoin(attributes, and_(
                 attributes.c.entity_id == entities.c.id,
                 attributes.c.observed_at.is_not(None)))
                 .outerjoin(devices, devices.c.entity_id == entities.c.id))
             .where(entities.c.dataset_id == dataset_id)
             .group_by(entities.c.id, entities.c.modified_at, devices.c.id))
    return [LastSeen(entity_id, observed or modified, device_id)
            for entity_id, observed, modified, device_id in conn.execute(query).all()]
