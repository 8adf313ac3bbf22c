"""Tombstones of deleted entities, so their history keeps its dataset.

History outlives a deleted entity (the temporal API serves it), but the dataset of a
history row was found through the entity row: once that was gone, the history fell to the
uncatalogued dataset, with its retention (365 days) and its readers. Entities deleted
before this revision left no tombstone; their history stays uncatalogued.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from urbanhub.store.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entity_tombstones",
        sa.Column("entity_id", sa.Text, primary_key=True),
        sa.Column("dataset_id", sa.Text, nullable=False),
        sa.Column("types", sa.Text, nullable=False),
        sa.Column("deleted_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_entity_tombstones_dataset", "entity_tombstones", ["dataset_id"])


def downgrade() -> None:
    op.drop_table("entity_tombstones")
