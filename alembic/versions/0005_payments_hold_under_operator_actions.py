"""payments hold under operator actions: attempts keep their device (settings snapshot, identity, fencing),
unique ticket series, heartbeat leases, breaker generations, recorded batch closes and terminal checks

Revision ID: 0005_payments_devices
Revises: 0004_money_controls
Create Date: 2026-12-02 06:31:31.700560
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import caja_core.db.base
from alembic import op

revision = "0005_payments_devices"
down_revision = "0004_money_controls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_devices",
        sa.Column("device_key", sa.String(length=160), nullable=False),
        sa.Column("provider_id", sa.String(length=40), nullable=False),
        sa.Column("identity", sa.String(length=160), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("clock_skew_s", sa.Float(), nullable=True),
        sa.Column("identified_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("device_key", name=op.f("pk_payment_devices")),
    )
    with op.batch_alter_table("payment_devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_devices_identity"), ["identity"], unique=False)

    op.create_table(
        "ticket_series",
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("instance", sa.String(length=80), nullable=False),
        sa.Column("started_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_ticket_series")),
    )
    op.create_table(
        "terminal_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("jornada_id", sa.Integer(), nullable=True),
        sa.Column("provider_id", sa.String(length=40), nullable=False),
        sa.Column("device_key", sa.String(length=160), nullable=False),
        sa.Column("device_identity", sa.String(length=160), nullable=True),
        sa.Column("device_label", sa.String(length=200), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("checked_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("since", caja_core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("terminal_count", sa.Integer(), nullable=True),
        sa.Column("terminal_total", sa.BigInteger(), nullable=True),
        sa.Column("caja_count", sa.Integer(), nullable=False),
        sa.Column("caja_total", sa.BigInteger(), nullable=False),
        sa.Column(
            "differences", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"), nullable=True
        ),
        sa.Column("message", sa.String(length=300), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["jornada_id"], ["jornadas.id"], name=op.f("fk_terminal_checks_jornada_id_jornadas")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_terminal_checks_user_id_users")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_terminal_checks_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminal_checks")),
    )
    with op.batch_alter_table("terminal_checks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminal_checks_jornada_id"), ["jornada_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminal_checks_venue_id"), ["venue_id"], unique=False)

    op.create_table(
        "terminal_closes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=True),
        sa.Column("jornada_id", sa.Integer(), nullable=True),
        sa.Column("register_id", sa.Integer(), nullable=True),
        sa.Column("provider_id", sa.String(length=40), nullable=False),
        sa.Column("device_key", sa.String(length=160), nullable=False),
        sa.Column("device_identity", sa.String(length=160), nullable=True),
        sa.Column("device_label", sa.String(length=200), nullable=False),
        sa.Column("closed_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("sales", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["jornada_id"], ["jornadas.id"], name=op.f("fk_terminal_closes_jornada_id_jornadas")),
        sa.ForeignKeyConstraint(
            ["register_id"], ["cash_registers.id"], name=op.f("fk_terminal_closes_register_id_cash_registers")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_terminal_closes_user_id_users")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_terminal_closes_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminal_closes")),
    )
    with op.batch_alter_table("terminal_closes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminal_closes_device_identity"), ["device_identity"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminal_closes_device_key"), ["device_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminal_closes_jornada_id"), ["jornada_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminal_closes_venue_id"), ["venue_id"], unique=False)

    op.drop_table("ticket_counters")
    with op.batch_alter_table("breaker_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("generation", sa.Integer(), server_default="0", nullable=False))

    with op.batch_alter_table("device_leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token", sa.String(length=32), server_default="", nullable=False))
        batch_op.add_column(sa.Column("beat", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("purpose", sa.String(length=20), server_default="charge", nullable=False))
        batch_op.add_column(sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "device_settings",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("device_identity", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("fence", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("needs_decision", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("resolved_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_payment_attempts_resolved_by_users"), "users", ["resolved_by"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_payment_attempts_resolved_by_users"), type_="foreignkey")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("needs_decision")
        batch_op.drop_column("fence")
        batch_op.drop_column("device_identity")
        batch_op.drop_column("device_settings")

    with op.batch_alter_table("device_leases", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("purpose")
        batch_op.drop_column("beat")
        batch_op.drop_column("token")

    with op.batch_alter_table("breaker_states", schema=None) as batch_op:
        batch_op.drop_column("generation")

    op.create_table(
        "ticket_counters",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("next_value", sa.BigInteger(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("updated_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ticket_counters")),
    )
    with op.batch_alter_table("terminal_closes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminal_closes_venue_id"))
        batch_op.drop_index(batch_op.f("ix_terminal_closes_jornada_id"))
        batch_op.drop_index(batch_op.f("ix_terminal_closes_device_key"))
        batch_op.drop_index(batch_op.f("ix_terminal_closes_device_identity"))

    op.drop_table("terminal_closes")
    with op.batch_alter_table("terminal_checks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminal_checks_venue_id"))
        batch_op.drop_index(batch_op.f("ix_terminal_checks_jornada_id"))

    op.drop_table("terminal_checks")
    op.drop_table("ticket_series")
    with op.batch_alter_table("payment_devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_devices_identity"))

    op.drop_table("payment_devices")
