"""Data lifecycle: quality rules per dataset and flags of readings that failed them.

Disposal needs no schema of its own: it reads each dataset's retention from ``datasets``,
drops or prunes ``history`` partitions and records its runs in the audit trail.
``quality_flags`` is sparse (a row only for a reading that failed a rule) and keyed like
``history``, so disposal prunes both with the same cut-offs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from urbanhub.store.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_rules",
        sa.Column("dataset_id", sa.Text, primary_key=True),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("modified_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "quality_flags",
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("dataset_id", sa.Text, nullable=False),
        sa.Column("observed_at", UTCDateTime, nullable=False),
        sa.Column("flags", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "name", "dataset_id", "observed_at"),
    )


def downgrade() -> None:
    op.drop_table("quality_flags")
    op.drop_table("quality_rules")
