"""Identities: organisations, members and their roles, API keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from urbanhub.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "members",
        sa.Column("subject", sa.Text, primary_key=True),
        sa.Column("organisation_id", sa.Text, sa.ForeignKey("organisations.id"),
                  nullable=False),
        sa.Column("oidc_issuer", sa.Text),
        sa.Column("oidc_subject", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_members_oidc"),
    )
    op.create_index("ix_members_organisation_id", "members", ["organisation_id"])
    op.create_table(
        "member_roles",
        sa.Column("subject", sa.Text, sa.ForeignKey("members.subject", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("subject", "role"),
    )
    op.create_index("ix_member_roles_role", "member_roles", ["role"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("subject", sa.Text, sa.ForeignKey("members.subject"), nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
    )
    op.create_index("ix_api_keys_subject", "api_keys", ["subject"])


def downgrade() -> None:
    for table in ("api_keys", "member_roles", "members", "organisations"):
        op.drop_table(table)  # their indexes go with them
