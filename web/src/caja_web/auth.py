"""Login (staff by username + password, cashiers by name + PIN), logout, role guards, login rate limit."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Template

from caja_core.errors import CajaError
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
    """A guard: the viewer must be logged in (else → login) and have one of ``roles`` (else → 403)."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        viewer = viewer_from(connection)
        if viewer is None:
            raise NotAuthorizedException("login required")
        if viewer.role not in roles:
            raise PermissionDeniedException("role")

    guard.__name__ = f"requires_{'_'.join(roles)}"
    return guard


class TooManyAttempts(CajaError):
    status = 429
    code = "auth.rate_limited"


class LoginLimiter:
    """Sliding-window limit of login attempts per client address and per user (in this instance; the
    core also locks an account after repeated failures, across instances)."""

    def __init__(self, max_attempts: int = 10, window_s: float = 60.0, max_per_ip: int = 30) -> None:
        self.max_attempts = max_attempts
        self.max_per_ip = max_per_ip
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def _count(self, key: str, now: float) -> int:
        hits = self._hits[key]
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return len(hits)

    def hit(self, ip: str, who: str) -> None:
        now = time.monotonic()
        keys = {f"ip:{ip}": self.max_per_ip, f"user:{who.strip().lower()}": self.max_attempts}
        for key, limit in keys.items():
            if self._count(key, now) >= limit:
                raise TooManyAttempts("Demasiados intentos de ingreso. Espere un minuto e intente de nuevo.")
        for key in keys:
            self._hits[key].append(now)


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
    async with web.form("auth/login.html", lambda: login_context(web), form={"username": data.username}):
        web.state.login_limiter.hit(client_ip(request), data.username)
        venue = await web.call(venues.get_venue, data.venue_id)
        user = await web.call(
            users.authenticate_password, venue_id=venue.id, username=data.username, password=data.password
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
        web.state.login_limiter.hit(client_ip(request), f"id:{data.user_id}")
        venue = await web.call(venues.get_venue, data.venue_id)
        user = await web.call(users.authenticate_pin, venue_id=venue.id, user_id=data.user_id, pin=data.pin)
    await start_session(request, user, venue)
    return web.redirect(HOME[user.role])


@post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    request.clear_session()
    return Web(request).redirect("/login")


@get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    viewer = viewer_from(request)
    return Web(request).redirect(HOME[viewer.role] if viewer else "/login")


route_handlers = [login_page, pin_page, login_password, login_pin, logout, home]
