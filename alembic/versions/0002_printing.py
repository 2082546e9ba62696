"""printers: per-register printer configuration and print jobs

Revision ID: 0002_printing
Revises: 0001
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

import caja_core.db.base
from alembic import op

revision = "0002_printing"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cash_registers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("printer_config", caja_core.db.base.JSONType, nullable=False, server_default="{}")
        )
    op.create_table(
        "print_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("register_id", sa.Integer(), nullable=True),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("sale_id", sa.Integer(), nullable=True),
        sa.Column("jornada_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("dedupe_key", sa.String(length=80), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("printer", sa.String(length=40), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["register_id"], ["cash_registers.id"], name=op.f("fk_print_jobs_register_id_cash_registers")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["cash_sessions.id"], name=op.f("fk_print_jobs_session_id_cash_sessions")
        ),
        sa.ForeignKeyConstraint(["sale_id"], ["sales.id"], name=op.f("fk_print_jobs_sale_id_sales")),
        sa.ForeignKeyConstraint(["jornada_id"], ["jornadas.id"], name=op.f("fk_print_jobs_jornada_id_jornadas")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_print_jobs_created_by_users")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_print_jobs_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_print_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_print_jobs_dedupe_key")),
    )
    with op.batch_alter_table("print_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_print_jobs_venue_id"), ["venue_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_print_jobs_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_print_jobs_sale_id"), ["sale_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("print_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_print_jobs_sale_id"))
        batch_op.drop_index(batch_op.f("ix_print_jobs_session_id"))
        batch_op.drop_index(batch_op.f("ix_print_jobs_venue_id"))
    op.drop_table("print_jobs")
    with op.batch_alter_table("cash_registers", schema=None) as batch_op:
        batch_op.drop_column("printer_config")
