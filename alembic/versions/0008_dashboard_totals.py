"""jornada running totals per quarter hour and per product (the dashboard), filled from the sales paid so far

Revision ID: 0008_dashboard_totals
Revises: 0007_offline_sales
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0008_dashboard_totals"
down_revision = "0007_offline_sales"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sales_quarters",
        sa.Column("jornada_id", sa.Integer(), nullable=False),
        sa.Column("quarter", sa.BigInteger(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("cashier_id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["jornada_id"], ["jornadas.id"], name=op.f("fk_sales_quarters_jornada_id_jornadas")),
        sa.ForeignKeyConstraint(
            ["session_id"], ["cash_sessions.id"], name=op.f("fk_sales_quarters_session_id_cash_sessions")
        ),
        sa.PrimaryKeyConstraint(
            "jornada_id", "quarter", "session_id", "cashier_id", "provider_id", "method", name=op.f("pk_sales_quarters")
        ),
    )
    op.create_table(
        "product_sales",
        sa.Column("jornada_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["jornada_id"], ["jornadas.id"], name=op.f("fk_product_sales_jornada_id_jornadas")),
        sa.ForeignKeyConstraint(
            ["session_id"], ["cash_sessions.id"], name=op.f("fk_product_sales_session_id_cash_sessions")
        ),
        sa.PrimaryKeyConstraint("jornada_id", "session_id", "product_id", name=op.f("pk_product_sales")),
    )
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_attempts_venue_created",
            ["venue_id", "created_at"],
            unique=False,
            postgresql_include=["register_id", "role", "state", "sent_at", "finished_at"],
        )

    # The sales paid before this revision (a voided sale left its quarter at zero: it is not counted).
    if op.get_bind().dialect.name == "postgresql":
        quarter = "CAST(floor(extract(epoch FROM paid_at) / 900) AS bigint)"
    else:
        quarter = "CAST(strftime('%s', paid_at) AS INTEGER) / 900"
    op.execute(
        f"""
        INSERT INTO sales_quarters (jornada_id, quarter, session_id, cashier_id, provider_id, method, count, amount)
        SELECT jornada_id, {quarter}, session_id, cashier_id, coalesce(provider_id, 'cash'),
               coalesce(payment_method, 'cash'), count(*), sum(total)
        FROM sales
        WHERE status = 'paid' AND NOT no_revenue AND paid_at IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6
        """
    )
    op.execute(
        """
        INSERT INTO product_sales (jornada_id, session_id, product_id, units, amount)
        SELECT s.jornada_id, s.session_id, coalesce(i.product_id, 0), sum(i.quantity), sum(i.line_total)
        FROM sale_items i JOIN sales s ON s.id = i.sale_id
        WHERE s.status = 'paid' AND NOT s.no_revenue AND s.paid_at IS NOT NULL
        GROUP BY 1, 2, 3
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_attempts_venue_created")
    op.drop_table("product_sales")
    op.drop_table("sales_quarters")
