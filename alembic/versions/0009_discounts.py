"""discounts on sale lines and sales, with their reason and authorization

Revision ID: 0009_discounts
Revises: 0008_dashboard_totals
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

import caja_core.db.base
from alembic import op

revision = "0009_discounts"
down_revision = "0008_dashboard_totals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("discount_total", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("sale_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("discount", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("cash_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("discount_count", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("discount_total", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "sale_discounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("sale_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("authorized_by", sa.Integer(), nullable=True),
        sa.Column("created_at", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["authorized_by"], ["users.id"], name=op.f("fk_sale_discounts_authorized_by_users")),
        sa.ForeignKeyConstraint(["item_id"], ["sale_items.id"], name=op.f("fk_sale_discounts_item_id_sale_items")),
        sa.ForeignKeyConstraint(["sale_id"], ["sales.id"], name=op.f("fk_sale_discounts_sale_id_sales")),
        sa.ForeignKeyConstraint(
            ["session_id"], ["cash_sessions.id"], name=op.f("fk_sale_discounts_session_id_cash_sessions")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sale_discounts_user_id_users")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_sale_discounts_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sale_discounts")),
    )
    with op.batch_alter_table("sale_discounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sale_discounts_sale_id"), ["sale_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sale_discounts_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sale_discounts_venue_id"), ["venue_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sale_discounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sale_discounts_venue_id"))
        batch_op.drop_index(batch_op.f("ix_sale_discounts_session_id"))
        batch_op.drop_index(batch_op.f("ix_sale_discounts_sale_id"))
    op.drop_table("sale_discounts")
    with op.batch_alter_table("cash_sessions", schema=None) as batch_op:
        batch_op.drop_column("discount_total")
        batch_op.drop_column("discount_count")
    with op.batch_alter_table("sale_items", schema=None) as batch_op:
        batch_op.drop_column("discount")
    with op.batch_alter_table("sales", schema=None) as batch_op:
        batch_op.drop_column("discount_total")
