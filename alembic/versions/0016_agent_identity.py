"""one agent process serves a register: which one holds it (and since when), and another one it refused

Revision ID: 0016_agent_identity
Revises: 0015_sales_waiting
Create Date: 2026-12-03 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import caja_core.db.base
from alembic import op

revision = "0016_agent_identity"
down_revision = "0015_sales_waiting"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cash_registers", sa.Column("agent_instance", sa.String(64), nullable=True))
    op.add_column(
        "cash_registers",
        sa.Column("agent_instance_seen_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "cash_registers",
        sa.Column(
            "agent_rival", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("cash_registers") as batch:
        batch.drop_column("agent_rival")
        batch.drop_column("agent_instance_seen_at")
        batch.drop_column("agent_instance")
