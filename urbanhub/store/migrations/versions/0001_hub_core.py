"""Hub core: entities, current attributes, history, hourly rollups, devices, dead letters.

On PostgreSQL ``history`` is range-partitioned by ``observed_at`` (one partition a month,
created on demand by the history writer) so that retention can drop whole partitions, and
a PostGIS geometry column backs geo-queries when the extension is installed.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from urbanhub.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.create_table(
        "entities",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("types", sa.Text, nullable=False),
        sa.Column("scope", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
        sa.Column("min_lon", sa.Float), sa.Column("min_lat", sa.Float),
        sa.Column("max_lon", sa.Float), sa.Column("max_lat", sa.Float),
    )
    op.create_index("ix_entities_bbox", "entities", ["min_lon", "min_lat"])
    op.create_table(
        "entity_types",
        sa.Column("entity_id", sa.Text, sa.ForeignKey("entities.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "type"),
    )
    op.create_index("ix_entity_types_type", "entity_types", ["type", "entity_id"])
    op.create_table(
        "attributes",
        sa.Column("entity_id", sa.Text, sa.ForeignKey("entities.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("dataset_id", sa.Text, nullable=False),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("observed_at", UTCDateTime),
        sa.Column("value_num", sa.Float),
        sa.PrimaryKeyConstraint("entity_id", "name", "dataset_id"),
    )
    op.create_index("ix_attributes_name", "attributes", ["name"])
    history_columns: list[sa.schema.SchemaItem] = [
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("dataset_id", sa.Text, nullable=False),
        sa.Column("observed_at", UTCDateTime, nullable=False),
        sa.Column("value_num", sa.Float),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "name", "dataset_id", "observed_at"),
    ]
    if postgres:
        op.create_table("history", *history_columns,
                        postgresql_partition_by="RANGE (observed_at)")
        op.execute("CREATE INDEX ix_history_observed_at ON history USING brin (observed_at)")
    else:
        op.create_table("history", *history_columns)
    op.create_table(
        "rollup_hourly",
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("dataset_id", sa.Text, nullable=False),
        sa.Column("hour", UTCDateTime, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.Column("total_sq", sa.Float, nullable=False),
        sa.Column("minimum", sa.Float, nullable=False),
        sa.Column("maximum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "name", "dataset_id", "hour"),
    )
    op.create_index("ix_rollup_hourly_hour", "rollup_hourly", ["hour"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("entity_id", sa.Text, nullable=False, unique=True),
        sa.Column("entity_type", sa.Text, nullable=False),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("transport", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("topic", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])
    if postgres and bind.exec_driver_sql(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").first():
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        op.execute("ALTER TABLE entities ADD COLUMN geom geometry(Geometry, 4326)")
        op.execute("CREATE INDEX ix_entities_geom ON entities USING gist (geom)")


def downgrade() -> None:
    for table in ("dead_letters", "devices", "rollup_hourly", "history", "attributes",
                  "entity_types", "entities"):
        op.drop_table(table)
