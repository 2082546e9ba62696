"""Adding a paid sale to the jornada's running totals per quarter hour and per product (``sign`` +1), or taking
a voided one out of them (−1), in the sale's own transaction. Courtesy sales are not revenue: they are not
counted, as in the sessions' running totals.

The product mix adds up to the net sales: a line counts what it was charged after its own discount, and a
discount on the whole sale is split across the sale's lines in proportion to what each line comes to, in whole
pesos (``prorate``). The tip is kept apart from the amount sold, in its own columns of the quarter.

``rebuild`` writes a jornada's totals again from its sales, with the same functions as the sales themselves:
what a night's totals are must not depend on whether they were kept sale by sale or rebuilt afterwards."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, delete, select
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
_QUARTER_KEYS = ("jornada_id", "quarter", "session_id", "cashier_id", "provider_id", "method")
_PRODUCT_KEYS = ("jornada_id", "session_id", "product_id")


def quarter_of(instant: datetime) -> int:
    """The quarter hour an instant falls in, counted since 1970-01-01 UTC."""
    return int(instant.timestamp()) // QUARTER_S


def quarter_start(quarter: int) -> datetime:
    return datetime.fromtimestamp(quarter * QUARTER_S, UTC)


def prorate(discount: int, amounts: list[int]) -> list[int]:
    """A discount on the whole sale split across its lines in proportion to ``amounts`` (what each line comes to
    after its own discount), in whole pesos that add up to the discount exactly: each line takes the whole pesos
    of its share, and the pesos left over go one each to the lines with the largest fractions, the earlier line
    first when two are equal (the same split on every read and every rebuild)."""
    base = sum(amounts)
    if discount <= 0 or base <= 0:
        return [0] * len(amounts)
    shares = [discount * a // base for a in amounts]
    left = discount - sum(shares)
    by_fraction = sorted(range(len(amounts)), key=lambda n: (-(discount * amounts[n] % base), n))
    for n in by_fraction[:left]:
        shares[n] += 1
    return shares


def net_lines(lines: list[tuple[int | None, int, int]], total: int) -> list[tuple[int | None, int, int]]:
    """A sale's lines (product id, quantity, amount after the line's own discount), in the order they were rung
    up, with the discount on the whole sale (what the lines add up to less the sale's total) prorated across
    them: the amounts then add up to ``total``."""
    shares = prorate(sum(a for _, _, a in lines) - total, [a for _, _, a in lines])
    return [(p, q, a - share) for (p, q, a), share in zip(lines, shares, strict=True)]


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
                list(_QUARTER_KEYS),
                ["count", "amount", "tip_count", "tip"],
                dialect,
            ),
            _upsert(_PRODUCTS, list(_PRODUCT_KEYS), ["units", "amount"], dialect),
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
    tip: int = 0,
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
        "tip_count": sign if tip else 0,
        "tip": sign * tip,
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


async def add_sale(s: AsyncSession, sale: Sale, sign: int, items: Sequence[SaleItem] | None = None) -> None:
    """Add a sale just paid (+1) or take a voided paid sale out (−1). ``items``: the sale's lines in the order
    rung up, when the caller has read them (else they are read here)."""
    if sale.no_revenue or sale.paid_at is None:
        return
    lines: Sequence[tuple[int | None, int, int]]
    if items is None:
        lines = (
            await s.execute(
                select(SaleItem.product_id, SaleItem.quantity, SaleItem.line_total - SaleItem.discount)
                .where(SaleItem.sale_id == sale.id)
                .order_by(SaleItem.id)
            )
        ).all()
    else:
        lines = [(i.product_id, i.quantity, i.line_total - (i.discount or 0)) for i in items]
    for statement, rows in sale_rows(sale, [(p, int(q), int(a)) for p, q, a in lines], sign):
        await s.execute(statement(s.get_bind().dialect.name), rows)


def _quarter_stmt(dialect: str) -> Insert:
    return _statements(dialect)[0]


def _product_stmt(dialect: str) -> Insert:
    return _statements(dialect)[1]


class PaidSale(Protocol):
    """What the totals need of a paid sale (a ``Sale``, or a row of the same columns)."""

    jornada_id: int
    session_id: int
    cashier_id: int
    provider_id: str | None
    payment_method: str | None
    paid_at: datetime | None
    total: int
    tip: int
    cash_part: int


#: The columns of ``PaidSale``, in one read.
_PAID_COLUMNS = (
    Sale.id,
    Sale.jornada_id,
    Sale.session_id,
    Sale.cashier_id,
    Sale.provider_id,
    Sale.payment_method,
    Sale.paid_at,
    Sale.total,
    Sale.tip,
    Sale.cash_part,
)


def sale_rows(
    sale: PaidSale, lines: list[tuple[int | None, int, int]], sign: int
) -> list[tuple[Callable[[str], Insert], Any]]:
    """The rows a paid revenue sale adds to (or a void takes from) the totals: ``lines`` are its (product id,
    quantity, amount after the line's discount) in the order rung up. A split payment puts each part under its
    own method (the cash part counts no ticket); the tip goes with the sale's payment."""
    quarter, products = _rows(
        jornada_id=sale.jornada_id,
        session_id=sale.session_id,
        cashier_id=sale.cashier_id,
        provider_id=sale.provider_id or "cash",
        method=sale.payment_method or "cash",
        paid_at=cast(datetime, sale.paid_at),
        total=sale.total,
        products=product_totals(net_lines(lines, sale.total)),
        sign=sign,
        tip=sale.tip or 0,
    )
    out: list[tuple[Callable[[str], Insert], Any]] = []
    cash_part = sale.cash_part or 0
    if cash_part and sale.payment_method != "cash":  # a split payment: each part under its own method
        quarter["amount"] -= sign * cash_part
        cash = {"provider_id": "cash", "method": "cash", "count": 0, "amount": sign * cash_part}
        out.append((_quarter_stmt, quarter | cash | {"tip_count": 0, "tip": 0}))
    out.append((_quarter_stmt, quarter))
    if products:
        out.append((_product_stmt, products))
    return out


async def rebuild(s: AsyncSession, jornada_id: int) -> None:
    """Write a jornada's quarter-hour and product totals again from its sales (after a bulk load, or to check
    them): the paid revenue sales go through ``sale_rows`` as each sale does when it is paid; the rows are
    summed here and written once."""
    await s.execute(delete(SalesQuarter).where(SalesQuarter.jornada_id == jornada_id))
    await s.execute(delete(ProductSales).where(ProductSales.jornada_id == jornada_id))
    paid = (Sale.jornada_id == jornada_id) & (Sale.status == "paid") & ~Sale.no_revenue & Sale.paid_at.is_not(None)
    lines: dict[int, list[tuple[int | None, int, int]]] = defaultdict(list)
    for sale_id, product_id, quantity, amount in await s.execute(
        select(SaleItem.sale_id, SaleItem.product_id, SaleItem.quantity, SaleItem.line_total - SaleItem.discount)
        .join(Sale, Sale.id == SaleItem.sale_id)
        .where(paid)
        .order_by(SaleItem.sale_id, SaleItem.id)
    ):
        lines[sale_id].append((product_id, int(quantity), int(amount)))
    quarters: dict[tuple[Any, ...], dict[str, Any]] = {}
    products: dict[tuple[Any, ...], dict[str, Any]] = {}
    for sale in await s.execute(select(*_PAID_COLUMNS).where(paid)):
        for statement, rows in sale_rows(cast(PaidSale, sale), lines.pop(sale.id, []), +1):
            into, keys, summed = (
                (quarters, _QUARTER_KEYS, ("count", "amount", "tip_count", "tip"))
                if statement is _quarter_stmt
                else (products, _PRODUCT_KEYS, ("units", "amount"))
            )
            for row in rows if isinstance(rows, list) else [rows]:
                key = tuple(row[k] for k in keys)
                if key in into:
                    for name in summed:
                        into[key][name] += row[name]
                else:
                    into[key] = dict(row)
    for table, found in ((_QUARTERS, quarters), (_PRODUCTS, products)):
        batch = list(found.values())
        for start in range(0, len(batch), 1000):
            await s.execute(table.insert(), batch[start : start + 1000])
