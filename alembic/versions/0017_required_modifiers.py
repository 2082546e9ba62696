"""required modifier groups: a modifier's group ("Tamaño") and whether one of the group must be chosen

Revision ID: 0017_required_modifiers
Revises: 0016_agent_identity
Create Date: 2026-12-03 14:45:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0017_required_modifiers"
down_revision = "0016_agent_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("modifiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_name", sa.String(length=40), server_default="", nullable=False))
        batch_op.add_column(sa.Column("required", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("modifiers", schema=None) as batch_op:
        batch_op.drop_column("required")
        batch_op.drop_column("group_name")
