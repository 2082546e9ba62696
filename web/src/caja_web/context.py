"""What every handler works with: ``Web`` (request, database, logged-in user, rendering helpers).

One helper decides full page vs partial: a normal request renders the page inside ``base.html``; an HTMX
request (``HX-Request`` without ``HX-Boosted``) renders the same template inside ``_partial.html``, which
outputs only the content block.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_200_OK

from caja_core.errors import CajaError
from caja_core.jornadas import service as jornadas

T = TypeVar("T")

ROLE_LABELS = {"admin": "Administrador", "supervisor": "Supervisor", "cashier": "Cajero"}


class Viewer(msgspec.Struct, kw_only=True):
    """The logged-in user, as kept in the server-side session."""

    id: int
    venue_id: int
    role: str
    name: str
    cv: int = 0  # the user's credentials version when the session was opened
    venue_name: str = ""
    timezone: str = "America/Santiago"

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_supervisor(self) -> bool:
        return self.role in ("supervisor", "admin")


def viewer_from(connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer | None:
    raw = connection.scope.get("session") or {}
    data = raw.get("viewer") if isinstance(raw, dict) else None
    if not data:
        return None
    try:
        return msgspec.convert(data, Viewer)
    except msgspec.ValidationError:
        return None


class FormRejected(Exception):
    """A form the services refused: the exception handler re-renders ``template`` with the errors."""

    def __init__(self, template: str, context: dict[str, Any], error: CajaError) -> None:
        super().__init__(error.message)
        self.template = template
        self.context = context
        self.error = error


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


class Web:
    """Handler helper: ``await web.call(service_fn, ...)`` runs one service in one transaction."""

    def __init__(self, request: Request, unit: Any = None) -> None:
        self.request = request
        self.state: State = request.app.state
        self.db = self.state.db
        self.viewer = viewer_from(request)
        #: The request's one transaction (``caja_web.units``), when the handler asked for it.
        self.unit = unit

    # ---- who ----------------------------------------------------------------------------------------
    @property
    def venue_id(self) -> int:
        assert self.viewer is not None, "guarded handler without a viewer"
        return self.viewer.venue_id

    @property
    def user_id(self) -> int:
        assert self.viewer is not None, "guarded handler without a viewer"
        return self.viewer.id

    @property
    def session(self) -> dict[str, Any]:
        return self.request.session

    @property
    def registry(self):
        return self.state.registry

    @property
    def orchestrator(self):
        return self.state.orchestrator

    # ---- services -----------------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``fn(session, ...)`` in the request's unit when the handler has one, else in its own transaction."""
        if self.unit is not None:
            return await fn(await self.unit.session(), *args, **kwargs)
        async with self.db.session() as s:
            return await fn(s, *args, **kwargs)

    async def apart(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``fn(session, ...)`` in a transaction of its own, committed even if the request then fails (a GET's
        write, a record that must stay). With a unit, it must run before the unit writes."""
        if self.unit is not None:
            self.unit.check_apart()
        async with self.db.session() as s:
            return await fn(s, *args, **kwargs)

    async def poll(self, sale_id: int, sale: Any = None) -> Any:
        """How the sale's payment stands (the orchestrator's progress), read in the request's unit if any; in the
        unit, ``sale`` (the sale as this request just read it there) is not read again."""
        if self.orchestrator is None:
            return None
        if self.unit is None:
            return await self.orchestrator.poll(venue_id=self.venue_id, sale_id=sale_id)
        session = await self.unit.session()
        return await self.orchestrator.poll(venue_id=self.venue_id, sale_id=sale_id, session=session, sale=sale)

    async def follow(self, sale_id: int) -> tuple[Any, Any] | None:
        """The sale (without its lines) and how its payment stands, in one statement of its own (the panel that
        follows a payment, refreshed every second); None without an orchestrator."""
        if self.orchestrator is None:
            return None
        return await self.orchestrator.follow(venue_id=self.venue_id, sale_id=sale_id)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once what this request wrote is committed (at once without a unit; never on a rollback)."""
        if self.unit is not None:
            self.unit.after_commit(fn)
        else:
            fn()

    async def authorize(self, action: Any, code: str | None, **scope: Any) -> int | None:
        """A supervisor's authorization typed at this register (PIN or badge), for ``action`` on ``scope``
        (session_id, sale_id, amount); None when no code was typed (the service says if one is needed)."""
        if not (code or "").strip():
            return None
        from caja_core.permissions.service import grant, verify_authorizer

        client = self.request.client.host if self.request.client else "?"
        if self.unit is not None:  # a wrong code is counted even when the request fails: its own transaction
            self.unit.check_apart()
        verified = await verify_authorizer(
            self.db,
            venue_id=self.venue_id,
            action=action,
            actor_id=self.user_id,
            code=code or "",
            address=client,
            **scope,
        )
        # The authorization is written with the act it is for: an act then refused leaves none granted.
        return await self.call(grant, verified)

    async def venue_call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(s, venue_id=..., ...)`` scoped to the viewer's venue (keyword form)."""
        return await self.call(fn, *args, venue_id=self.venue_id, **kwargs)

    @contextlib.asynccontextmanager
    async def form(
        self,
        template: str | Callable[[dict[str, Any]], str],
        context: Callable[[], Awaitable[dict[str, Any]]] | dict[str, Any] | None = None,
        **extra: Any,
    ) -> AsyncIterator[None]:
        """Turn a refused service call into a re-rendered form with Spanish field errors; ``template`` may be
        chosen from the context read after the refusal (what the record is now)."""
        try:
            yield
        except CajaError as error:
            ctx = await self.base_context(self.htmx)
            ctx.update(extra)
            if callable(context):
                ctx.update(await context())
            elif context:
                ctx.update(context)
            raise FormRejected(template(ctx) if callable(template) else template, ctx, error) from error

    # ---- responses ----------------------------------------------------------------------------------
    @property
    def htmx(self) -> bool:
        return is_htmx(self.request)

    async def page(
        self,
        template: str,
        *,
        status_code: int = HTTP_200_OK,
        partial: bool | None = None,
        partial_template: str | None = None,
        full_context: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Template:
        """Render ``template`` as a full page, or as a partial on an HTMX request. A page made of parts
        names the part an HTMX request gets (``partial_template``) and how to build the rest of the page
        (``full_context``), which is skipped for partials."""
        partial = self.htmx if partial is None else partial
        base = await self.base_context(partial)
        if not partial and full_context is not None:
            base.update(await full_context())
        base.update(context)
        if partial and partial_template:
            template = partial_template
        return Template(template_name=template, context=base, status_code=status_code, headers=headers)

    def plain_context(self, partial: bool) -> dict[str, Any]:
        """The context every template gets, without database work (error pages use only this)."""
        return {
            "layout": "_partial.html" if partial else "base.html",
            "viewer": self.viewer,
            "request": self.request,
            "errors": {},
            "form": {},
            "jornada": None,
            "banner": False,
            "path": self.request.url.path,
        }

    async def base_context(self, partial: bool) -> dict[str, Any]:
        ctx = self.plain_context(partial)
        if not partial and self.viewer is not None:
            ctx["jornada"] = await self.call(jornadas.current_jornada, self.viewer.venue_id)
            ctx["banner"] = True
        return ctx

    def error_page(self, template: str, *, status_code: int, **context: Any) -> Template:
        """Synchronous rendering for exception handlers (no database work)."""
        base = self.plain_context(self.htmx)
        base.update(context)
        return Template(template_name=template, context=base, status_code=status_code)

    def redirect(self, url: str) -> Response:
        """After a successful POST: a 303 for normal requests, ``HX-Redirect`` for HTMX requests."""
        if self.htmx:
            return Response(content=b"", status_code=200, headers={"HX-Redirect": url})
        return Redirect(path=url, status_code=303)
