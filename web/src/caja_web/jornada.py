"""Jornada (the night's business day): open and close, for supervisors and admins."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.errors import ValidationFailed
from caja_core.jornadas import service as jornadas
from caja_core.payments import service as payments
from caja_core.reports import service as reports
from caja_core.sessions import service as sessions

from .auth import FORM, SUPERVISOR, requires
from .context import Web


class CloseJornada(msgspec.Struct, kw_only=True):
    jornada_id: int = 0


class ApproveClose(msgspec.Struct, kw_only=True):
    note: str = ""


class ResolveForm(msgspec.Struct, kw_only=True):
    outcome: str = ""  # cobrado / no_cobrado
    voucher: str = ""
    terminal_totals: str = ""
    note: str = ""


class ReturnForm(msgspec.Struct, kw_only=True):
    by_hand: str = ""
    note: str = ""


async def jornada_context(web: Web) -> dict:
    current = await web.call(jornadas.current_jornada, web.venue_id)
    report = await web.call(reports.jornada_report, web.venue_id, current.id) if current else None
    return {
        "current": current,
        "decisions": await web.call(payments.supervisor_items, web.venue_id),
        "recent": (await web.call(jornadas.list_jornadas, web.venue_id))[:10],
        "pending": [x for x in report.sessions if x.session.status == "closing"] if report else [],
        "open_sessions": [x for x in report.sessions if x.session.status == "open"] if report else [],
    }


@get("/")
async def jornada_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("jornada.html", **await jornada_context(web))


@post("/abrir")
async def open_jornada(request: Request) -> Response:
    web = Web(request)
    async with web.form("jornada.html", lambda: jornada_context(web)):
        await web.venue_call(jornadas.open_jornada, user_id=web.user_id)
    return web.redirect("/jornada")


@post("/cerrar")
async def close_jornada(request: Request, data: Annotated[CloseJornada, FORM]) -> Response:
    web = Web(request)
    async with web.form("jornada.html", lambda: jornada_context(web)):
        await web.orchestrator.close_jornada(web.venue_id, data.jornada_id, web.user_id)
    return web.redirect("/jornada")


@post("/cobros/{attempt_id:int}/resolver")
async def resolve_payment(request: Request, attempt_id: FromPath[int], data: Annotated[ResolveForm, FORM]) -> Response:
    """A supervisor settles a payment in doubt with evidence (charged / not charged)."""
    web = Web(request)
    async with web.form(
        "jornada.html", lambda: jornada_context(web), form=msgspec.to_builtins(data), resolving=attempt_id
    ):
        await web.orchestrator.resolve_by_hand(
            web.venue_id,
            attempt_id,
            web.user_id,
            charged=resolution_charged(data.outcome),
            voucher=data.voucher,
            terminal_totals=data.terminal_totals,
            note=data.note,
        )
    return web.redirect("/jornada")


@post("/cobros/{attempt_id:int}/devolver")
async def return_duplicate(request: Request, attempt_id: FromPath[int], data: Annotated[ReturnForm, FORM]) -> Response:
    """A duplicate charge: returned through the provider, or recorded as returned on the device by hand."""
    web = Web(request)
    async with web.form(
        "jornada.html", lambda: jornada_context(web), form=msgspec.to_builtins(data), returning=attempt_id
    ):
        await web.orchestrator.refund_attempt(
            web.venue_id, attempt_id, web.user_id, by_hand=bool(data.by_hand), note=data.note
        )
    return web.redirect("/jornada")


def resolution_charged(value: str) -> bool:
    if value not in ("cobrado", "no_cobrado"):
        raise ValidationFailed("Indique si el cobro se hizo o no.", code="payment.resolution_outcome", field="outcome")
    return value == "cobrado"


@post("/aprobar/{session_id:int}")
async def approve_close(request: Request, session_id: FromPath[int], data: Annotated[ApproveClose, FORM]) -> Response:
    web = Web(request)
    async with web.form("jornada.html", lambda: jornada_context(web), form={"note": data.note}, approving=session_id):
        await web.venue_call(sessions.approve_close, session_id=session_id, user_id=web.user_id, note=data.note)
    return web.redirect("/jornada")


router = Router(
    path="/jornada",
    include_in_schema=False,
    guards=[requires(*SUPERVISOR)],
    route_handlers=[jornada_page, open_jornada, close_jornada, approve_close, resolve_payment, return_duplicate],
)
