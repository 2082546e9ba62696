"""/admin/usuarios: users and roles (passwords for admin/supervisor, PINs for cashiers)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.users import service as users

from ..auth import FORM
from ..context import Web


class UserForm(msgspec.Struct, kw_only=True):
    username: str = ""
    display_name: str = ""
    role: str = "cashier"
    secret: str = ""
    authorization_pin: str = ""


class UserEditForm(msgspec.Struct, kw_only=True):
    display_name: str = ""
    role: str = ""
    secret: str = ""
    active: str = ""
    unlock: str = ""
    authorization_pin: str = ""
    badge: str = ""
    remove_authorization: str = ""


SECRET_FIELDS = ("secret", "authorization_pin", "badge")


def public(data: msgspec.Struct) -> dict:
    return {k: v for k, v in msgspec.to_builtins(data).items() if k not in SECRET_FIELDS}


async def users_context(web: Web) -> dict:
    return {
        "users": await web.call(users.list_users, web.venue_id),
        "roles": users.ROLE_LABELS,
        "pin_length": await web.call(users.pin_length, web.venue_id),
    }


@get("/usuarios")
async def users_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/users.html", **await users_context(web))


@post("/usuarios")
async def create_user(request: Request, data: Annotated[UserForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("admin/users.html", lambda: users_context(web), form=public(data)):
        await web.venue_call(
            users.create_user,
            username=data.username,
            display_name=data.display_name,
            role=data.role,
            secret=data.secret,
            actor_id=web.user_id,
            authorization_pin=data.authorization_pin or None,
        )
    return web.redirect("/admin/usuarios")


async def user_context(web: Web, user_id: int) -> dict:
    return {
        "user": await web.call(users.get_user, web.venue_id, user_id),
        "roles": users.ROLE_LABELS,
        "pin_length": await web.call(users.pin_length, web.venue_id),
    }


@get("/usuarios/{user_id:int}/editar")
async def user_page(request: Request, user_id: FromPath[int]) -> Template:
    web = Web(request)
    return await web.page("admin/user_form.html", **await user_context(web, user_id))


@post("/usuarios/{user_id:int}/editar")
async def update_user(request: Request, user_id: FromPath[int], data: Annotated[UserEditForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("admin/user_form.html", lambda: user_context(web, user_id), form=public(data)):
        await web.call(
            users.update_user,
            web.venue_id,
            user_id,
            actor_id=web.user_id,
            display_name=data.display_name or None,
            role=data.role or None,
            active=data.active == "1",
            secret=data.secret or None,
            unlock=data.unlock == "1",
            authorization_pin=data.authorization_pin or None,
            badge=data.badge or None,
            remove_authorization=data.remove_authorization == "1",
        )
    return web.redirect("/admin/usuarios")


@post("/usuarios/{user_id:int}/cerrar-sesiones")
async def logout_everywhere(request: Request, user_id: FromPath[int]) -> Response:
    """End every web session of the user (a lost device, a cashier who left)."""
    web = Web(request)
    async with web.form("admin/user_form.html", lambda: user_context(web, user_id)):
        await web.call(users.logout_everywhere, web.venue_id, user_id, actor_id=web.user_id)
    return web.redirect(f"/admin/usuarios/{user_id}/editar" if user_id != web.user_id else "/login")


route_handlers = [users_page, create_user, user_page, update_user, logout_everywhere]
