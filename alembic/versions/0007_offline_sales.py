"""offline sales, device queues, offline periods, earlier product prices

Revision ID: 0007_offline_sales
Revises: 0006_ops_processes
Create Date: 2026-12-02 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import caja_core.db.base
from alembic import op

revision = "0007_offline_sales"
down_revision = "0006_ops_processes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "offline_devices",
        sa.Column("register_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("unsynced", sa.Integer(), nullable=False),
        sa.Column("reported_by", sa.Integer(), nullable=True),
        sa.Column("reported_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["register_id"], ["cash_registers.id"], name=op.f("fk_offline_devices_register_id_cash_registers")
        ),
        sa.ForeignKeyConstraint(["reported_by"], ["users.id"], name=op.f("fk_offline_devices_reported_by_users")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_offline_devices_venue_id_venues")),
        sa.PrimaryKeyConstraint("register_id", "device_id", name=op.f("pk_offline_devices")),
    )
    with op.batch_alter_table("offline_devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offline_devices_venue_id"), ["venue_id"], unique=False)

    op.create_table(
        "product_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("until", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], name=op.f("fk_product_prices_product_id_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_prices")),
    )
    with op.batch_alter_table("product_prices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_product_prices_product_id"), ["product_id"], unique=False)

    op.create_table(
        "offline_periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("register_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sales", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_offline_periods_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["register_id"], ["cash_registers.id"], name=op.f("fk_offline_periods_register_id_cash_registers")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["cash_sessions.id"], name=op.f("fk_offline_periods_session_id_cash_sessions")
        ),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_offline_periods_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_periods")),
        sa.UniqueConstraint(
            "venue_id", "device_id", "started_at", name=op.f("uq_offline_periods_venue_id_device_id_started_at")
        ),
    )
    with op.batch_alter_table("offline_periods", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offline_periods_register_id"), ["register_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offline_periods_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offline_periods_venue_id"), ["venue_id"], unique=False)

    op.create_table(
        "offline_sales",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("register_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("cashier_id", sa.Integer(), nullable=False),
        sa.Column("local_time", sa.String(length=40), nullable=False),
        sa.Column("sold_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("claimed_total", sa.BigInteger(), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("sale_id", sa.Integer(), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("received_by", sa.Integer(), nullable=False),
        sa.Column("received_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cashier_id"], ["users.id"], name=op.f("fk_offline_sales_cashier_id_users")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_offline_sales_incident_id_incidents")),
        sa.ForeignKeyConstraint(["received_by"], ["users.id"], name=op.f("fk_offline_sales_received_by_users")),
        sa.ForeignKeyConstraint(
            ["register_id"], ["cash_registers.id"], name=op.f("fk_offline_sales_register_id_cash_registers")
        ),
        sa.ForeignKeyConstraint(["sale_id"], ["sales.id"], name=op.f("fk_offline_sales_sale_id_sales")),
        sa.ForeignKeyConstraint(
            ["session_id"], ["cash_sessions.id"], name=op.f("fk_offline_sales_session_id_cash_sessions")
        ),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_offline_sales_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_sales")),
        sa.UniqueConstraint("venue_id", "idempotency_key", name=op.f("uq_offline_sales_venue_id_idempotency_key")),
    )
    with op.batch_alter_table("offline_sales", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offline_sales_register_id"), ["register_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offline_sales_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offline_sales_venue_id"), ["venue_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("offline_sales", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offline_sales_venue_id"))
        batch_op.drop_index(batch_op.f("ix_offline_sales_session_id"))
        batch_op.drop_index(batch_op.f("ix_offline_sales_register_id"))

    op.drop_table("offline_sales")
    with op.batch_alter_table("offline_periods", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offline_periods_venue_id"))
        batch_op.drop_index(batch_op.f("ix_offline_periods_session_id"))
        batch_op.drop_index(batch_op.f("ix_offline_periods_register_id"))

    op.drop_table("offline_periods")
    with op.batch_alter_table("product_prices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_product_prices_product_id"))

    op.drop_table("product_prices")
    with op.batch_alter_table("offline_devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offline_devices_venue_id"))

    op.drop_table("offline_devices")
