"""split payments: the part of a sale already paid in cash

Revision ID: 0011_split_payments
Revises: 0010_tips
Create Date: 2026-12-02 13:45:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0011_split_payments"
down_revision = "0010_tips"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sales", sa.Column("cash_part", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sales") as batch:
        batch.drop_column("cash_part")
