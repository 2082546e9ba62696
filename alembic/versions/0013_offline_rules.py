"""offline rules: the versions of a register's offline rule that devices were given, named by each offline sale

Revision ID: 0013_offline_rules
Revises: 0012_dashboard_tips_mix
Create Date: 2026-12-02 16:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import caja_core.db.base
from alembic import op

revision = "0013_offline_rules"
down_revision = "0012_dashboard_tips_mix"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "offline_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("register_id", sa.Integer(), nullable=False),
        sa.Column(
            "methods", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("backup_provider", sa.String(length=40), nullable=False),
        sa.Column("valid_from", caja_core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", caja_core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["register_id"], ["cash_registers.id"], name=op.f("fk_offline_rules_register_id_cash_registers")
        ),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_offline_rules_venue_id_venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_rules")),
    )
    with op.batch_alter_table("offline_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offline_rules_register_id"), ["register_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offline_rules_venue_id"), ["venue_id"], unique=False)
    with op.batch_alter_table("offline_sales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_offline_sales_rule_id_offline_rules"), "offline_rules", ["rule_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("offline_sales", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_offline_sales_rule_id_offline_rules"), type_="foreignkey")
        batch_op.drop_column("rule_id")
    with op.batch_alter_table("offline_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offline_rules_venue_id"))
        batch_op.drop_index(batch_op.f("ix_offline_rules_register_id"))
    op.drop_table("offline_rules")
