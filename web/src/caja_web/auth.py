"""Login (staff by username + password, cashiers by name + PIN), logout (here or everywhere), role guards that
follow the user on every request. Failed logins are counted and throttled by the core (``users.service``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Template

from caja_core.users import service as users
from caja_core.venues import service as venues

from .context import Viewer, Web, viewer_from
from .stores import rotate_session_id

FORM = Body(media_type=RequestEncodingType.URL_ENCODED)

CASHIER = ("cashier", "supervisor", "admin")
SUPERVISOR = ("supervisor", "admin")
ADMIN = ("admin",)

HOME = {"cashier": "/caja/", "supervisor": "/jornada", "admin": "/admin/"}


def requires(*roles: str):
    """A guard: the viewer must be logged in (else → login) and have one of ``roles`` (else → 403). The user
    behind the session is read on every request (one primary-key read): a deactivated user, a new role, a
    new password or PIN, or "log out everywhere" end the session on the next request."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        viewer = viewer_from(connection)
        if viewer is None:
            raise NotAuthorizedException("login required")
        db = connection.app.state.db
        async with db.autocommit() as conn:  # one statement: no transaction round trips, no ORM session
            current = await users.session_user(conn, viewer.id)
        if (
            current is None
            or not current.active
            or current.venue_id != viewer.venue_id
            or current.credentials_version != viewer.cv
            or current.role != viewer.role
        ):
            connection.scope["session"] = {}  # the middleware drops the stored session
            raise NotAuthorizedException("session no longer valid")
        if viewer.role not in roles:
            raise PermissionDeniedException("role")

    guard.__name__ = f"requires_{'_'.join(roles)}"
    return guard


class PasswordLogin(msgspec.Struct, kw_only=True):
    venue_id: int = 0
    username: str = ""
    password: str = ""


class PinLogin(msgspec.Struct, kw_only=True):
    venue_id: int = 0
    user_id: int = 0
    pin: str = ""


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _venue(web: Web, slug: str | None):
    if slug:
        return await web.call(venues.get_venue_by_slug, slug)
    return await web.call(venues.first_venue)


async def login_context(web: Web, slug: str | None = None) -> dict:
    venue = await _venue(web, slug)
    cashiers = await web.call(users.list_cashiers, venue.id) if venue else []
    return {"venue": venue, "cashiers": cashiers}


async def start_session(request: Request, user: users.UserOut, venue: venues.VenueOut) -> None:
    """A fresh session (new id, old data dropped) holding who logged in."""
    await rotate_session_id(request)
    viewer = Viewer(
        id=user.id,
        cv=user.credentials_version,
        venue_id=venue.id,
        role=user.role,
        name=user.display_name,
        venue_name=venue.name,
        timezone=venue.timezone,
    )
    request.set_session({"viewer": msgspec.to_builtins(viewer)})


@get("/login", name="login", include_in_schema=False)
async def login_page(request: Request, local: FromQuery[str | None] = None) -> Template:
    web = Web(request)
    return await web.page("auth/login.html", **await login_context(web, local))


@get("/login/pin/{user_id:int}", include_in_schema=False)
async def pin_page(request: Request, user_id: FromPath[int], local: FromQuery[str | None] = None) -> Template:
    web = Web(request)
    context = await login_context(web, local)
    cashier = next((c for c in context["cashiers"] if c.id == user_id), None)
    return await web.page("auth/pin.html", cashier=cashier, **context)


@post("/login", include_in_schema=False)
async def login_password(request: Request, data: Annotated[PasswordLogin, FORM]) -> Response:
    web = Web(request)
    async with web.form("auth/login.html", lambda: login_context(web), form={"username": data.username[:60]}):
        venue = await web.call(venues.get_venue, data.venue_id)
        user = await users.authenticate_password(
            web.db, venue_id=venue.id, username=data.username, password=data.password, address=client_ip(request)
        )
    await start_session(request, user, venue)
    return web.redirect(HOME[user.role])


@post("/login/pin", include_in_schema=False)
async def login_pin(request: Request, data: Annotated[PinLogin, FORM]) -> Response:
    web = Web(request)

    async def context() -> dict:
        ctx = await login_context(web)
        return ctx | {"cashier": next((c for c in ctx["cashiers"] if c.id == data.user_id), None)}

    async with web.form("auth/pin.html", context):
        venue = await web.call(venues.get_venue, data.venue_id)
        user = await users.authenticate_pin(
            web.db, venue_id=venue.id, user_id=data.user_id, pin=data.pin, address=client_ip(request)
        )
    await start_session(request, user, venue)
    return web.redirect(HOME[user.role])


@post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    request.clear_session()
    return Web(request).redirect("/login")


@post("/logout/todos", include_in_schema=False, guards=[requires(*CASHIER)])
async def logout_everywhere(request: Request) -> Response:
    """End this user's sessions on every device (a lost or shared device)."""
    web = Web(request)
    await web.call(users.logout_everywhere, web.venue_id, web.user_id, actor_id=web.user_id)
    request.clear_session()
    return web.redirect("/login")


@get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    viewer = viewer_from(request)
    return Web(request).redirect(HOME[viewer.role] if viewer else "/login")


route_handlers = [login_page, pin_page, login_password, login_pin, logout, logout_everywhere, home]
