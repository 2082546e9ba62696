"""ventas en espera kept with the sale: when it was left waiting (cleared once its end was seen)

Revision ID: 0015_sales_waiting
Revises: 0014_modifiers
Create Date: 2026-12-02 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa

import caja_core.db.base
from alembic import op

revision = "0015_sales_waiting"
down_revision = "0014_modifiers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sales", sa.Column("parked_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sales") as batch:
        batch.drop_column("parked_at")
