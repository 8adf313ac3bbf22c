"""Covering index on the hourly rollups (PostgreSQL).

Temporal aggregates read one sensor's hours at a time; with the figures in the index,
those reads are index-only scans instead of one heap page per hour (rollup rows are laid
out hour by hour, as ingest writes them). SQLite's primary key is the table itself
(WITHOUT ROWID is not needed at this size), so it gets nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_rollup_hourly_covering ON rollup_hourly (entity_id, name,"
                   " dataset_id, hour) INCLUDE (n, total, total_sq, minimum, maximum)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_rollup_hourly_covering")
