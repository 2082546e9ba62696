"""/admin/modificadores: the choices a cashier adds to a product when selling it ("doble", "sin hielo")."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.catalog import service as catalog
from caja_core.errors import ValidationFailed

from ..auth import FORM
from ..context import Web


class ModifierForm(msgspec.Struct, kw_only=True):
    applies_to: str = ""  # "p:<product id>" or "c:<category id>"
    name: str = ""
    price_delta: str = ""
    free: str = ""  # "1": sin costo
    sort_order: str = ""
    group_name: str = ""  # the choice it is one option of ("Tamaño")
    required: str = ""  # "1": the group must be chosen (one of it)


class ToggleForm(msgspec.Struct, kw_only=True):
    active: str = ""


def applies_to(value: str) -> tuple[int | None, int | None]:
    """``p:12`` → (12, None), ``c:3`` → (None, 3); anything else is a Spanish error."""
    kind, _, raw = (value or "").partition(":")
    if kind in ("p", "c") and raw.isascii() and raw.isdigit() and len(raw) <= 9:
        return (int(raw), None) if kind == "p" else (None, int(raw))
    raise ValidationFailed("Elija un producto o una categoría (uno de los dos).", field="applies_to")


async def modifiers_context(web: Web) -> dict:
    return {
        "modifiers": await web.call(catalog.list_modifiers, web.venue_id),
        "categories": await web.call(catalog.list_categories, web.venue_id),
        "products": await web.call(catalog.list_products, web.venue_id, active_only=False),
    }


@get("/modificadores")
async def modifiers_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/modifiers.html", **await modifiers_context(web))


@post("/modificadores")
async def create_modifier(request: Request, data: Annotated[ModifierForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("admin/modifiers.html", lambda: modifiers_context(web), form=msgspec.to_builtins(data)):
        product_id, category_id = applies_to(data.applies_to)
        order = data.sort_order.strip()
        if order and not (order.isascii() and order.isdigit() and len(order) <= 6):
            raise ValidationFailed("El orden debe ser un número entero.", field="sort_order")
        await web.venue_call(
            catalog.create_modifier,
            product_id=product_id,
            category_id=category_id,
            name=data.name,
            price_delta="0" if data.free == "1" else data.price_delta,
            sort_order=int(order or 0),
            group_name=data.group_name,
            required=data.required == "1",
            actor_id=web.user_id,
        )
    return web.redirect("/admin/modificadores")


@post("/modificadores/{modifier_id:int}/activo")
async def toggle_modifier(request: Request, modifier_id: FromPath[int], data: Annotated[ToggleForm, FORM]) -> Response:
    web = Web(request)
    await web.venue_call(
        catalog.set_modifier_active, modifier_id=modifier_id, active=data.active == "1", actor_id=web.user_id
    )
    return web.redirect("/admin/modificadores")


class RequiredForm(msgspec.Struct, kw_only=True):
    required: str = ""


@post("/modificadores/{modifier_id:int}/obligatorio")
async def toggle_required(
    request: Request, modifier_id: FromPath[int], data: Annotated[RequiredForm, FORM]
) -> Response:
    """The modifier's group made required (the cashier must choose one of it) or optional."""
    web = Web(request)
    async with web.form("admin/modifiers.html", lambda: modifiers_context(web)):
        await web.venue_call(
            catalog.set_group_required, modifier_id=modifier_id, required=data.required == "1", actor_id=web.user_id
        )
    return web.redirect("/admin/modificadores")


route_handlers = [modifiers_page, create_modifier, toggle_modifier, toggle_required]
