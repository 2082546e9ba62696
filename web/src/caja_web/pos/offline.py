"""Selling without the server, the web side: the service worker, the offline sale screen it keeps, the register's
data it keeps (catalogue, session, cashier, offline rule), and the one JSON endpoint the device syncs through."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.params import FromPath, FromQuery
from litestar.utils.scope.state import ScopeState

from caja_core.catalog import service as catalog
from caja_core.errors import CajaError
from caja_core.offline import service as offline
from caja_core.registers import service as registers
from caja_core.users import service as users

from ..auth import CASHIER, FORM, SUPERVISOR, requires
from ..context import Web
from ..validation import spanish_validation
from . import cart as carts

SERVICE_WORKER = Path(__file__).resolve().parent.parent / "static" / "js" / "caja-sw.js"
#: A sync request carries at most ``offline.MAX_BATCH`` sales; this is far above that and far below harm.
MAX_BODY_BYTES = 256 * 1024


class SyncRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    device_id: str
    sales: list[offline.OfflineSaleIn] = msgspec.field(default_factory=list)
    period: offline.OfflinePeriodIn | None = None
    #: The device's register and how many sales it still holds besides these (its queue report, like the poll's).
    register_id: offline.Id | None = None
    unsynced: Annotated[int, msgspec.Meta(ge=0, le=offline.MAX_UNSYNCED)] | None = None


def _error(status: int, message: str, code: str) -> Response[Any]:
    return Response({"error": code, "message": message}, status_code=status, media_type=MediaType.JSON)


@get("/caja-sw.js", include_in_schema=False, sync_to_thread=False)
def service_worker() -> Response[bytes]:
    """The service worker, from the site's root so that it may control the POS (``/caja/``)."""
    return Response(
        SERVICE_WORKER.read_bytes(),
        media_type="text/javascript",  # the framework adds the charset of text types
        headers={"Cache-Control": "no-cache"},
    )


@get("/", include_in_schema=False)
async def offline_screen(request: Request) -> Response[Any]:
    """The offline sale screen (the service worker keeps it; online it syncs what the device holds)."""
    web = Web(request)
    return await web.page("pos/offline.html", banner=False)


@get("/datos", include_in_schema=False)
async def offline_data(request: Request) -> Response[Any]:
    """What the device keeps to sell offline: the register, its open session, the cashier, the catalogue (each
    product with its modifiers) and the version of its offline rule (the methods it allows; never the integrated
    terminal: it needs the server). The device names that version in each sale it takes offline."""
    web = Web(request)
    state = carts.load(web.session)
    if state.session_id is None or state.register_id is None:
        return _error(409, "No hay una caja abierta en este equipo.", "pos.no_session")
    register = await web.call(registers.get_register, web.venue_id, state.register_id)
    rule = await web.call(offline.give_rule, web.venue_id, register.id)
    backup = rule.backup_provider
    try:
        backup_name = web.registry.get(backup).name if backup else ""
    except Exception:  # noqa: BLE001 - a provider no longer installed: its id is its name
        backup_name = backup
    products = await web.call(catalog.list_products, web.venue_id, register_id=register.id)
    modifiers = catalog.modifiers_by_product(
        products, await web.call(catalog.list_modifiers, web.venue_id, active_only=True)
    )
    categories = await web.call(catalog.list_categories, web.venue_id, active_only=True)
    assert web.viewer is not None
    return Response(
        {
            "register": {"id": register.id, "name": register.name, "code": register.code},
            "session": {"id": state.session_id},
            "cashier": {"id": web.viewer.id, "name": web.viewer.name},
            "categories": [{"id": c.id, "name": c.name} for c in categories],
            "products": [
                {
                    "id": p.id,
                    "name": p.name,
                    "price": p.price,
                    "category_id": p.category_id,
                    "shortcut": p.shortcut,
                    # What its chooser offers offline, as on the sale screen (the server prices them at sync).
                    "modifiers": [
                        {
                            "id": m.id,
                            "name": m.name,
                            "price": m.price_delta,
                            "group": m.group_name,
                            "required": m.required,
                        }
                        for m in modifiers.get(p.id, [])
                    ],
                }
                for p in products
            ],
            "rule": {
                "version": rule.id,
                "fingerprint": rule.fingerprint,
                "methods": rule.methods,
                "backup_name": backup_name or "respaldo",
            },
            "timezone": web.viewer.timezone,
            "csrf": ScopeState.from_scope(request.scope).csrf_token or "",
        },
        media_type=MediaType.JSON,
        headers={"Cache-Control": "no-store"},
    )


@post("/sincronizar", include_in_schema=False, status_code=200)
async def sync(request: Request) -> Response[Any]:
    """The device's queued sales, in order: each answered once and forever (accepted with its sale, rejected
    with the reason). JSON in, JSON out; bad input is a 4xx with a Spanish message and writes nothing."""
    web = Web(request)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "Demasiadas ventas en un envío.", "offline.too_large")
    if b"\\u0000" in body or b"\x00" in body:
        return _error(400, "El envío tiene caracteres inválidos.", "offline.invalid")
    try:
        data = msgspec.json.decode(body, type=SyncRequest)
    except msgspec.ValidationError as exc:  # well-formed JSON, wrong shape
        return _error(422, f"El envío no es válido: {spanish_validation(str(exc))}.", "offline.invalid")
    except msgspec.DecodeError:
        return _error(400, "El envío no es válido (JSON con ventas).", "offline.invalid")
    try:
        results = await offline.sync_sales(
            web.db,
            venue_id=web.venue_id,
            user_id=web.user_id,
            device_id=data.device_id,
            sales=data.sales,
            period=data.period,
        )
    except CajaError as exc:
        return _error(exc.status, exc.message, exc.code)
    await report_device_queue(web, data.register_id, data.device_id, data.unsynced)
    return Response({"results": msgspec.to_builtins(results)}, media_type=MediaType.JSON)


async def report_device_queue(web: Web, register_id: int | None, device: str | None, unsynced: int | None) -> None:
    """The sale screen's poll says how many offline sales this device still holds (the close waits for them)."""
    if register_id is None or not device or unsynced is None:
        return
    try:
        await web.apart(  # the poll is a GET (its unit only reads): this report is its own short write
            offline.report_queue,
            venue_id=web.venue_id,
            register_id=register_id,
            device_id=device,
            unsynced=unsynced,
            user_id=web.user_id,
        )
    except CajaError:
        return  # a malformed report is ignored: the poll still answers


# ---- the supervisor: rejected offline sales ----------------------------------------------------------------------
class ResolveForm(msgspec.Struct, kw_only=True):
    note: str = ""


async def rejected_context(web: Web) -> dict[str, Any]:
    return {
        "rejected": await web.call(offline.list_offline_sales, web.venue_id, status="rejected"),
        "late": await web.call(offline.list_offline_sales, web.venue_id, status="late"),
        "register_names": {r.id: r.name for r in await web.call(registers.list_registers, web.venue_id)},
        "cashier_names": await web.call(users.user_names, web.venue_id),
    }


@get("/", include_in_schema=False)
async def rejected_page(request: Request, ok: FromQuery[int] = 0) -> Response[Any]:
    web = Web(request)
    return await web.page("offline_rejected.html", ok=bool(ok), **await rejected_context(web))


@post("/{offline_sale_id:int}/resolver", include_in_schema=False)
async def resolve_rejected(
    request: Request, offline_sale_id: FromPath[int], data: Annotated[ResolveForm, FORM]
) -> Response[Any]:
    web = Web(request)
    async with web.form(
        "offline_rejected.html",
        lambda: rejected_context(web),
        form=msgspec.to_builtins(data),
        resolving=offline_sale_id,
    ):
        await web.venue_call(
            offline.resolve_rejected, offline_sale_id=offline_sale_id, user_id=web.user_id, note=data.note
        )
    return web.redirect("/jornada/sin-conexion?ok=1")


supervisor_router = Router(
    path="/jornada/sin-conexion",
    guards=[requires(*SUPERVISOR)],
    include_in_schema=False,
    route_handlers=[rejected_page, resolve_rejected],
)

router = Router(
    path="/caja/sin-conexion",
    guards=[requires(*CASHIER)],
    include_in_schema=False,
    route_handlers=[offline_screen, offline_data, sync],
)
route_handlers = [service_worker, router, supervisor_router]
