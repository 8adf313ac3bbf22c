"""Join the two branches that grew from 0005: 0006 (data-use requests and consent) and the
line 0007 (device registry), 0008 (data lifecycle). They touch different tables, so
either order is right; this revision only makes them one history again, so ``upgrade
head`` has one head.

Revision ID: 0009
Revises: 0006, 0008
Create Date: 2026-11-30
"""

revision = "0009"
down_revision = ("0006", "0008")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: both parents' changes are already applied."""


def downgrade() -> None:
    """Nothing to undo: downgrading further undoes each parent."""
