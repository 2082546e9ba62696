"""fenced agent commands: fencing token, start-by expiry, claim and late-result application times

Revision ID: 0003_agent_fencing
Revises: 0002_printing
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

import caja_core.db.base
from alembic import op

revision = "0003_agent_fencing"
down_revision = "0002_printing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fence", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("start_by", caja_core.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("applied_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_agent_commands_attempt_id"), ["attempt_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agent_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_commands_attempt_id"))
        batch_op.drop_column("applied_at")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("start_by")
        batch_op.drop_column("fence")
