"""Device registry: owner, make, location, status, risk tier, approval and device keys.

Existing devices are migrated as they were working: status ``active``, each measured
attribute given the category its name implies, the tier derived from those categories,
no owner (the CDO assigns one) and no device key (rotate one to get it). A high-tier
device that existed before stays active, without an approval: suspending and reactivating
it, or overriding its tier, puts it in the privacy board's queue.

Columns are added nullable, filled in, then ``status`` and ``risk_tier`` made NOT NULL;
on SQLite that last step rebuilds ``devices``, which nothing references by foreign key.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-28
"""

import json

import sqlalchemy as sa
from alembic import op

from urbanhub.model.devices import DeviceStatus, derive_tier, infer_category
from urbanhub.store.tables import UTCDateTime

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

_NEW_COLUMNS = (
    ("owner", sa.Text), ("manufacturer", sa.Text), ("model", sa.Text), ("location", sa.Text),
    ("status", sa.Text), ("risk_tier", sa.Text), ("tier_override", sa.Text),
    ("tier_justification", sa.Text), ("tier_overridden_by", sa.Text),
    ("tier_overridden_at", UTCDateTime), ("approved_by", sa.Text), ("approved_at", UTCDateTime),
    ("credential_id", sa.Text), ("credential_hash", sa.Text),
    ("broker_password_hash", sa.Text), ("credential_issued_at", UTCDateTime),
)


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name, kind in _NEW_COLUMNS:
            batch.add_column(sa.Column(name, kind))
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, entity_type, attributes FROM devices")).all()
    for row in rows:
        attributes = json.loads(row.attributes)
        for spec in attributes.values():
            spec["category"] = infer_category(row.entity_type, spec["name"], spec["type"]).value
        tier = derive_tier(spec["category"] for spec in attributes.values())
        connection.execute(
            sa.text("UPDATE devices SET attributes = :attributes, status = :status, "
                    "risk_tier = :tier WHERE id = :id"),
            {"attributes": json.dumps(attributes), "status": DeviceStatus.ACTIVE.value,
             "tier": tier.value, "id": row.id})
    with op.batch_alter_table("devices") as batch:
        batch.alter_column("status", existing_type=sa.Text, nullable=False)
        batch.alter_column("risk_tier", existing_type=sa.Text, nullable=False)
    op.create_index("ix_devices_owner", "devices", ["owner"])
    op.create_index("ix_devices_credential_id", "devices", ["credential_id"], unique=True)
    op.create_table(
        "device_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drops the governance columns; the attributes' categories stay in their JSON (older
    code ignores them)."""
    op.drop_table("device_revision")
    op.drop_index("ix_devices_credential_id", table_name="devices")
    op.drop_index("ix_devices_owner", table_name="devices")
    with op.batch_alter_table("devices") as batch:
        for name, _ in reversed(_NEW_COLUMNS):
            batch.drop_column(name)
