"""tips on sales, their payment attempts and the sessions' running totals

Revision ID: 0010_tips
Revises: 0009_discounts
Create Date: 2026-12-02 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0010_tips"
down_revision = "0009_discounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tip", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tip", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("cash_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tip_count", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("tip_total", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("cash_tip_total", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("cash_sessions", schema=None) as batch_op:
        batch_op.drop_column("cash_tip_total")
        batch_op.drop_column("tip_total")
        batch_op.drop_column("tip_count")
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.drop_column("tip")
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.drop_column("tip")
