"""/admin/limites: the venue's discount limit without a supervisor and the tip the POS suggests."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Template

from caja_core.errors import ValidationFailed
from caja_core.money import MAX_AMOUNT, parse_amount
from caja_core.permissions import service as permissions

from ..auth import FORM
from ..context import Web


class LimitsForm(msgspec.Struct, kw_only=True):
    discount_limit: str = ""
    suggested_tip_percent: str = ""


def tip_percent(value: str) -> int:
    text = (value or "").strip().replace("%", "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 3 or not 0 <= int(text) <= 100:
        raise ValidationFailed(
            "La propina sugerida debe ser un porcentaje entero de 0 a 100 (0: no se sugiere propina).",
            field="suggested_tip_percent",
        )
    return int(text)


async def limits_context(web: Web) -> dict:
    return {"controls": await web.call(permissions.get_controls, web.venue_id)}


@get("/limites")
async def limits_page(request: Request, guardado: FromQuery[int] = 0) -> Template:
    web = Web(request)
    return await web.page("admin/limits.html", saved=bool(guardado), **await limits_context(web))


@post("/limites")
async def save_limits(request: Request, data: Annotated[LimitsForm, FORM]) -> Response:
    """Both values are checked before either is saved; the change is in the audit log with who made it."""
    web = Web(request)
    async with web.form("admin/limits.html", lambda: limits_context(web), form=msgspec.to_builtins(data)):
        limit = parse_amount(
            data.discount_limit,
            field="discount_limit",
            allow_zero=True,
            maximum=MAX_AMOUNT,
            label="El descuento máximo sin autorización",
        )
        percent = tip_percent(data.suggested_tip_percent)
        await web.venue_call(
            permissions.set_controls, actor_id=web.user_id, discount_limit=limit, suggested_tip_percent=percent
        )
    return web.redirect("/admin/limites?guardado=1")


route_handlers = [limits_page, save_limits]
