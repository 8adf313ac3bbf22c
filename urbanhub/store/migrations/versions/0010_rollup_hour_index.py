"""Rollup reads bounded by the hours asked for (PostgreSQL).

0003's covering index was keyed (entity_id, name, dataset_id, hour). Reads name no
datasetId (they want every one), so the B-tree could only bound a scan by entity: the
hour range became a filter applied to every hour the sensor ever had. One day of a
sensor with a year of rollups read 8,760 index entries per attribute to keep 24, and
the cost of a day's aggregate grew with the length of history. Keyed (entity_id, name,
hour) with datasetId among the included columns, the scan covers exactly the hours
asked for. It replaces the old index, so ingest maintains no more than before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_rollup_hourly_by_hour ON rollup_hourly (entity_id, name,"
                   " hour) INCLUDE (dataset_id, n, total, total_sq, minimum, maximum)")
        op.execute("DROP INDEX ix_rollup_hourly_covering")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_rollup_hourly_covering ON rollup_hourly (entity_id, name,"
                   " dataset_id, hour) INCLUDE (n, total, total_sq, minimum, maximum)")
        op.execute("DROP INDEX ix_rollup_hourly_by_hour")
