"""Admin and supervisor pages. Reports are for supervisors and admins; everything else is admin-only."""

from __future__ import annotations

from litestar import Request, Router, get
from litestar.response import Template

from caja_core.jornadas import service as jornadas
from caja_core.payments import breaker as breakers
from caja_core.registers import service as registers

from ..auth import ADMIN, SUPERVISOR, requires
from ..context import Web
from . import catalog, limits, modifiers, phones, reports, terminals, users, verification
from . import registers as register_pages


async def health_context(web: Web) -> dict:
    return {
        "registers": await web.call(registers.list_registers, web.venue_id),
        "breakers": await web.call(breakers.all_states, web.venue_id),
        "jornada": await web.call(jornadas.current_jornada, web.venue_id),
    }


@get("/")
async def dashboard(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/dashboard.html")


@get("/salud")
async def health_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/health.html", **await health_context(web))


admin_router = Router(
    path="/admin",
    guards=[requires(*ADMIN)],
    include_in_schema=False,
    route_handlers=[
        dashboard,
        health_page,
        *register_pages.route_handlers,
        *catalog.route_handlers,
        *limits.route_handlers,
        *modifiers.route_handlers,
        *users.route_handlers,
        *phones.route_handlers,
        *terminals.route_handlers,
    ],
)

reports_router = Router(
    path="/admin",
    guards=[requires(*SUPERVISOR)],
    include_in_schema=False,
    route_handlers=[*reports.route_handlers, *verification.route_handlers],
)

routers = [reports_router, admin_router]
