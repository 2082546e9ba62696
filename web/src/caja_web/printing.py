"""Printing pages: the POS's print status, retry, copies ("COPIA"), the drawer, printable tickets for the
browser printer (58/80 mm), the customer's digital receipt, the register's printer form and test print,
and printed reports. Handlers parse, call ``caja_core.printing.PrintService`` (``app.state.printing``) and
render; the rest of the web app calls ``after_sale`` / ``after_movement`` from one place each."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from caja_core.catalog import service as catalog
from caja_core.clock import utcnow
from caja_core.errors import CajaError, Conflict, ValidationFailed
from caja_core.permissions import Action
from caja_core.printing import PrinterConfig, PrintService
from caja_core.printing.config import MAX_COMANDAS
from caja_core.printing.document import COLUMNS, Document
from caja_core.printing.drivers import CODEPAGES
from caja_core.printing.links import barcode_svg, qr_svg
from caja_core.printing.service import STALE_AFTER_S
from caja_core.providers import describe_settings
from caja_core.registers import service as registers
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions

from .admin.forms import SettingField
from .auth import ADMIN, CASHIER, FORM, SUPERVISOR, requires
from .context import Web
from .pos import cart as carts

PRINTER_LABELS = {
    "printer": "Impresora",
    "name": "Nombre de la impresora",
    "printer_type": "Tipo",
    "paper_width": "Ancho del papel",
    "auto_print": "Imprimir el ticket al cobrar",
    "print_items": "Imprimir el detalle de productos",
    "print_total": "Imprimir el total",
    "print_barcode": "Imprimir código de barras del ticket",
    "print_qr": "Imprimir QR de la boleta digital",
    "cut_paper": "Cortar el papel",
    "open_drawer": "Abrir el cajón en ventas en efectivo",
    "drawer_on_movements": "Abrir el cajón en ingresos y retiros",
}
TYPE_LABELS = {"thermal": "Térmica", "inkjet": "Tinta", "laser": "Láser"}
FLAGS = (
    "auto_print",
    "print_items",
    "print_total",
    "print_barcode",
    "print_qr",
    "cut_paper",
    "open_drawer",
    "drawer_on_movements",
)


def printing(web: Web) -> PrintService:
    return web.state.printing


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# ---- called by the rest of the web app (one place each) ----------------------------------------------------
def after_sale(request: Request, sale_id: int, venue_id: int) -> None:
    """A sale was paid and committed: print its tickets in the background (never waits, never raises)."""
    service: PrintService | None = getattr(request.app.state, "printing", None)
    if service is not None:
        service.sale_paid(venue_id, sale_id, base_url=base_url(request))


def after_movement(request: Request, session_id: int, venue_id: int, user_id: int) -> None:
    """Cash went in or out: the drawer opens when the register says so (in the background)."""
    service: PrintService | None = getattr(request.app.state, "printing", None)
    if service is not None:
        service.cash_movement(venue_id, session_id, user_id)


# ---- rendering a document as HTML --------------------------------------------------------------------------
def ticket_context(doc: Document, **extra: Any) -> dict[str, Any]:
    return {
        "doc": doc,
        "columns": COLUMNS.get(doc.paper_width, 48),
        "qr": qr_svg(doc.qr) if doc.qr else None,
        "barcode": barcode_svg(doc.barcode) if doc.barcode else None,
        **extra,
    }


async def ticket_page(web: Web, doc: Document, *, autoprint: bool, back: str = "") -> Template:
    return Template(
        template_name="printing/ticket_page.html",
        context=web.plain_context(False) | ticket_context(doc, autoprint=autoprint, back=back),
    )


# ---- public: the customer's digital receipt ---------------------------------------------------------------
@get("/boleta/{token:str}", include_in_schema=False)
async def public_receipt(request: Request, token: FromPath[str]) -> Template:
    web = Web(request)
    doc, data = await printing(web).public_receipt(token)
    return Template(
        template_name="printing/public_receipt.html",
        context=web.plain_context(False) | ticket_context(doc, data=data),
        headers={"X-Robots-Tag": "noindex"},
    )


# ---- POS ---------------------------------------------------------------------------------------------------
async def sale_print_context(web: Web, sale_id: int, **extra: Any) -> dict[str, Any]:
    service = printing(web)
    status = await service.sale_status(web.venue_id, sale_id)
    sale = await web.call(sales.get_sale, web.venue_id, sale_id)
    paid = sale.status == "paid"
    url = service.receipt_url(sale_id, base_url(web.request)) if paid else None
    waited = (utcnow() - sale.paid_at).total_seconds() if sale.paid_at else 0.0
    unplanned = paid and status.configured and status.auto_print and not status.browser and not status.jobs
    return {
        "sale": sale,
        "print": status,
        "polling": status.pending or (unplanned and waited < STALE_AFTER_S),
        "never_printed": unplanned and waited >= STALE_AFTER_S,
        "receipt_url": url,
        "receipt_qr": qr_svg(url) if url else None,
        "autoprint_browser": paid and status.browser and status.auto_print and waited < 120,
        **extra,
    }


async def sale_print_view(web: Web, sale_id: int, **extra: Any) -> Template:
    ctx = await sale_print_context(web, sale_id, **extra)
    return await web.page("printing/sale_print.html", partial_template="printing/_sale_print.html", **ctx)


@get("/venta/{sale_id:int}/impresion")
async def sale_print_status(request: Request, sale_id: FromPath[int]) -> Template:
    return await sale_print_view(Web(request), sale_id)


@post("/venta/{sale_id:int}/impresion/reintentar")
async def retry_print(request: Request, sale_id: FromPath[int]) -> Template:
    web = Web(request)
    await printing(web).retry_sale(web.venue_id, sale_id, web.user_id, base_url=base_url(request))
    return await sale_print_view(web, sale_id, retried=True)


@post("/venta/{sale_id:int}/reimprimir")
async def reprint(request: Request, sale_id: FromPath[int]) -> Template:
    web = Web(request)
    job = await printing(web).reprint(web.venue_id, sale_id, web.user_id, base_url=base_url(request))
    return await sale_print_view(web, sale_id, copy_job=job)


@get("/venta/{sale_id:int}/ticket")
async def sale_ticket(
    request: Request, sale_id: FromPath[int], copia: FromQuery[int] = 0, imprimir: FromQuery[int] = 0
) -> Template:
    """The sale's ticket as a page sized for the register's paper (the browser printer prints it)."""
    web = Web(request)
    doc, _ = await printing(web).receipt_document(web.venue_id, sale_id, copy=bool(copia), base_url=base_url(request))
    return await ticket_page(web, doc, autoprint=bool(imprimir), back=f"/caja/venta/{sale_id}")


def current_session_id(web: Web) -> int:
    state = carts.load(web.session)
    if state.session_id is None:
        raise Conflict(
            "No hay una caja abierta en este equipo. Elija una caja y abra su sesión.", code="pos.no_session"
        )
    return state.session_id


@get("/ventas")
async def sales_list(request: Request) -> Template:
    """The session's sales, newest first, with a copy ("COPIA") for paid ones."""
    web = Web(request)
    session_id = current_session_id(web)
    rows = await web.call(sales.list_sales, web.venue_id, session_id=session_id, limit=200)
    return await web.page("printing/sales.html", sales=rows, state=carts.load(web.session))


class DrawerForm(msgspec.Struct, kw_only=True):
    reason: str = ""
    supervisor_code: str = ""  # a cashier opens the drawer with a supervisor's authorization


async def drawer_context(web: Web) -> dict[str, Any]:
    session_id = current_session_id(web)
    return {"state": carts.load(web.session), "jobs": await printing(web).jobs(web.venue_id, session_id=session_id)}


@get("/cajon")
async def drawer_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("printing/drawer.html", **await drawer_context(web))


@post("/cajon")
async def open_drawer(request: Request, data: Annotated[DrawerForm, FORM]) -> Template:
    web = Web(request)
    session_id = current_session_id(web)
    async with web.form("printing/drawer.html", lambda: drawer_context(web), form={"reason": data.reason}):
        grant = await web.authorize(Action.OPEN_DRAWER, data.supervisor_code, session_id=session_id)
        job = await printing(web).open_drawer(web.venue_id, session_id, web.user_id, data.reason, grant)
    return await web.page("printing/drawer.html", **await drawer_context(web), result=job)


@post("/sesion/{session_id:int}/imprimir")
async def pos_print_session(request: Request, session_id: FromPath[int]) -> Template:
    """The closed session's Z report (or X of an open one, for supervisors) on the register's printer."""
    web = Web(request)
    job = await printing(web).print_session_report(web.venue_id, session_id, web.user_id)
    return await job_result(web, job, f"/caja/sesion/{session_id}/ticket?imprimir=1")


@get("/sesion/{session_id:int}/ticket")
async def pos_session_ticket(request: Request, session_id: FromPath[int], imprimir: FromQuery[int] = 0) -> Template:
    web = Web(request)
    doc = await printing(web).report_document(web.venue_id, web.user_id, session_id=session_id)
    return await ticket_page(web, doc, autoprint=bool(imprimir))


async def job_result(web: Web, job: Any, browser_url: str) -> Template:
    return await web.page(
        "printing/job_result.html", partial_template="printing/_job_result.html", job=job, url=browser_url
    )


pos_router = Router(
    path="/caja",
    guards=[requires(*CASHIER)],
    include_in_schema=False,
    route_handlers=[
        sale_print_status,
        retry_print,
        reprint,
        sale_ticket,
        sales_list,
        drawer_page,
        open_drawer,
        pos_print_session,
        pos_session_ticket,
    ],
)


# ---- admin: the register's printer -------------------------------------------------------------------------
def printer_fields(web: Web, config: PrinterConfig) -> dict[str, list[SettingField]]:
    """The inputs of each printer's ``Settings``, filled from the register's configuration."""
    out: dict[str, list[SettingField]] = {}
    for printer in printing(web).printers.all():
        stored = config.settings if config.printer == printer.id else {}
        common = ("codepage", "check_status", "timeout_s")  # where the printer is comes first
        fields = [
            SettingField(
                name=spec.name,
                label=spec.title,
                help=spec.description,
                kind=spec.kind,
                options=list(spec.options),
                value=stored.get(spec.name, spec.default),
            )
            for spec in sorted(describe_settings(printer.Settings), key=lambda spec: spec.name in common)
        ]
        out[printer.id] = fields
    return out


def config_values(config: PrinterConfig) -> dict[str, Any]:
    values: dict[str, Any] = {
        "printer": config.printer,
        "name": config.name,
        "printer_type": config.printer_type,
        "paper_width": str(config.paper_width),
    }
    values.update({flag: "1" for flag in FLAGS if getattr(config, flag)})
    for key, value in config.settings.items():
        values[f"settings.{config.printer}.{key}"] = value
    for n, route in enumerate(config.comandas):
        values[f"comandas.{n}.name"] = route.name
        values[f"comandas.{n}.categories"] = [str(c) for c in route.categories]
        for key, value in route.settings.items():
            values[f"comandas.{n}.{key}"] = value
    return values


async def printer_context(web: Web, register_id: int, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the register's edit page needs for its printer section."""
    config = await printing(web).get_config(web.venue_id, register_id)
    return {
        "printer_values": values if values is not None else config_values(config),
        "printer_config": config,
        "printer_choices": [(p.id, p.name) for p in printing(web).printers.all()],
        "printer_fields": printer_fields(web, config),
        "printer_labels": PRINTER_LABELS,
        "printer_types": TYPE_LABELS,
        "printer_flags": FLAGS,
        "comanda_rows": range(MAX_COMANDAS),
        "codepages": CODEPAGES,
        "categories": await web.call(catalog.list_categories, web.venue_id),
    }


def parse_printer_form(form: FormMultiDict, web: Web) -> dict[str, Any]:
    """The printer form as a raw configuration; the core validates it."""

    def get(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    printer_id = get("printer")
    raw: dict[str, Any] = {
        "printer": printer_id,
        "name": get("name"),
        "printer_type": get("printer_type") or "thermal",
        "paper_width": get("paper_width") or "80",
        **{flag: form.get(flag) is not None for flag in FLAGS},
        "settings": {},
        "comandas": [],
    }
    if printer_id in printing(web).printers:
        printer = printing(web).printers.get(printer_id)
        for spec in describe_settings(printer.Settings):
            key = f"settings.{printer_id}.{spec.name}"
            if spec.kind == "checkbox":
                raw["settings"][spec.name] = form.get(key) is not None
            elif get(key):
                raw["settings"][spec.name] = get(key)
    for n in range(MAX_COMANDAS):
        name, host = get(f"comandas.{n}.name"), get(f"comandas.{n}.host")
        categories = form.getall(f"comandas.{n}.categories", [])
        if not (name or host or categories):
            continue
        settings: dict[str, Any] = {"host": host}
        if get(f"comandas.{n}.port"):
            settings["port"] = get(f"comandas.{n}.port")
        if get(f"comandas.{n}.codepage"):
            settings["codepage"] = get(f"comandas.{n}.codepage")
        try:
            ids = [int(c) for c in categories]
        except ValueError:
            raise ValidationFailed("Categoría inválida.", field=f"printer.comandas.{n}.categories") from None
        raw["comandas"].append({"name": name, "printer": "escpos_network", "settings": settings, "categories": ids})
    return raw


def form_values(form: FormMultiDict) -> dict[str, Any]:
    return {k: (form.getall(k) if k.endswith(".categories") else form.get(k)) for k in form}


async def printer_view(web: Web, register_id: int, **extra: Any) -> Template:
    ctx = await printer_context(web, register_id, extra.pop("values", None))
    register = await web.call(registers.get_register, web.venue_id, register_id)
    return await web.page(
        "printing/printer_page.html", partial_template="printing/_printer_form.html", register=register, **ctx, **extra
    )


@get("/cajas/{register_id:int}/impresora")
async def printer_form(request: Request, register_id: FromPath[int]) -> Template:
    return await printer_view(Web(request), register_id)


@post("/cajas/{register_id:int}/impresora")
async def save_printer(request: Request, register_id: FromPath[int]) -> Template:
    web = Web(request)
    form = await request.form()
    try:
        raw = parse_printer_form(form, web)
        await printing(web).save_config(web.venue_id, register_id, raw, web.user_id)
    except CajaError as error:
        return await printer_view(
            web,
            register_id,
            values=form_values(form),
            errors=error.fields,
            error=error.message,
            status_code=error.status,
        )
    return await printer_view(web, register_id, saved=True)


class TestForm(msgspec.Struct, kw_only=True):
    target: str = "main"


@post("/cajas/{register_id:int}/impresora/probar")
async def test_printer(request: Request, register_id: FromPath[int], data: Annotated[TestForm, FORM]) -> Template:
    web = Web(request)
    job = await printing(web).test_print(web.venue_id, register_id, web.user_id, data.target[:20])
    return await job_result(web, job, f"/admin/cajas/{register_id}/impresora/prueba?imprimir=1")


@get("/cajas/{register_id:int}/impresora/prueba")
async def test_page(request: Request, register_id: FromPath[int], imprimir: FromQuery[int] = 0) -> Template:
    from caja_core.printing import tickets
    from caja_core.venues import service as venues

    web = Web(request)
    config = await printing(web).get_config(web.venue_id, register_id)
    register = await web.call(registers.get_register, web.venue_id, register_id)
    venue = await web.call(venues.get_venue, web.venue_id)
    doc = tickets.printer_test_page(
        venue_name=venue.name,
        register_name=register.name,
        printer_label="navegador de la caja",
        config=config,
        tz=venue.timezone,
    )
    return await ticket_page(web, doc, autoprint=bool(imprimir))


admin_router = Router(
    path="/admin",
    guards=[requires(*ADMIN)],
    include_in_schema=False,
    route_handlers=[printer_form, save_printer, test_printer, test_page],
)


# ---- reports -----------------------------------------------------------------------------------------------
class ReportPrintForm(msgspec.Struct, kw_only=True):
    register_id: int = 0


@post("/cajas/reportes/sesion/{session_id:int}/imprimir")
async def print_session_report(request: Request, session_id: FromPath[int]) -> Template:
    web = Web(request)
    job = await printing(web).print_session_report(web.venue_id, session_id, web.user_id)
    return await job_result(web, job, f"/admin/cajas/reportes/sesion/{session_id}/ticket?imprimir=1")


@post("/cajas/reportes/jornada/{jornada_id:int}/imprimir")
async def print_jornada_report(
    request: Request, jornada_id: FromPath[int], data: Annotated[ReportPrintForm, FORM]
) -> Template:
    web = Web(request)
    job = await printing(web).print_jornada_report(web.venue_id, jornada_id, data.register_id, web.user_id)
    return await job_result(web, job, f"/admin/cajas/reportes/jornada/{jornada_id}/ticket?imprimir=1")


@get("/cajas/reportes/sesion/{session_id:int}/ticket")
async def session_ticket(request: Request, session_id: FromPath[int], imprimir: FromQuery[int] = 0) -> Template:
    web = Web(request)
    doc = await printing(web).report_document(web.venue_id, web.user_id, session_id=session_id)
    return await ticket_page(web, doc, autoprint=bool(imprimir))


@get("/cajas/reportes/jornada/{jornada_id:int}/ticket")
async def jornada_ticket(request: Request, jornada_id: FromPath[int], imprimir: FromQuery[int] = 0) -> Template:
    web = Web(request)
    doc = await printing(web).report_document(web.venue_id, web.user_id, jornada_id=jornada_id)
    return await ticket_page(web, doc, autoprint=bool(imprimir))


async def report_printers(web: Web) -> list[registers.RegisterOut]:
    """Registers with a printer, to choose where a report prints."""
    rows = await web.call(registers.list_registers, web.venue_id)
    service = printing(web)
    return [r for r in rows if (await service.get_config(web.venue_id, r.id)).enabled]


@get("/cajas/reportes/sesion/{session_id:int}/impresion")
async def session_print_controls(request: Request, session_id: FromPath[int]) -> Template:
    web = Web(request)
    session = await web.call(sessions.get_session, web.venue_id, session_id)
    config = await printing(web).get_config(web.venue_id, session.register_id)
    return await web.page(
        "printing/report_print.html",
        partial_template="printing/_report_print.html",
        action=f"/admin/cajas/reportes/sesion/{session_id}/imprimir",
        page_url=f"/admin/cajas/reportes/sesion/{session_id}/ticket",
        printers=None,
        has_printer=config.enabled,
        letter="Z" if session.status == "closed" else "X",
        openings=await printing(web).drawer_openings(web.venue_id, session_id),
    )


@get("/cajas/reportes/jornada/{jornada_id:int}/impresion")
async def jornada_print_controls(request: Request, jornada_id: FromPath[int]) -> Template:
    web = Web(request)
    printers = await report_printers(web)
    return await web.page(
        "printing/report_print.html",
        partial_template="printing/_report_print.html",
        action=f"/admin/cajas/reportes/jornada/{jornada_id}/imprimir",
        page_url=f"/admin/cajas/reportes/jornada/{jornada_id}/ticket",
        printers=printers,
        has_printer=bool(printers),
        letter="Z",
    )


reports_router = Router(
    path="/admin",
    guards=[requires(*SUPERVISOR)],
    include_in_schema=False,
    route_handlers=[
        print_session_report,
        print_jornada_report,
        session_ticket,
        jornada_ticket,
        session_print_controls,
        jornada_print_controls,
    ],
)

routers = [pos_router, admin_router, reports_router]
route_handlers = [public_receipt]

__all__ = ["after_movement", "after_sale", "route_handlers", "routers"]
