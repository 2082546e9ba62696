"""modifiers: choices added to a product when it is sold, and what each sale line recorded

Revision ID: 0014_modifiers
Revises: 0013_offline_rules
Create Date: 2026-12-02 16:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0014_modifiers"
down_revision = "0013_offline_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "modifiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("category_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("price_delta", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["category_id"], ["categories.id"], name=op.f("fk_modifiers_category_id_categories")),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], name=op.f("fk_modifiers_product_id_products")),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_modifiers_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_modifiers")),
    )
    with op.batch_alter_table("modifiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_modifiers_category_id"), ["category_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_modifiers_product_id"), ["product_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_modifiers_venue_id"), ["venue_id"], unique=False)
    with op.batch_alter_table("sale_items", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("modifiers", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sale_items", schema=None) as batch_op:
        batch_op.drop_column("modifiers")
    with op.batch_alter_table("modifiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_modifiers_venue_id"))
        batch_op.drop_index(batch_op.f("ix_modifiers_product_id"))
        batch_op.drop_index(batch_op.f("ix_modifiers_category_id"))
    op.drop_table("modifiers")
