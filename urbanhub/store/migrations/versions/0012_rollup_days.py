"""Day rows of the hourly rollups (PostgreSQL): one row per sensor, attribute, datasetId and
UTC day, its hours in arrays.

A day of hourly aggregates for 10,000 sensors read 240,000 rollup rows; PostgreSQL spends
about a microsecond on each and psycopg and Python more on what it returns. Compaction
(``urbanhub.store.rollups``) moves the hours of complete past days here, so such a read
takes 10,000 rows. SQLite keeps every hour in ``rollup_hourly``: it has no arrays, and an
embedded hub's history is small enough not to need them.

``rollup_hours_before`` and ``rollup_hours_from`` let retention count and trim the hours
of a day row the cut-off falls inside: SQLAlchemy cannot spell unnest WITH ORDINALITY.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE rollup_daily (entity_id text NOT NULL, name text NOT NULL,"
        " dataset_id text NOT NULL, day timestamptz NOT NULL, hours smallint[] NOT NULL,"
        " n integer[] NOT NULL, total float8[] NOT NULL, total_sq float8[] NOT NULL,"
        " minimum float8[] NOT NULL, maximum float8[] NOT NULL,"
        " PRIMARY KEY (entity_id, name, day, dataset_id))")
    op.execute("CREATE INDEX ix_rollup_daily_day ON rollup_daily (day)")
    op.execute(
        "CREATE FUNCTION rollup_hours_before(day timestamptz, hours smallint[],"
        " cut timestamptz) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS"
        " $$ SELECT count(*)::integer FROM unnest(hours) AS h"
        " WHERE day + h * interval '1 hour' < cut $$")
    op.execute(
        "CREATE FUNCTION rollup_hours_from(day timestamptz, hours smallint[],"
        " slots anyarray, cut timestamptz) RETURNS anyarray LANGUAGE sql IMMUTABLE"
        " PARALLEL SAFE AS $$ SELECT array_agg(s ORDER BY o) FROM unnest(hours, slots)"
        " WITH ORDINALITY AS u(h, s, o) WHERE day + h * interval '1 hour' >= cut $$")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION rollup_hours_from(timestamptz, smallint[], anyarray, timestamptz)")
    op.execute("DROP FUNCTION rollup_hours_before(timestamptz, smallint[], timestamptz)")
    op.execute("DROP TABLE rollup_daily")
