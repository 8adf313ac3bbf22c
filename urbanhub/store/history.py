"""Reads of history and of the hourly rollups for the temporal API.

Aggregates are grouped into fixed-length periods in SQL: a row falls in period
``floor((t - origin) / step)`` with times as integer microseconds since the epoch (whole
seconds for the rollups, whose hours have no fractions), so both backends bucket exactly
(no floating-point day fractions) and only per-period figures leave the database. The
rollup variant reads ``rollup_hourly`` instead of ``history`` and must only be used when
every period and the requested range start and end on whole hours.

Aggregates come back as one ``PeriodSeries`` of columns per entity, attribute and
datasetId rather than an object per period: a page of 1,000 sensors by 24 hours is 24,000
periods, and building (and garbage-collecting) an object for each cost more than the query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby, pairwise
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import BindParameter, Connection, bindparam, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from urbanhub.ngsild.entity import Instance
from urbanhub.store import rollups
from urbanhub.store.tables import history

#: History columns a temporal query can filter and order on: observedAt is the
#: ``observed_at`` column (observedAt, or modifiedAt for an instance that had none);
#: modifiedAt is when history first recorded the instance.
TIME_COLUMNS = {"observedAt": "observed_at", "modifiedAt": "recorded_at"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Rollup columns beside the count, with the aggregate that combines hours into a period.
ROLLUP_FIGURES = {"total": "sum", "total_sq": "sum", "minimum": "min", "maximum": "max"}
#: The members that hold an attribute's content, in the order distinctCount looks for them.
_CONTENT = ("value", "object", "languageMap", "vocab", "json", "valueList", "objectList")


@dataclass(frozen=True)
class HistoryInstance:
    """One stored instance of an attribute, as the temporal API returns it."""

    entity_id: str
    name: str
    dataset_id: str
    observed_at: datetime
    recorded_at: datetime
    instance: Instance


@dataclass(frozen=True)
class PeriodSeries:
    """What one attribute (and datasetId) of one entity did, period by period, oldest first.

    Each field after dataset_id is a column with one entry per period: enough for every
    method. ``instances`` counts every instance, ``n`` the numeric ones; ``first`` and
    ``last`` are the earliest and latest times seen (None from the rollups).
    """

    entity_id: str
    name: str
    dataset_id: str
    periods: tuple[int, ...]
    instances: tuple[int, ...]
    distinct: tuple[int | None, ...]
    n: tuple[int, ...]
    total: tuple[float | None, ...]
    total_sq: tuple[float | None, ...]
    minimum: tuple[float | None, ...]
    maximum: tuple[float | None, ...]
    first: tuple[datetime | None, ...]
    last: tuple[datetime | None, ...]


def _series(rows: Iterable[Sequence[Any]], *, times: bool) -> list[PeriodSeries]:
    """Rows holding PeriodSeries' fields in order, sorted by key and period, as columns.

    ``times`` converts first and last (text on SQLite) to UTC datetimes.
    """
    found = []
    for (entity_id, name, dataset_id), group in groupby(rows, key=itemgetter(0, 1, 2)):
        (periods, instances, distinct, n, total, total_sq, minimum, maximum, first,
         last) = list(zip(*group, strict=True))[3:]
        if times:
            first, last = tuple(map(_time, first)), tuple(map(_time, last))
        found.append(PeriodSeries(entity_id, name, dataset_id, periods, instances, distinct, n,
                                  total, total_sq, minimum, maximum, first, last))
    return found


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _bound(moment: datetime, dialect: str) -> Any:
    # SQLite stores UTC as naive text in SQLAlchemy's format; bind the same spelling.
    if dialect == "sqlite":
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def _epoch_us(column: str, dialect: str) -> str:
    if dialect == "sqlite":
        return (f"(CAST(strftime('%s', {column}) AS INTEGER) * 1000000"
                f" + CAST(substr({column}, 21, 6) AS INTEGER))")
    return f"CAST(extract(epoch FROM {column}) * 1000000 AS bigint)"


def _epoch_s(column: str, dialect: str) -> str:
    """Whole seconds since the epoch, for columns that hold no fractions (rollup hours).

    On PostgreSQL date_part() is a double, exact for whole seconds, and much cheaper
    than extract(), which computes in numeric.
    """
    if dialect == "sqlite":
        return f"CAST(strftime('%s', {column}) AS INTEGER)"
    return f"CAST(date_part('epoch', {column}) AS bigint)"


def _period_expr(epoch: str) -> str:
    """floor((t - :origin) / :step) in integers; both backends truncate ``/`` toward zero."""
    offset = f"({epoch} - :origin)"
    return f"(({offset} - (({offset} % :step) + :step) % :step) / :step)"


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def has_history(conn: Connection, entity_id: str) -> bool:
    return conn.scalar(select(history.c.entity_id).where(
        history.c.entity_id == entity_id).limit(1)) is not None


def instances(conn: Connection, entity_ids: Sequence[str], names: Sequence[str] | None,
              start: datetime | None, end: datetime | None, *,
              timeproperty: str = "observedAt", last_n: int | None = None,
              ) -> list[HistoryInstance]:
    """Instances with ``start <= t < end``, oldest first; the newest ``last_n`` per attribute.

    lastN over observedAt reads each series' newest instances backwards on the history key
    (``_newest_postgres``, ``_newest_sqlite``); over modifiedAt, which no index orders,
    every instance in the range is ranked.
    """
    if not entity_ids:
        return []
    if last_n is not None and timeproperty == "observedAt":
        newest = _newest_postgres if conn.dialect.name == "postgresql" else _newest_sqlite
        return newest(conn, entity_ids, names, start, end, last_n)
    time = history.c[TIME_COLUMNS[timeproperty]]
    clauses: list[ColumnElement[bool]] = [history.c.entity_id.in_(list(entity_ids))]
    if names is not None:
        clauses.append(history.c.name.in_(list(names)))
    if start is not None:
        clauses.append(time >= start)
    if end is not None:
        clauses.append(time < end)
    query = select(history.c.entity_id, history.c.name, history.c.dataset_id,
                   history.c.observed_at, history.c.recorded_at, history.c.instance,
                   time.label("moment")).where(*clauses)
    if last_n is not None:
        ranked = query.add_columns(func.row_number().over(
            partition_by=(history.c.entity_id, history.c.name, history.c.dataset_id),
            order_by=time.desc()).label("rank")).subquery()
        query = select(ranked).where(ranked.c.rank <= last_n)
    rows = sorted(conn.execute(query), key=lambda r: (r.entity_id, r.name, r.moment, r.dataset_id))
    return [HistoryInstance(r.entity_id, r.name, r.dataset_id, r.observed_at, r.recorded_at,
                            orjson.loads(r.instance)) for r in rows]


def _within(column: str, start: datetime | None, end: datetime | None, dialect: str,
            params: dict[str, Any]) -> list[str]:
    """Clauses keeping ``column`` in [start, end), their values put in ``params``."""
    clauses = []
    if start is not None:
        clauses.append(f"{column} >= :start")
        params["start"] = _bound(start, dialect)
    if end is not None:
        clauses.append(f"{column} < :end")
        params["end"] = _bound(end, dialect)
    return clauses


def _and_within(start: datetime | None, end: datetime | None, dialect: str,
                params: dict[str, Any]) -> str:
    """_within on observed_at as `` AND`` text to append to a WHERE."""
    return "".join(f" AND {clause}" for clause in _within("observed_at", start, end, dialect,
                                                             params))


def _history_instances(rows: Iterable[Any]) -> list[HistoryInstance]:
    """History rows as instances, by entity, attribute, time and datasetId."""
    ordered = sorted(rows, key=lambda r: (r.entity_id, r.name, _time(r.observed_at),
                                          r.dataset_id))
    return [HistoryInstance(r.entity_id, r.name, r.dataset_id, _utc(r.observed_at),
                            _utc(r.recorded_at), orjson.loads(r.instance)) for r in ordered]


def _utc(value: Any) -> datetime:
    moment = _time(value)
    assert moment is not None
    return moment


def _newest_postgres(conn: Connection, entity_ids: Sequence[str], names: Sequence[str] | None,
                     start: datetime | None, end: datetime | None,
                     last_n: int) -> list[HistoryInstance]:
    """instances() with lastN on PostgreSQL: the newest ``last_n`` of each series read
    backwards on the primary key, instead of ranking every instance in the range (over a
    second for a sensor with a year of minute readings).

    The series (entity, attribute, datasetId) are found by a skip scan on the key, one
    index descent per series: each step asks for the first key after the one found. The
    time range applies to each series' read only: in the skip scan it would walk every
    instance before the range (a series with nothing in range simply reads nothing). With
    attributes named, the step stays within the attribute (only the datasetId moves): an
    equality on the name beside a row comparison would stop the row comparison bounding
    the scan.
    """
    params: dict[str, Any] = {"ids": list(dict.fromkeys(entity_ids)), "last_n": last_n}
    within = _and_within(start, end, "postgresql", params)
    if names is not None:
        params["names"] = list(dict.fromkeys(names))
        first = ("SELECT e.id, n.name, f.dataset_id FROM unnest(CAST(:ids AS text[])) AS e(id)"
                 " CROSS JOIN unnest(CAST(:names AS text[])) AS n(name) CROSS JOIN LATERAL"
                 " (SELECT dataset_id FROM history WHERE entity_id = e.id AND name = n.name"
                 " ORDER BY dataset_id LIMIT 1) AS f")
        following = ("SELECT s.entity_id, s.name, f.dataset_id FROM series s CROSS JOIN LATERAL"
                     " (SELECT dataset_id FROM history WHERE entity_id = s.entity_id"
                     " AND name = s.name AND dataset_id > s.dataset_id"
                     " ORDER BY dataset_id LIMIT 1) AS f")
    else:
        first = ("SELECT e.id, f.name, f.dataset_id FROM unnest(CAST(:ids AS text[])) AS e(id)"
                 " CROSS JOIN LATERAL (SELECT name, dataset_id FROM history"
                 " WHERE entity_id = e.id ORDER BY name, dataset_id LIMIT 1) AS f")
        following = ("SELECT s.entity_id, f.name, f.dataset_id FROM series s CROSS JOIN LATERAL"
                     " (SELECT name, dataset_id FROM history WHERE entity_id = s.entity_id"
                     " AND (name, dataset_id) > (s.name, s.dataset_id)"
                     " ORDER BY name, dataset_id LIMIT 1) AS f")
    sql = (f"WITH RECURSIVE series(entity_id, name, dataset_id) AS ({first} UNION ALL"
           f" {following}) SELECT h.* FROM series s CROSS JOIN LATERAL"
           " (SELECT entity_id, name, dataset_id, observed_at, recorded_at, instance FROM history"
           " WHERE entity_id = s.entity_id AND name = s.name AND dataset_id = s.dataset_id"
           f"{within} ORDER BY observed_at DESC LIMIT :last_n) AS h")
    return _history_instances(conn.execute(text(sql), params))


def _newest_sqlite(conn: Connection, entity_ids: Sequence[str], names: Sequence[str] | None,
                   start: datetime | None, end: datetime | None,
                   last_n: int) -> list[HistoryInstance]:
    """_newest_postgres for SQLite, which has no LATERAL: each skip-scan step finds the
    next key's name and datasetId with two scalar subqueries (both one index descent), and
    each series' newest rows come by rowid from a subquery with LIMIT. Ids and names come
    as JSON arrays, so a page of entities needs no bound parameter per id."""
    params: dict[str, Any] = {"ids": orjson.dumps(list(dict.fromkeys(entity_ids))).decode(),
                              "last_n": last_n}
    within = _and_within(start, end, "sqlite", params)

    def next_key(column: str, after: str) -> str:
        order = "dataset_id" if names is not None else "name, dataset_id"
        return (f"(SELECT {column} FROM history h WHERE h.entity_id = s.entity_id{after}"
                f" ORDER BY {order} LIMIT 1)")

    if names is not None:
        params["names"] = orjson.dumps(list(dict.fromkeys(names))).decode()
        same = " AND h.name = s.name"
        first = ("SELECT e.value, n.value, (SELECT dataset_id FROM history h"
                 " WHERE h.entity_id = e.value AND h.name = n.value"
                 " ORDER BY dataset_id LIMIT 1)"
                 " FROM json_each(:ids) AS e, json_each(:names) AS n")
        following = ("SELECT s.entity_id, s.name,"
                     f" {next_key('dataset_id', same + ' AND h.dataset_id > s.dataset_id')}"
                     " FROM series s WHERE s.dataset_id IS NOT NULL")
        found = "s.dataset_id IS NOT NULL"
    else:
        after = " AND (h.name, h.dataset_id) > (s.name, s.dataset_id)"
        first = ("SELECT e.value, (SELECT name FROM history h WHERE h.entity_id = e.value"
                 " ORDER BY name, dataset_id LIMIT 1), (SELECT dataset_id FROM history"
                 " h WHERE h.entity_id = e.value ORDER BY name, dataset_id LIMIT 1)"
                 " FROM json_each(:ids) AS e")
        following = (f"SELECT s.entity_id, {next_key('name', after)},"
                     f" {next_key('dataset_id', after)} FROM series s WHERE s.name IS NOT NULL")
        found = "s.name IS NOT NULL"
    sql = (f"WITH RECURSIVE series(entity_id, name, dataset_id) AS ({first} UNION ALL"
           f" {following}) SELECT h.entity_id, h.name, h.dataset_id, h.observed_at,"
           " h.recorded_at, h.instance FROM series s JOIN history h ON h.rowid IN"
           " (SELECT rowid FROM history WHERE entity_id = s.entity_id AND name = s.name"
           f" AND dataset_id = s.dataset_id{within} ORDER BY observed_at DESC LIMIT :last_n)"
           f" WHERE {found}")
    return _history_instances(conn.execute(text(sql), params))


def _filters(column: str, entity_ids: Sequence[str], names: Sequence[str] | None,
             start: datetime | None, end: datetime | None, dialect: str,
             ) -> tuple[str, dict[str, Any], list[Any]]:
    """WHERE text and parameters; PostgreSQL gets lists as one array parameter each.

    An expanded ``IN`` of 1,000 ids costs milliseconds to build and parse per query.
    """
    params: dict[str, Any] = {"ids": list(entity_ids)}
    binds: list[BindParameter[Any]] = []
    if names is not None:
        params["names"] = list(names)
    if dialect == "postgresql":
        where = ["entity_id = ANY(:ids)"]
        if names is not None and len(names) == 1:
            # An equality, not ANY of one: only then does PostgreSQL (before 17) know that
            # an index scan returns an entity's hours in order, and skip a sort per entity.
            where.append("name = :name")
            params["name"] = names[0]
        elif names is not None:
            where.append("name = ANY(:names)")
    else:
        where = ["entity_id IN :ids"] + (["name IN :names"] if names is not None else [])
        binds = [bindparam(key, expanding=True) for key in ("ids", "names") if key in params]
    where += _within(column, start, end, dialect, params)
    return " AND ".join(where), params, binds


def raw_aggregates(conn: Connection, entity_ids: Sequence[str], names: Sequence[str] | None,
                   start: datetime | None, end: datetime | None, *, origin: datetime,
                   step_us: int | None, distinct: bool, timeproperty: str = "observedAt",
                   ) -> list[PeriodSeries]:
    """Per-period figures from raw history; ``step_us`` None means one period for all."""
    if not entity_ids:
        return []
    dialect = conn.dialect.name
    column = TIME_COLUMNS[timeproperty]
    where, params, binds = _filters(column, entity_ids, names, start, end, dialect)
    period = _period_expr(_epoch_us(column, dialect)) if step_us is not None else "0"
    params.update(origin=micros(origin), step=step_us or 1)
    if distinct:
        if dialect == "sqlite":
            content = ", ".join(f"json_extract(instance, '$.{m}')" for m in _CONTENT)
        else:
            content = ", ".join(f"CAST(instance AS jsonb) -> '{m}'" for m in _CONTENT)
        distinct_sql = f"count(DISTINCT coalesce({content}))"
    else:
        distinct_sql = "NULL"
    sql = (f"SELECT entity_id, name, dataset_id, {period} AS period, count(*) AS instances,"
           f" {distinct_sql} AS distinct_count, count(value_num) AS n, sum(value_num) AS total,"
           f" sum(value_num * value_num) AS total_sq, min(value_num) AS minimum,"
           f" max(value_num) AS maximum, min({column}) AS first, max({column}) AS last"
           f" FROM history WHERE {where} GROUP BY 1, 2, 3, 4"
           f" ORDER BY entity_id, name, dataset_id, period")
    return _series(conn.execute(text(sql).bindparams(*binds), params), times=True)


def rollup_aggregates(conn: Connection, entity_ids: Sequence[str], names: Sequence[str] | None,
                      start: datetime | None, end: datetime | None, *, origin: datetime,
                      step_us: int | None, figures: Iterable[str] = ROLLUP_FIGURES,
                      ) -> list[PeriodSeries]:
    """The same figures (without distinctCount) from ``rollup_hourly``: numeric values only.

    Exact only when ``start``, ``end``, ``origin`` and ``step_us`` are whole hours.
    ``figures`` names the columns of ROLLUP_FIGURES the caller uses (counts always come);
    PostgreSQL leaves the others out (None), which halves an hourly page's query for avg.
    """
    if not entity_ids:
        return []
    dialect = conn.dialect.name
    where, params, binds = _filters("hour", entity_ids, names, start, end, dialect)
    period = _period_expr(_epoch_s("hour", dialect)) if step_us is not None else "0"
    params.update(origin=micros(origin) // 1_000_000, step=(step_us or 1_000_000) // 1_000_000)
    if dialect == "postgresql":
        ids = list(dict.fromkeys(entity_ids))
        wanted = [f for f in ROLLUP_FIGURES if f in set(figures)]
        days, any_hourly = _rollup_days(
            conn, ids, names, start, end, origin_s=params["origin"],
            step_s=params["step"] if step_us is not None else None, figures=wanted)
        hourly = []
        if not days or any_hourly:
            hourly = _rollup_postgres(conn, ids, where, params, period,
                                      hourly=step_us == 3_600_000_000, figures=wanted)
        return _with_days(hourly, days, ids) if days else hourly
    sql = (f"SELECT entity_id, name, dataset_id, {period} AS period, sum(n) AS instances,"
           f" NULL AS distinct_count, sum(n) AS n, sum(total) AS total,"
           f" sum(total_sq) AS total_sq, min(minimum) AS minimum, max(maximum) AS maximum,"
           f" NULL AS first, NULL AS last FROM rollup_hourly WHERE {where}"
           " GROUP BY 1, 2, 3, 4"
           f" ORDER BY entity_id, name, dataset_id, period")
    return _series(conn.execute(text(sql).bindparams(*binds), params), times=False)


def _rollup_postgres(conn: Connection, ids: list[str], where: str, params: dict[str, Any],
                     period: str, *, hourly: bool, figures: list[str]) -> list[PeriodSeries]:
    """rollup_aggregates on PostgreSQL: one primary-key range scan per entity of the page.

    Left to itself the planner reads every sensor's hours of the range through
    ix_rollup_hourly_hour and keeps one page's. Each entity's periods come back as
    arrays in one row per attribute and datasetId (1,000 rows for a page instead of
    24,000); hourly periods are rollup rows as they are, with nothing to group.
    (The engine turns JIT off: the per-entity estimates add up past its threshold, and
    compiling cost about as much as the whole query.)
    """
    params["ids"] = ids
    # _filters' first clause picks the entities; here each comes from the lateral join.
    prefix = "entity_id = ANY(:ids)"
    assert where.startswith(prefix), where
    inner = "r.entity_id = e.id" + where[len(prefix):]
    columns = ["n", *figures]
    if hourly:
        source = (f"SELECT name, dataset_id, {period} AS period, {', '.join(columns)}"
                  f" FROM rollup_hourly r WHERE {inner}"
                  " ORDER BY r.name, r.hour")  # ix_rollup_hourly_by_hour's order
    else:
        combined = ", ".join(f"{ROLLUP_FIGURES.get(c, 'sum')}({c}) AS {c}" for c in columns)
        source = (f"SELECT name, dataset_id, {period} AS period, {combined}"
                  f" FROM rollup_hourly r WHERE {inner} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    arrays = ", ".join(f"array_agg({c}) AS {c}" for c in ["period", *columns])
    sql = (f"SELECT e.pos, g.name, g.dataset_id, g.{', g.'.join(['period', *columns])}"
           " FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS e(id, pos)"
           f" CROSS JOIN LATERAL (SELECT name, dataset_id, {arrays}"
           f" FROM ({source}) AS p GROUP BY 1, 2) AS g"
           " ORDER BY e.pos, g.name, g.dataset_id")
    found = []
    for pos, name, dataset_id, periods, *counted in conn.execute(text(sql), params).all():
        if periods != sorted(periods):
            # array_agg follows the ordered subquery in practice; sort should it not.
            rows = sorted(zip(periods, *counted, strict=True))
            periods, *counted = map(list, zip(*rows, strict=True))
        by_column = dict(zip(columns, map(tuple, counted), strict=True))
        empty = (None,) * len(periods)
        n = by_column["n"]
        found.append(PeriodSeries(
            ids[pos - 1], name, dataset_id, tuple(periods), n, empty, n,
            by_column.get("total", empty), by_column.get("total_sq", empty),
            by_column.get("minimum", empty), by_column.get("maximum", empty), empty, empty))
    return found


def _rollup_days(conn: Connection, ids: list[str], names: Sequence[str] | None,
                 start: datetime | None, end: datetime | None, *, origin_s: int,
                 step_s: int | None, figures: list[str]) -> tuple[list[PeriodSeries], bool]:
    """The compacted day rows (``urbanhub.store.rollups``) of these entities in [start, end),
    one series per row, in the order of ``ids``, then attribute, datasetId and day; and
    whether rollup_hourly has any hour in the range (when there are day rows): if not, the
    per-entity scan of the hourly rows, which would find nothing, is skipped.

    Fetched in binary straight from psycopg: its C loaders parse the arrays in half the
    time of text, and SQLAlchemy's ARRAY processing cost more than the query.
    """
    params: dict[str, Any] = {"ids": ids, "origin": origin_s}
    clauses = ["d.entity_id = e.id"]
    hours = ["true"]
    if names is not None:
        clauses.append("d.name = ANY(%(names)s)")
        params["names"] = list(names)
    if start is not None:
        clauses.append("d.day > %(first)s")
        hours.append("hour >= %(start)s")
        params.update(first=start - rollups.DAY, start=start)
    if end is not None:
        clauses.append("d.day < %(end)s")
        hours.append("hour < %(end)s")
        params["end"] = end
    sql = ("SELECT e.id, d.name, d.dataset_id, CAST(date_part('epoch', d.day) AS bigint),"
           f" d.hours, d.n{''.join(f', d.{f}' for f in figures)},"
           f" EXISTS (SELECT 1 FROM rollup_hourly WHERE {' AND '.join(hours)})"
           " FROM unnest(CAST(%(ids)s AS text[])) WITH ORDINALITY AS e(id, pos)"
           f" JOIN rollup_daily d ON {' AND '.join(clauses)}"
           " ORDER BY e.pos, d.name, d.dataset_id, d.day")
    with conn.connection.driver_connection.cursor(binary=True) as cursor:  # type: ignore[union-attr]
        rows = cursor.execute(sql, params).fetchall()
    start_s = micros(start) // 1_000_000 if start is not None else None
    end_s = micros(end) // 1_000_000 if end is not None else None
    # Most rows of a page share their day and hours: where they fall is worked out once.
    layouts: dict[tuple[int, tuple[int, ...]],
                  tuple[tuple[int, ...], list[int] | None, tuple[None, ...]]] = {}
    picks = [figures.index(f) if f in figures else None for f in ROLLUP_FIGURES]
    found = []
    for entity_id, name, dataset_id, day_s, hours, n, *columns, _ in rows:
        key = (day_s, tuple(hours))
        layout = layouts.get(key)
        if layout is None:
            moments = [day_s + hour * 3600 for hour in hours]
            inside = [i for i, moment in enumerate(moments) if (
                start_s is None or moment >= start_s) and (end_s is None or moment < end_s)]
            layout = layouts[key] = (
                tuple((moments[i] - origin_s) // step_s if step_s else 0 for i in inside),
                None if len(inside) == len(moments) else inside, (None,) * len(inside))
        periods, cut, empty = layout
        if not periods:
            continue
        if cut is not None:  # the range ends inside this day
            n = [n[i] for i in cut]
            columns = [[column[i] for i in cut] for column in columns]
        counts = tuple(n)
        total, total_sq, minimum, maximum = (
            empty if pick is None else tuple(columns[pick]) for pick in picks)
        series = PeriodSeries(entity_id, name, dataset_id, periods, counts, empty, counts,
                              total, total_sq, minimum, maximum, empty, empty)
        # Periods longer than an hour take several hours of the row: fold them into one.
        found.append(series if step_s == 3600 else _combined([series]))
    return found, bool(rows and rows[0][-1])


def _with_days(hourly: list[PeriodSeries], days: list[PeriodSeries],
               ids: list[str]) -> list[PeriodSeries]:
    """Hourly-table series and day-row series as one series per entity, attribute and
    datasetId, in _rollup_postgres' order. A series usually comes from one source; a late
    reading of a compacted day puts an hour in both, and its figures then add up."""
    def key(series: PeriodSeries) -> tuple[str, str, str]:
        return series.entity_id, series.name, series.dataset_id

    if not hourly:  # days come in key order, one row a day for most series
        return [parts[0] if len(parts) == 1 else _combined(parts)
                for parts in (list(group) for _, group in groupby(days, key=key))]
    parts: dict[tuple[str, str, str], list[PeriodSeries]] = {}
    for series in (*days, *hourly):
        parts.setdefault(key(series), []).append(series)
    position = {entity_id: number for number, entity_id in enumerate(ids)}
    return [_combined(parts[k]) for k in sorted(
        parts, key=lambda k: (position[k[0]], k[1], k[2]))]


def _combined(parts: list[PeriodSeries]) -> PeriodSeries:
    """One series from parts of it, oldest period first, each period's figures combined.
    Parts one after the other without a shared period (the days of hourly periods) are
    joined as they are."""
    only = parts[0]
    if len(parts) == 1 and all(a < b for a, b in pairwise(only.periods)):
        return only
    if all(a.periods[-1] < b.periods[0] for a, b in pairwise(parts)) and all(
            a < b for part in parts for a, b in pairwise(part.periods)):
        periods = tuple(period for part in parts for period in part.periods)
        n, total, total_sq, minimum, maximum = (
            tuple(value for part in parts for value in getattr(part, column))
            for column in ("n", "total", "total_sq", "minimum", "maximum"))
    else:
        combined: dict[int, list[Any]] = {}
        for part in parts:
            for at, period in enumerate(part.periods):
                figures = (part.n[at], part.total[at], part.total_sq[at], part.minimum[at],
                           part.maximum[at])
                seen = combined.get(period)
                combined[period] = list(figures) if seen is None else [
                    seen[0] + figures[0], _plus(seen[1], figures[1]),
                    _plus(seen[2], figures[2]), _least(seen[3], figures[3]),
                    _greatest(seen[4], figures[4])]
        periods = tuple(sorted(combined))
        n, total, total_sq, minimum, maximum = (
            tuple(combined[p][column] for p in periods) for column in range(5))
    empty = (None,) * len(periods)
    return PeriodSeries(only.entity_id, only.name, only.dataset_id, periods, n, empty, n,
                        total, total_sq, minimum, maximum, empty, empty)


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _least(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else min(a, b)


def _greatest(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)
