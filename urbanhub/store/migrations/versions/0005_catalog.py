"""Data catalog: purposes, datasets with their assignment rules, and each entity's dataset.

``entities.dataset_id`` is added NOT NULL with the uncatalogued dataset as its default,
which backfills existing rows in the same step: PostgreSQL 11+ stores such a default
without rewriting the table, and SQLite adds the column with ``ALTER TABLE`` (batch mode
sees nothing that needs the table rebuilt). A rebuild must be avoided on SQLite: dropping
the old ``entities`` with foreign keys on would cascade into ``attributes``.
The default stays, so a row written outside the hub lands in the internal uncatalogued
dataset rather than failing or going unnoticed. There is no foreign key to ``datasets``:
SQLite cannot add one with a non-null default, and the uncatalogued dataset is built into
the code rather than stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from urbanhub.model.catalog import UNCATALOGUED_ID
from urbanhub.store.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purposes",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("steward", sa.Text, nullable=False),
        sa.Column("classification", sa.Text, nullable=False),
        sa.Column("licence", sa.Text, nullable=False),
        sa.Column("theme", sa.Text),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("retention", sa.Text, nullable=False),
        sa.Column("update_frequency", sa.Text),
        sa.Column("purposes", sa.JSON, nullable=False),
        sa.Column("entity_types", sa.JSON, nullable=False),
        sa.Column("attribute_classes", sa.JSON, nullable=False),
        sa.Column("identifiers", sa.JSON, nullable=False),
        sa.Column("spatial_coverage", sa.JSON),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_datasets_owner", "datasets", ["owner"])
    op.create_table(
        "catalog_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("entities") as batch:
        batch.add_column(sa.Column("dataset_id", sa.Text, nullable=False,
                                   server_default=UNCATALOGUED_ID))
    op.create_index("ix_entities_dataset_id", "entities", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_entities_dataset_id", table_name="entities")
    # A plain DROP COLUMN (SQLite 3.35+), for the same reason the upgrade avoids a rebuild.
    op.execute("ALTER TABLE entities DROP COLUMN dataset_id")
    op.drop_table("catalog_revision")
    op.drop_index("ix_datasets_owner", table_name="datasets")
    op.drop_table("datasets")
    op.drop_table("purposes")
