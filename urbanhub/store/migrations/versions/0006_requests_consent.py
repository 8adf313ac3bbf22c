"""Data-use requests, their decisions and grants; consent records; datasets' subject attribute.

``datasets.subject_attribute`` is added as a nullable column with a plain ``ALTER TABLE``
on both backends (no table rebuild on SQLite). Existing datasets get none, which is valid
unless their legal basis is consent. Nothing can say which attribute of such a dataset
holds the data subject, so it gets ``UNDECLARED``, an attribute no entity has: no entity
names a subject who consented, so the data is used for nothing (failing closed, as the
hub did before consent was recorded at all) until the CDO declares the real attribute.
Refusing to upgrade instead would leave SQLite half-migrated when another branch's DDL
ran first, as SQLite does not roll DDL back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from urbanhub.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


#: The subject attribute given to consent-based datasets that existed before this revision.
UNDECLARED = "urn:urbanhub:attribute:subject-attribute-undeclared"


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("subject_attribute", sa.Text))
    op.execute(sa.text("UPDATE datasets SET subject_attribute = :undeclared "
                       "WHERE legal_basis = 'consent'").bindparams(undeclared=UNDECLARED))
    op.create_table(
        "data_use_requests",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("requester", sa.Text, nullable=False),
        sa.Column("organisation", sa.Text, nullable=False),
        sa.Column("grantee_role", sa.Text),
        sa.Column("datasets", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("duration", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("filed_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
    )
    op.create_index("ix_data_use_requests_organisation", "data_use_requests",
                    ["organisation"])
    op.create_index("ix_data_use_requests_status", "data_use_requests", ["status"])
    op.create_table(
        "data_use_decisions",
        sa.Column("request_id", sa.Text, sa.ForeignKey("data_use_requests.id"),
                  primary_key=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("decided_at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("pseudonymised", sa.Boolean),
        sa.Column("min_group_size", sa.Integer),
        sa.Column("dp_epsilon", sa.Float),
        sa.Column("duration", sa.Text),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, sa.ForeignKey("data_use_requests.id"),
                  nullable=False),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("grantee_organisation", sa.Text),
        sa.Column("grantee_role", sa.Text),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("pseudonymised", sa.Boolean, nullable=False),
        sa.Column("min_group_size", sa.Integer),
        sa.Column("dp_epsilon", sa.Float),
        sa.Column("valid_from", UTCDateTime, nullable=False),
        sa.Column("valid_until", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("revoked_by", sa.Text),
        sa.Column("revocation_reason", sa.Text),
    )
    op.create_index("ix_grants_request_id", "grants", ["request_id"])
    op.create_index("ix_grants_grantee_organisation", "grants", ["grantee_organisation"])
    op.create_table(
        "grant_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("granted_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("withdrawn_at", UTCDateTime),
        sa.Column("withdrawal_source", sa.Text),
        sa.Column("withdrawn_by", sa.Text),
    )
    op.create_index("ix_consents_purpose_subject", "consents", ["purpose", "subject"])
    op.create_index("ix_consents_subject", "consents", ["subject"])


def downgrade() -> None:
    for table in ("consents", "grant_revision", "grants", "data_use_decisions",
                  "data_use_requests"):
        op.drop_table(table)  # their indexes go with them
    # A plain DROP COLUMN (SQLite 3.35+), as 0005 does, rather than a table rebuild.
    op.execute("ALTER TABLE datasets DROP COLUMN subject_attribute")
