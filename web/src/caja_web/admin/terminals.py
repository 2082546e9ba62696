"""/admin/terminales: check every terminal against caja now, run a terminal's batch close, see both."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.jornadas import service as jornadas
from caja_core.payments import terminal_ops
from caja_core.registers import service as registers

from ..auth import FORM
from ..context import Web


class CloseForm(msgspec.Struct, kw_only=True):
    provider_id: str = ""


async def terminals_context(web: Web) -> dict:
    current = await web.call(jornadas.current_jornada, web.venue_id)
    jornada_id = current.id if current else None
    return {
        "current": current,
        "registers": await web.call(registers.list_registers, web.venue_id),
        "checks": list(reversed(await web.call(terminal_ops.list_checks, web.venue_id, jornada_id=jornada_id))),
        "closes": list(reversed(await web.call(terminal_ops.list_closes, web.venue_id, jornada_id=jornada_id))),
    }


@get("/terminales")
async def terminals_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/terminals.html", **await terminals_context(web))


@post("/terminales/revisar")
async def check_now(request: Request) -> Template:
    """Each terminal's own totals and sales against caja's approved payments, now."""
    web = Web(request)
    async with web.form("admin/terminals.html", lambda: terminals_context(web)):
        results = await web.orchestrator.check_terminals(web.venue_id, user_id=web.user_id, trigger="admin")
    return await web.page("admin/terminals.html", **await terminals_context(web), results=results, checked=True)


@post("/terminales/{register_id:int}/cierre-lote")
async def close_batch(request: Request, register_id: FromPath[int], data: Annotated[CloseForm, FORM]) -> Template:
    """The batch close of a register's terminal, refused while it has payments in flight or in doubt."""
    web = Web(request)
    async with web.form("admin/terminals.html", lambda: terminals_context(web), closing=register_id):
        closed = await web.orchestrator.close_batch(
            web.venue_id, register_id, web.user_id, provider_id=data.provider_id or None
        )
    return await web.page("admin/terminals.html", **await terminals_context(web), closed=closed)


route_handlers = [terminals_page, check_now, close_batch]
