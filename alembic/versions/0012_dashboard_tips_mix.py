"""the dashboard's quarter-hour totals keep the tips; the product mix takes each sale discount's prorated part

Revision ID: 0012_dashboard_tips_mix
Revises: 0011_split_payments
Create Date: 2026-12-02 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0012_dashboard_tips_mix"
down_revision = "0011_split_payments"
branch_labels = None
depends_on = None

PAID = "s.status = 'paid' AND NOT s.no_revenue AND s.paid_at IS NOT NULL"

# The product mix again from the paid sales: each line after its own discount, less its part of the discount on
# the whole sale (the lines' sum less the sale's total), split in proportion to the lines in whole pesos; the
# pesos left over go one each to the lines with the largest fractions, the earlier line first.
PRODUCT_MIX = f"""
INSERT INTO product_sales (jornada_id, session_id, product_id, units, amount)
SELECT jornada_id, session_id, product_id, sum(quantity),
       sum(net - share - CASE WHEN place <= left_over THEN 1 ELSE 0 END)
FROM (
  SELECT l.*, whole - CAST(sum(share) OVER (PARTITION BY sale_id) AS BIGINT) AS left_over,
         row_number() OVER (PARTITION BY sale_id ORDER BY fraction DESC, id) AS place
  FROM (
    SELECT w.*, CASE WHEN base > 0 AND whole > 0 THEN whole * net / base ELSE 0 END AS share,
           CASE WHEN base > 0 AND whole > 0 THEN (whole * net) % base ELSE 0 END AS fraction
    FROM (
      SELECT i.id, i.sale_id, s.jornada_id, s.session_id, coalesce(i.product_id, 0) AS product_id, i.quantity,
             i.line_total - i.discount AS net,
             CAST(sum(i.line_total - i.discount) OVER (PARTITION BY i.sale_id) AS BIGINT) AS base,
             CAST(sum(i.line_total - i.discount) OVER (PARTITION BY i.sale_id) AS BIGINT) - s.total AS whole
      FROM sale_items i JOIN sales s ON s.id = i.sale_id
      WHERE {PAID}
    ) w
  ) l
) p
GROUP BY jornada_id, session_id, product_id
"""


def upgrade() -> None:
    with op.batch_alter_table("sales_quarters") as batch:
        batch.add_column(sa.Column("tip_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tip", sa.BigInteger(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        quarter = "CAST(floor(extract(epoch FROM s.paid_at) / 900) AS bigint)"
    else:
        quarter = "CAST(strftime('%s', s.paid_at) AS INTEGER) / 900"
    same = f"""{PAID} AND s.tip > 0 AND s.jornada_id = sales_quarters.jornada_id
        AND s.session_id = sales_quarters.session_id AND s.cashier_id = sales_quarters.cashier_id
        AND coalesce(s.provider_id, 'cash') = sales_quarters.provider_id
        AND coalesce(s.payment_method, 'cash') = sales_quarters.method AND {quarter} = sales_quarters.quarter"""
    op.execute(
        f"""
        UPDATE sales_quarters
        SET tip_count = (SELECT count(*) FROM sales s WHERE {same}),
            tip = (SELECT coalesce(sum(s.tip), 0) FROM sales s WHERE {same})
        WHERE EXISTS (SELECT 1 FROM sales s WHERE {same})
        """
    )
    op.execute("DELETE FROM product_sales")
    op.execute(PRODUCT_MIX)


def downgrade() -> None:
    with op.batch_alter_table("sales_quarters") as batch:
        batch.drop_column("tip")
        batch.drop_column("tip_count")
