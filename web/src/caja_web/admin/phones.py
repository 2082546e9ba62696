"""/admin/celulares: the backup provider's phones (tap-on-phone) that the fallback policy counts."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.backup_phones import service as phones
from caja_core.backup_phones.schemas import BackupPhoneInput
from caja_core.registers import service as registers

from ..auth import FORM
from ..context import Web


class PhoneForm(msgspec.Struct, kw_only=True):
    name: str = ""
    identifier: str = ""
    register_id: str = ""


class AvailabilityForm(msgspec.Struct, kw_only=True):
    available: str = ""


async def phones_context(web: Web) -> dict:
    return {
        "phones": await web.call(phones.list_phones, web.venue_id),
        "registers": await web.call(registers.list_registers, web.venue_id),
    }


@get("/celulares")
async def phones_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/phones.html", **await phones_context(web))


@post("/celulares")
async def create_phone(request: Request, data: Annotated[PhoneForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("admin/phones.html", lambda: phones_context(web), form=msgspec.to_builtins(data)):
        await web.venue_call(
            phones.create_phone,
            actor_id=web.user_id,
            data=BackupPhoneInput(
                name=data.name,
                identifier=data.identifier,
                register_id=int(data.register_id)
                if data.register_id.isascii() and data.register_id.isdigit() and len(data.register_id) <= 18
                else None,
            ),
        )
    return web.redirect("/admin/celulares")


@post("/celulares/{phone_id:int}/disponible")
async def set_availability(
    request: Request, phone_id: FromPath[int], data: Annotated[AvailabilityForm, FORM]
) -> Response:
    web = Web(request)
    await web.venue_call(
        phones.set_availability, phone_id=phone_id, available=data.available == "1", actor_id=web.user_id
    )
    return web.redirect("/admin/celulares")


@post("/celulares/{phone_id:int}/eliminar")
async def delete_phone(request: Request, phone_id: FromPath[int]) -> Response:
    web = Web(request)
    async with web.form("admin/phones.html", lambda: phones_context(web)):
        await web.venue_call(phones.delete_phone, phone_id=phone_id, actor_id=web.user_id)
    return web.redirect("/admin/celulares")


route_handlers = [phones_page, create_phone, set_availability, delete_phone]
