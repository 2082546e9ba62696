"""process heartbeats (app instances and workers)

Revision ID: 0006_ops_processes
Revises: 0005_payments_devices
Create Date: 2026-11-27 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import caja_core.db.base
from alembic import op

revision = "0006_ops_processes"
down_revision = "0005_payments_devices"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ops_processes",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("host", sa.String(length=120), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("started_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_beat_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("workers", JSON, nullable=False),
        sa.Column("backup", JSON, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ops_processes")),
    )
    with op.batch_alter_table("ops_processes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ops_processes_last_beat_at"), ["last_beat_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ops_processes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_processes_last_beat_at"))
    op.drop_table("ops_processes")
