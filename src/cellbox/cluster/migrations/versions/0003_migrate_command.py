"""Live migration: ``migrate`` is a command kind.

Revision ID: 0003
Revises: 0001 (a sibling branch adds 0002; the lead's merge re-chains this one after it)
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE commands DROP CONSTRAINT commands_kind_check")
    op.execute("ALTER TABLE commands ADD CONSTRAINT commands_kind_check "
               "CHECK (kind IN ('create', 'destroy', 'suspend', 'resume', 'migrate'))")


def downgrade() -> None:
    op.execute("DELETE FROM commands WHERE kind = 'migrate'")
    op.execute("ALTER TABLE commands DROP CONSTRAINT commands_kind_check")
    op.execute("ALTER TABLE commands ADD CONSTRAINT commands_kind_check "
               "CHECK (kind IN ('create', 'destroy', 'suspend', 'resume'))")
