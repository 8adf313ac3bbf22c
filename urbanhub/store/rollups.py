"""Day rows of the hourly rollups on PostgreSQL: compaction and expiry (``history`` reads
them with the hourly rows).

Compaction *moves* the hours of a past day from ``rollup_hourly`` into one ``rollup_daily``
row per sensor, attribute and datasetId, so a city-wide day of hourly aggregates reads
10,000 rows instead of 240,000. An hour is in one table or the other, with one exception:
a late reading of a compacted day starts a new hourly row (ingest does not know about
day rows). Reads therefore add up both tables, and the next compaction of that day merges
the late hour into the day row. Nothing is invalidated and ingest is unchanged.

Statements that take apart or merge the arrays are SQL text: SQLAlchemy Core has no
spelling for unnest WITH ORDINALITY or for ON CONFLICT updates from a subquery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, func, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from urbanhub.store.tables import rollup_daily

DAY = timedelta(days=1)
_FIGURES = ("total", "total_sq", "minimum", "maximum")

# One day's hours, moved; ON CONFLICT merges them into the day row compacted before (its
# late hours), hour by hour: counts and sums add, extremes combine.
_COMPACT = text(
    "WITH moved AS (DELETE FROM rollup_hourly WHERE hour >= :day AND hour < :next"
    " RETURNING entity_id, name, dataset_id, hour, n, total, total_sq, minimum, maximum),"
    " folded AS (SELECT entity_id, name, dataset_id,"
    " array_agg(CAST((date_part('epoch', hour) - :day_s) / 3600 AS smallint) ORDER BY hour)"
    " AS hours, array_agg(n ORDER BY hour) AS n, array_agg(total ORDER BY hour) AS total,"
    " array_agg(total_sq ORDER BY hour) AS total_sq,"
    " array_agg(minimum ORDER BY hour) AS minimum, array_agg(maximum ORDER BY hour) AS maximum"
    " FROM moved GROUP BY 1, 2, 3),"
    " written AS (INSERT INTO rollup_daily AS d (entity_id, name, dataset_id, day, hours, n,"
    " total, total_sq, minimum, maximum) SELECT entity_id, name, dataset_id, :day, hours, n,"
    " total, total_sq, minimum, maximum FROM folded"
    " ON CONFLICT (entity_id, name, day, dataset_id) DO UPDATE SET"
    " (hours, n, total, total_sq, minimum, maximum) = (SELECT array_agg(h ORDER BY h),"
    " array_agg(n ORDER BY h), array_agg(total ORDER BY h), array_agg(total_sq ORDER BY h),"
    " array_agg(minimum ORDER BY h), array_agg(maximum ORDER BY h) FROM (SELECT h,"
    " CAST(sum(n) AS integer) AS n, sum(t) AS total, sum(s) AS total_sq, min(lo) AS minimum,"
    " max(hi) AS maximum FROM unnest(d.hours || excluded.hours, d.n || excluded.n,"
    " d.total || excluded.total, d.total_sq || excluded.total_sq,"
    " d.minimum || excluded.minimum, d.maximum || excluded.maximum)"
    " AS u(h, n, t, s, lo, hi) GROUP BY h) AS merged) RETURNING 1)"
    " SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM written)")


@dataclass(frozen=True)
class CompactedDay:
    """One day's compaction: hourly rows moved, and day rows written (new or merged)."""

    day: datetime
    hours: int
    rows: int


def day_start(moment: datetime) -> datetime:
    """The UTC midnight at or before ``moment``."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def days_to_compact(conn: Connection, before: datetime) -> list[datetime]:
    """The UTC days, oldest first, that have hourly rows and end by ``before``."""
    days = conn.execute(text(
        "SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM rollup_hourly"
        " WHERE hour < :before ORDER BY 1"), {"before": day_start(before)}).scalars()
    return [day.astimezone(UTC) for day in days]


def compact_day(conn: Connection, day: datetime) -> CompactedDay:
    """Move the hourly rows of the UTC ``day`` into day rows, in the caller's transaction."""
    day = day_start(day)
    moved, written = conn.execute(_COMPACT, {
        "day": day, "next": day + DAY, "day_s": int(day.timestamp())}).one()
    return CompactedDay(day, int(moved), int(written))


# --- retention and erasure ----------------------------------------------------------------

def expire_days(conn: Connection, owned: ColumnElement[bool], cut: datetime, *,
                delete_rows: bool) -> int:
    """Remove (or count) the hours before ``cut`` of the day rows ``owned`` selects: whole
    rows when their last hour expired, else the expired hours of the row ``cut`` falls in.
    Returns the hours removed."""
    table = rollup_daily
    before = func.rollup_hours_before(table.c.day, table.c.hours, cut)
    touched = (table.c.day < cut, owned)
    hours = int(conn.scalar(select(func.coalesce(func.sum(before), 0)).where(*touched)) or 0)
    if delete_rows and hours:
        last_hour = table.c.day + func.make_interval(0, 0, 0, 0, table.c.hours[
            func.cardinality(table.c.hours)])
        conn.execute(delete(table).where(*touched, last_hour < cut))
        conn.execute(update(table).where(*touched, before > 0).values({
            column: func.rollup_hours_from(table.c.day, table.c.hours, table.c[column], cut)
            for column in ("hours", "n", *_FIGURES)}))
    return hours


def delete_days_of(conn: Connection, among: ColumnElement[bool]) -> int:
    """Delete the day rows ``among`` selects (by entity); returns the hours they held."""
    gone = delete(rollup_daily).where(among).returning(
        func.cardinality(rollup_daily.c.hours).label("hours")).cte("gone")
    return int(conn.scalar(select(func.coalesce(func.sum(gone.c.hours), 0))) or 0)
