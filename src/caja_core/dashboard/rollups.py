"""Adding a paid sale to the jornada's running totals per quarter hour and per product (``sign`` +1), or taking
a voided one out of them (−1), in the sale's own transaction. Courtesy sales are not revenue: they are not
counted, as in the sessions' running totals."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from ..sales.models import Sale, SaleItem
from .models import QUARTER_S, ProductSales, SalesQuarter

#: The product id of free-amount lines (lines without a product).
FREE_AMOUNT = 0

_QUARTERS = cast(Table, SalesQuarter.__table__)
_PRODUCTS = cast(Table, ProductSales.__table__)


def quarter_of(instant: datetime) -> int:
    """The quarter hour an instant falls in, counted since 1970-01-01 UTC."""
    return int(instant.timestamp()) // QUARTER_S


def quarter_start(quarter: int) -> datetime:
    return datetime.fromtimestamp(quarter * QUARTER_S, UTC)


def product_totals(lines: Iterable[tuple[int | None, int, int]]) -> list[dict[str, int]]:
    """(product id, quantity, line total) lines → one row per product, in product order."""
    found: dict[int, list[int]] = {}
    for product_id, quantity, line_total in lines:
        entry = found.setdefault(product_id or FREE_AMOUNT, [0, 0])
        entry[0] += quantity
        entry[1] += line_total
    return [{"product_id": p, "units": u, "amount": a} for p, (u, a) in sorted(found.items())]


def _upsert(table: Table, keys: list[str], summed: list[str], dialect: str) -> Insert:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: table.c[name] + stmt.excluded[name] for name in summed}
    )


_STATEMENTS: dict[str, tuple[Insert, Insert]] = {}


def _statements(dialect: str) -> tuple[Insert, Insert]:
    if dialect not in _STATEMENTS:
        _STATEMENTS[dialect] = (
            _upsert(
                _QUARTERS,
                ["jornada_id", "quarter", "session_id", "cashier_id", "provider_id", "method"],
                ["count", "amount"],
                dialect,
            ),
            _upsert(_PRODUCTS, ["jornada_id", "session_id", "product_id"], ["units", "amount"], dialect),
        )
    return _STATEMENTS[dialect]


def _rows(
    *,
    jornada_id: int,
    session_id: int,
    cashier_id: int,
    provider_id: str,
    method: str,
    paid_at: datetime,
    total: int,
    products: list[dict[str, int]],
    sign: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    quarter = {
        "jornada_id": jornada_id,
        "quarter": quarter_of(paid_at),
        "session_id": session_id,
        "cashier_id": cashier_id,
        "provider_id": provider_id,
        "method": method,
        "count": sign,
        "amount": sign * total,
    }
    lines = [
        {
            "jornada_id": jornada_id,
            "session_id": session_id,
            "product_id": p["product_id"],
            "units": sign * p["units"],
            "amount": sign * p["amount"],
        }
        for p in products
    ]
    return quarter, lines


def add_cash_sale(
    conn: Connection,
    *,
    jornada_id: int,
    session_id: int,
    cashier_id: int,
    paid_at: datetime,
    total: int,
    products: list[dict[str, int]],
) -> None:
    """The cash sale's hot path (synchronous, on the unit's connection)."""
    quarter_stmt, product_stmt = _statements(conn.dialect.name)
    quarter, lines = _rows(
        jornada_id=jornada_id,
        session_id=session_id,
        cashier_id=cashier_id,
        provider_id="cash",
        method="cash",
        paid_at=paid_at,
        total=total,
        products=products,
        sign=1,
    )
    conn.execute(quarter_stmt, quarter)
    if lines:
        conn.execute(product_stmt, lines)


async def add_sale(s: AsyncSession, sale: Sale, sign: int) -> None:
    """Add a sale just paid (+1) or take a voided paid sale out (−1)."""
    if sale.no_revenue or sale.paid_at is None:
        return
    items = (
        await s.execute(
            select(SaleItem.product_id, func.sum(SaleItem.quantity), func.sum(SaleItem.line_total - SaleItem.discount))
            .where(SaleItem.sale_id == sale.id)
            .group_by(SaleItem.product_id)
        )
    ).all()
    quarter_stmt, product_stmt = _statements(s.get_bind().dialect.name)
    quarter, lines = _rows(
        jornada_id=sale.jornada_id,
        session_id=sale.session_id,
        cashier_id=sale.cashier_id,
        provider_id=sale.provider_id or "cash",
        method=sale.payment_method or "cash",
        paid_at=sale.paid_at,
        total=sale.total,
        products=product_totals((p, int(q or 0), int(t or 0)) for p, q, t in items),
        sign=sign,
    )
    cash_part = sale.cash_part or 0
    if cash_part and sale.payment_method != "cash":  # a split payment: each part under its own method
        quarter["amount"] -= sign * cash_part
        await s.execute(
            quarter_stmt, quarter | {"provider_id": "cash", "method": "cash", "count": 0, "amount": sign * cash_part}
        )
    await s.execute(quarter_stmt, quarter)
    if lines:
        await s.execute(product_stmt, lines)
