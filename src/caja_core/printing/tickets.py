"""What each ticket says: the sale receipt (and its copy), the customer's digital receipt, the comanda,
the session's X/Z report, the jornada's Z report and the printer test page, as ``Document``s."""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..catalog.models import Product
from ..clock import format_local, utcnow
from ..errors import NotFound
from ..money import format_clp
from ..payments.models import PaymentAttempt
from ..registers.models import CashRegister
from ..reports.service import JornadaReport, SessionReport
from ..sales.models import Sale, SaleDiscount, SaleItem
from ..users.models import User
from ..venues.models import Venue
from .config import ComandaRoute, PrinterConfig
from .document import Document

APPROVED_STATES = ("approved", "approved_manual", "verified")
METHOD_LABELS = {"cash": "Efectivo", "card": "Tarjeta"}
CARD_TYPES = {"DB": "débito", "CR": "crédito", "debito": "débito", "credito": "crédito"}


class CardLine(msgspec.Struct, kw_only=True):
    provider_id: str
    brand: str
    card_type: str
    last4: str
    authorization_code: str


class ItemLine(msgspec.Struct, kw_only=True):
    name: str
    quantity: int
    unit_price: int
    line_total: int
    category_id: int | None
    discount: int = 0
    discount_label: str = ""


class SaleData(msgspec.Struct, kw_only=True):
    """Everything a receipt of one sale shows, read in one go."""

    sale_id: int
    venue_id: int
    venue_name: str
    timezone: str
    register_id: int
    register_code: str
    register_name: str
    session_id: int
    cashier_name: str
    status: str
    total: int
    payment_method: str | None
    provider_id: str | None
    paid_via: str | None
    no_revenue: bool
    courtesy_reason: str
    cash_received: int | None
    change_given: int | None
    paid_at: datetime | None
    created_at: datetime
    items: list[ItemLine]
    cards: list[CardLine]
    printer_config: dict
    discount_total: int = 0
    sale_discount: int = 0
    sale_discount_label: str = ""
    tip: int = 0


async def load_sale(s: AsyncSession, venue_id: int, sale_id: int) -> SaleData:
    row = (
        await s.execute(
            select(Sale, CashRegister, Venue.name, Venue.timezone, User.display_name)
            .join(CashRegister, CashRegister.id == Sale.register_id)
            .join(Venue, Venue.id == Sale.venue_id)
            .join(User, User.id == Sale.cashier_id)
            .where(Sale.id == sale_id, Sale.venue_id == venue_id)
        )
    ).first()
    if row is None:
        raise NotFound("La venta no existe.", code="sale.not_found")
    sale, register, venue_name, tz, cashier = row
    items = (
        await s.execute(
            select(SaleItem, Product.category_id)
            .outerjoin(Product, Product.id == SaleItem.product_id)
            .where(SaleItem.sale_id == sale_id)
            .order_by(SaleItem.id)
        )
    ).all()
    discounts = (
        {d.item_id: d for d in await s.scalars(select(SaleDiscount).where(SaleDiscount.sale_id == sale_id))}
        if sale.discount_total
        else {}
    )
    whole = discounts.get(None)
    attempts = await s.scalars(
        select(PaymentAttempt)
        .where(PaymentAttempt.sale_id == sale_id, PaymentAttempt.state.in_(APPROVED_STATES))
        .order_by(PaymentAttempt.id)
    )
    return SaleData(
        sale_id=sale.id,
        venue_id=sale.venue_id,
        venue_name=venue_name,
        timezone=tz,
        register_id=register.id,
        register_code=register.code,
        register_name=register.name,
        session_id=sale.session_id,
        cashier_name=cashier,
        status=sale.status,
        total=sale.total,
        payment_method=sale.payment_method,
        provider_id=sale.provider_id,
        paid_via=sale.paid_via,
        no_revenue=sale.no_revenue,
        courtesy_reason=sale.courtesy_reason,
        cash_received=sale.cash_received,
        change_given=sale.change_given,
        paid_at=sale.paid_at,
        created_at=sale.created_at,
        items=[
            ItemLine(
                name=i.name + (f" ({', '.join(m['name'] for m in i.modifiers)})" if i.modifiers else ""),
                quantity=i.quantity,
                unit_price=i.unit_price,
                line_total=i.line_total,
                category_id=cat,
                discount=i.discount or 0,
                discount_label=discount_label(discounts[i.id]) if i.id in discounts else "",
            )
            for i, cat in items
        ],
        discount_total=sale.discount_total or 0,
        sale_discount=whole.amount if whole else 0,
        sale_discount_label=discount_label(whole) if whole else "",
        tip=sale.tip or 0,
        cards=[
            CardLine(
                provider_id=a.provider_id,
                brand=a.card_brand or "",
                card_type=a.card_type or "",
                last4=a.last4 or "",
                authorization_code=a.authorization_code or "",
            )
            for a in attempts
        ],
        printer_config=dict(register.printer_config or {}),
    )


def discount_label(discount: SaleDiscount) -> str:
    """ "Descuento 10 %" or "Descuento" (an amount)."""
    return f"Descuento {discount.value} %" if discount.kind == "percent" else "Descuento"


def register_label(name: str) -> str:
    """ "Caja 1" stays "Caja 1"; "Barra" becomes "Caja Barra"."""
    return name if name.lower().startswith("caja") else f"Caja {name}"


def ticket_number(sale_id: int) -> str:
    return f"{sale_id:08d}"


def sale_receipt(
    data: SaleData,
    config: PrinterConfig,
    *,
    copy: bool = False,
    url: str | None = None,
    public: bool = False,
    provider_names: dict[str, str] | None = None,
) -> Document:
    """The sale's ticket. ``public`` is the customer's digital receipt: no card data at all."""
    names = provider_names or {}
    doc = Document(title=f"Ticket venta #{data.sale_id}", paper_width=config.paper_width, cut=config.cut_paper)
    doc.add(data.venue_name, align="center", style="big")
    doc.add(register_label(data.register_name), align="center")
    if copy:
        doc.add("*** COPIA ***", align="center", style="big")
    doc.rule()
    doc.add(f"Ticket N° {ticket_number(data.sale_id)}", style="bold")
    doc.add("Fecha", format_local(data.paid_at or data.created_at, data.timezone, "%d-%m-%Y %H:%M"))
    doc.add("Cajero", data.cashier_name)
    doc.rule()
    if config.print_items or public:
        for item in data.items:
            doc.add(f"{item.quantity} x {item.name}", format_clp(item.line_total))
            if item.quantity > 1:
                doc.add(f"   c/u {format_clp(item.unit_price)}", style="small")
            if item.discount:
                doc.add(f"   {item.discount_label}", f"-{format_clp(item.discount)}")
        doc.rule()
    if (config.print_total or public) and data.discount_total:
        doc.add("Subtotal", format_clp(data.total + data.discount_total))
        if data.sale_discount:
            doc.add(data.sale_discount_label, f"-{format_clp(data.sale_discount)}")
    if config.print_total or public:
        doc.add("TOTAL", format_clp(data.total), style="big")
        if data.tip:
            doc.add("Propina", format_clp(data.tip))
            doc.add("Total pagado", format_clp(data.total + data.tip), style="bold")
    if data.no_revenue:
        doc.add("CORTESÍA (sin cobro)", align="center", style="bold")
        if data.courtesy_reason:
            doc.add(f"Motivo: {data.courtesy_reason}")
    elif data.payment_method == "cash":
        doc.add("Pago", METHOD_LABELS["cash"])
        if data.cash_received is not None:
            doc.add("Recibido", format_clp(data.cash_received))
            doc.add("Vuelto", format_clp(data.change_given))
    elif data.payment_method:
        provider = names.get(data.provider_id or "", (data.provider_id or "").upper())
        via = " (respaldo)" if data.paid_via == "backup" else ""
        doc.add("Pago", f"{METHOD_LABELS.get(data.payment_method, data.payment_method)} · {provider}{via}")
        if not public:
            for card in data.cards[:1]:
                kind = CARD_TYPES.get(card.card_type, card.card_type)
                doc.add(
                    "Tarjeta", " ".join(x for x in (card.brand, kind, f"****{card.last4}" if card.last4 else "") if x)
                )
                if card.authorization_code:
                    doc.add("Cód. autorización", card.authorization_code)
    if data.status == "cancelled":
        doc.add("VENTA ANULADA", align="center", style="big")
    doc.rule()
    if config.print_barcode and not public:
        doc.barcode = ticket_number(data.sale_id)
    if url and config.print_qr and not public:
        doc.qr = url
        doc.qr_caption = "Boleta digital: escanee el código"
    doc.add("Gracias por su visita", align="center")
    if copy:
        doc.add("*** COPIA ***", align="center", style="bold")
    return doc


def comanda(data: SaleData, route: ComandaRoute, config: PrinterConfig) -> Document | None:
    """The order ticket for the bar or kitchen: the sale's products of the route's categories, no prices."""
    wanted = set(route.categories)
    items = [i for i in data.items if i.category_id in wanted]
    if not items:
        return None
    doc = Document(title=f"Comanda {route.name} venta #{data.sale_id}", paper_width=config.paper_width)
    doc.add(f"COMANDA {route.name}", align="center", style="big")
    doc.add(f"Venta #{data.sale_id} · {register_label(data.register_name)}", align="center")
    doc.add(format_local(data.paid_at or data.created_at, data.timezone, "%d-%m-%Y %H:%M"), align="center")
    doc.add(f"Cajero: {data.cashier_name}", align="center")
    doc.rule()
    for item in items:
        doc.add(f"{item.quantity} x {item.name}", style="big")
    doc.rule()
    return doc


def _totals(doc: Document, by_provider, by_method, names: dict[str, str]) -> None:
    if by_method:
        doc.add("Por medio de pago", style="bold")
        for t in by_method:
            doc.add(f"  {METHOD_LABELS.get(t.key, t.key)} ({t.count})", format_clp(t.amount))
    if by_provider:
        doc.add("Por proveedor", style="bold")
        for t in by_provider:
            label = "Efectivo" if t.key == "cash" else names.get(t.key, t.key.upper())
            doc.add(f"  {label} ({t.count})", format_clp(t.amount))


def session_report(
    report: SessionReport, *, venue_name: str, timezone: str, config: PrinterConfig, names: dict[str, str]
) -> Document:
    """The session's X report (open session: a reading, nothing closes) or Z report (closed session)."""
    x = report.summary
    c = x.session
    letter = "Z" if c.status == "closed" else "X"
    doc = Document(title=f"Informe {letter} sesión #{c.id}", paper_width=config.paper_width, cut=config.cut_paper)
    doc.add(venue_name, align="center", style="big")
    doc.add(f"INFORME {letter}", align="center", style="big")
    doc.add(f"Caja {x.register_name} · sesión #{c.id}", align="center")
    doc.rule()
    doc.add("Cajero", x.cashier_name)
    doc.add("Apertura", format_local(c.opened_at, timezone))
    doc.add("Cierre", format_local(c.closed_at, timezone) if c.closed_at else "abierta")
    doc.add("Impreso", format_local(utcnow(), timezone))
    doc.rule()
    doc.add("Fondo inicial", format_clp(c.initial_cash))
    doc.add("Tickets", str(c.ticket_count))
    doc.add("Ventas", format_clp(c.sales_total), style="bold")
    doc.add("  Efectivo", format_clp(c.cash_sales_total))
    doc.add("  Tarjeta", format_clp(c.card_sales_total))
    doc.add(f"Cortesías ({c.courtesy_count})", format_clp(c.courtesy_total))
    doc.add(f"Anuladas ({c.cancelled_count})", format_clp(c.cancelled_total))
    if c.discount_count:
        doc.add(f"Descuentos ({c.discount_count})", format_clp(c.discount_total))
    if c.tip_count:
        doc.add(f"Propinas ({c.tip_count})", format_clp(c.tip_total))
        doc.add("  en efectivo", format_clp(c.cash_tip_total))
    doc.add("Ingresos de efectivo", format_clp(c.cash_in_total))
    doc.add("Retiros de efectivo", format_clp(c.cash_out_total))
    doc.add("Pagos principal / respaldo", f"{c.primary_count} / {c.backup_count}")
    doc.rule()
    _totals(doc, report.by_provider, report.by_method, names)
    doc.rule()
    expected = c.expected_cash if c.expected_cash is not None else x.expected_cash_now
    doc.add("Efectivo esperado", format_clp(expected), style="bold")
    if c.counted_cash is not None:
        doc.add("Efectivo contado", format_clp(c.counted_cash))
        doc.add("Diferencia", format_clp(c.difference), style="bold")
    if report.fallback_events:
        doc.add("Cambios a respaldo", str(len(report.fallback_events)))
    if report.incidents:
        doc.add("Incidencias", str(len(report.incidents)))
    _offline_after_close(doc, report)
    return doc


def _offline_after_close(doc: Document, report: SessionReport | JornadaReport) -> None:
    """Closes that left a device's offline sales out, and the offline sales that arrived after a close."""
    closed = report.closed_without_offline
    if closed:
        doc.add("Cerrada sin ventas sin conexión", str(len(closed)), style="bold")
    late = report.late_offline_sales
    if late:
        doc.add(f"Recibidas después del cierre ({len(late)})", format_clp(sum(x.total for x in late)), style="bold")
        pending = [x for x in late if not x.resolved]
        if pending:
            doc.add("  por resolver", str(len(pending)))


def jornada_report(
    report: JornadaReport, *, venue_name: str, timezone: str, config: PrinterConfig, names: dict[str, str]
) -> Document:
    j = report.jornada
    doc = Document(title=f"Informe Z jornada {j.label_date}", paper_width=config.paper_width, cut=config.cut_paper)
    doc.add(venue_name, align="center", style="big")
    doc.add("INFORME Z JORNADA", align="center", style="big")
    doc.add(j.label_date.strftime("%d-%m-%Y"), align="center")
    doc.rule()
    doc.add("Apertura", format_local(j.opened_at, timezone))
    doc.add("Cierre", format_local(j.closed_at, timezone) if j.closed_at else "abierta")
    doc.add("Impreso", format_local(utcnow(), timezone))
    doc.rule()
    t = report.totals
    doc.add("Tickets", str(t["ticket_count"]))
    doc.add("Ventas", format_clp(t["sales_total"]), style="bold")
    doc.add("  Efectivo", format_clp(t["cash_sales_total"]))
    doc.add("  Tarjeta", format_clp(t["card_sales_total"]))
    doc.add(f"Cortesías ({t['courtesy_count']})", format_clp(t["courtesy_total"]))
    doc.add(f"Anuladas ({t['cancelled_count']})", format_clp(t["cancelled_total"]))
    if t["discount_count"]:
        doc.add(f"Descuentos ({t['discount_count']})", format_clp(t["discount_total"]))
    if t["tip_count"]:
        doc.add(f"Propinas ({t['tip_count']})", format_clp(t["tip_total"]))
        doc.add("  en efectivo", format_clp(t["cash_tip_total"]))
    doc.add("Ingresos / retiros", f"{format_clp(t['cash_in_total'])} / {format_clp(t['cash_out_total'])}")
    doc.add("Principal / respaldo", f"{t['primary_count']} / {t['backup_count']}")
    doc.add("Diferencias de caja", format_clp(report.differences_total), style="bold")
    doc.rule()
    _totals(doc, report.by_provider, report.by_method, names)
    doc.rule()
    doc.add("Por caja", style="bold")
    for x in report.sessions:
        doc.add(f"  {x.register_name} · {x.cashier_name}", format_clp(x.session.sales_total))
        if x.session.difference:
            doc.add("    diferencia", format_clp(x.session.difference))
    if report.incidents:
        doc.add("Incidencias", str(len(report.incidents)))
    _offline_after_close(doc, report)
    return doc


def printer_test_page(
    *, venue_name: str, register_name: str, printer_label: str, config: PrinterConfig, tz: str
) -> Document:
    doc = Document(title="Prueba de impresión", paper_width=config.paper_width, cut=config.cut_paper)
    doc.add(venue_name, align="center", style="big")
    doc.add("PRUEBA DE IMPRESIÓN", align="center", style="bold")
    doc.rule()
    doc.add("Caja", register_name)
    doc.add("Impresora", config.name or printer_label)
    doc.add("Conexión", printer_label)
    doc.add("Papel", f"{config.paper_width} mm")
    doc.add("Fecha", format_local(utcnow(), tz))
    doc.rule()
    doc.add("Eñe y tildes: ñandú, pingüino, acción")
    doc.add("¿Está bien? ¡Sí! ÁÉÍÓÚ Ñ")
    doc.add("Total de prueba", format_clp(12500), style="big")
    doc.rule()
    return doc
