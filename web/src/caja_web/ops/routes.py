"""Operations endpoints. The core computes (``caja_core.ops``); these handlers only authenticate and render.

* ``GET /health`` (public): ok / degraded → 200, error → 503; JSON ``{"status", "services", ...}``; the
  details (device addresses, error texts, ``problems``) only with the metrics token or an admin session.
* ``GET /health/live`` (public): the process answers.
* ``GET /metrics`` (JSON) and ``GET /metrics/prometheus`` (text exposition): ``Authorization: Bearer
  <CAJA_METRICS_TOKEN>`` or an admin's session. A wrong token is a bare 401.
* ``/admin/respaldos``: backups, their verification, "back up now" and "verify" buttons (admins).

``install(app_config)`` adds the request middleware (request id, log context, request count and latency);
``backup_scheduler_lifespan(settings)`` runs the scheduled backups while the app is up.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import time
import uuid
from typing import Any, Literal

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.config.app import AppConfig
from litestar.middleware.session.server_side import ServerSideSessionBackend
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import Template

from caja_core.ops import backups, metrics
from caja_core.ops.health import check_health, liveness
from caja_core.ops.logging import log_context

from ..auth import ADMIN, requires
from ..context import Viewer, Web, viewer_from

BACKUP_MAX_AGE_HOURS = 26.0

# ------------------------------------------------------------------------------ documented bodies (OpenAPI)
#: Security requirement of the metrics endpoints (the scheme is declared in the app's OpenAPI config).
METRICS_SECURITY: list[dict[str, list[str]]] = [{"metricsToken": []}]


class HealthOut(msgspec.Struct, kw_only=True):
    """``/health`` when the app works (maybe degraded). Without the metrics token only the states."""

    status: Literal["ok", "degraded"]
    checked_at: str
    version: str
    services: dict[str, Any]
    instance: str | None = None
    problems: list[str] | None = None


class HealthErrorOut(msgspec.Struct, kw_only=True):
    """``/health`` when something essential is down (the database, migrations behind)."""

    status: Literal["error"]
    checked_at: str
    version: str
    services: dict[str, Any]
    instance: str | None = None
    problems: list[str] | None = None


class LiveOut(msgspec.Struct, kw_only=True):
    status: Literal["ok"]
    version: str


class MetricsOut(msgspec.Struct, kw_only=True):
    """The JSON summary for the admin dashboard (request, payment, breaker, session and backup figures)."""

    generated_at: str
    status: Literal["ok", "degraded", "error"]


UNAUTHORIZED_SPEC = ResponseSpec(
    data_container=None,
    description="Falta el token de métricas o no es válido (cuerpo vacío, cabecera WWW-Authenticate)",
)
HEALTH_RESPONSES = {
    503: ResponseSpec(
        data_container=HealthErrorOut,
        description="Error: la base de datos no responde o las migraciones no están al día",
    )
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _health_kwargs(request: Request) -> dict[str, Any]:
    state = request.app.state
    settings = state.settings
    registry = getattr(state, "registry", None)
    return {
        "redis_url": settings.redis_url,
        "provider_ids": registry.ids() if registry is not None else None,
        "backup_dir": settings.backup_dir if settings.backup_interval_hours > 0 else None,
        "backup_max_age_hours": BACKUP_MAX_AGE_HOURS,
        "instance": settings.instance_id,
    }


@get(
    "/health",
    cache=False,
    tags=["operación"],
    summary="Estado del sistema",
    description="ok / degraded → 200, error → 503. Sin token solo los estados; con `Authorization: Bearer "
    "<CAJA_METRICS_TOKEN>` (o sesión de administrador) también el detalle y `problems`.",
    responses=HEALTH_RESPONSES,
)
async def health(request: Request) -> Response[HealthOut]:
    report = await check_health(request.app.state.db, **_health_kwargs(request))
    body = report.to_dict() if await metrics_allowed(request) else report.public_dict()
    return Response[Any](
        body, status_code=report.http_status, media_type=MediaType.JSON, headers={"Cache-Control": "no-store"}
    )


@get(
    "/health/live",
    cache=False,
    tags=["operación"],
    summary="El proceso responde",
    description="No revisa dependencias: para el supervisor de procesos.",
)
async def health_live() -> Response[LiveOut]:
    return Response[Any](liveness(), media_type=MediaType.JSON, headers={"Cache-Control": "no-store"})


def _unauthorized() -> Response:
    return Response(b"", status_code=401, headers={"WWW-Authenticate": 'Bearer realm="caja-metrics"'})


async def _session_viewer(request: Request) -> Viewer | None:
    """The logged-in user, also on paths where the session middleware does not load the session (the JSON
    endpoints are excluded from it): read through the app's own server-side session backend."""
    viewer = viewer_from(request)
    if viewer is not None:
        return viewer
    for middleware in request.app.middleware:
        backend = getattr(middleware, "kwargs", {}).get("backend")
        if isinstance(backend, ServerSideSessionBackend):
            data = await backend.load_from_connection(request)
            try:
                return msgspec.convert(data.get("viewer"), Viewer) if data.get("viewer") else None
            except msgspec.ValidationError:
                return None
    return None


async def metrics_allowed(request: Request) -> bool:
    """A Bearer token equal to CAJA_METRICS_TOKEN (or, while it is rotated, CAJA_METRICS_TOKEN_PREVIOUS), or
    (without an Authorization header) an admin session."""
    settings = request.app.state.settings
    tokens = [t for t in (settings.metrics_token, getattr(settings, "metrics_token_previous", None)) if t]
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        matches = [hmac.compare_digest(given.strip().encode(), token.encode()) for token in tokens]
        return any(matches)
    viewer = await _session_viewer(request)
    return viewer is not None and viewer.is_admin


@get(
    "/metrics",
    cache=False,
    tags=["operación"],
    summary="Resumen de métricas (JSON)",
    security=METRICS_SECURITY,
    responses={401: UNAUTHORIZED_SPEC},
)
async def metrics_json(request: Request) -> Response[MetricsOut]:
    if not await metrics_allowed(request):
        return _unauthorized()
    data = await metrics.collect(request.app.state.db, **_health_kwargs(request))
    return Response[Any](data, media_type=MediaType.JSON, headers={"Cache-Control": "no-store"})


@get(
    "/metrics/prometheus",
    cache=False,
    tags=["operación"],
    summary="Métricas en formato Prometheus",
    media_type=metrics.CONTENT_TYPE,
    security=METRICS_SECURITY,
    responses={401: UNAUTHORIZED_SPEC},
)
async def metrics_prometheus(request: Request) -> Response[str]:
    if not await metrics_allowed(request):
        return _unauthorized()
    await metrics.collect(request.app.state.db, **_health_kwargs(request))
    text = metrics.prometheus_text().decode()
    return Response(text, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------ admin backups page


def _backup_rows(settings) -> list[dict[str, Any]]:
    rows = []
    for m in backups.list_backups(settings.backup_dir):
        rows.append(
            {
                "id": m.id,
                "created_at": m.created_at,
                "kind": m.kind,
                "size": m.size,
                "schema_revision": m.schema_revision,
                "rows": sum(m.row_counts.values()),
                "sha256": m.sha256,
                "verification": m.verification,
            }
        )
    return rows


async def _backups_context(web: Web) -> dict[str, Any]:
    settings = web.state.settings
    return {
        "backups": _backup_rows(settings),
        "status": backups.backup_status(settings.backup_dir, max_age_hours=BACKUP_MAX_AGE_HOURS),
        "interval_hours": settings.backup_interval_hours,
        "keep_daily": settings.backup_keep_daily,
        "keep_weekly": settings.backup_keep_weekly,
        "message": None,
    }


@get("/", name="ops-backups")
async def backups_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("ops/backups.html", **await _backups_context(web))


@post("/crear")
async def backup_now(request: Request) -> Template:
    web = Web(request)
    settings = web.state.settings
    manifest = await backups.create_backup(settings.database_url, settings.backup_dir, kind="manual")
    result = await backups.verify_backup(settings.backup_dir, manifest, database_url=settings.database_url)
    context = await _backups_context(web)
    context["message"] = {
        "ok": result.ok,
        "text": f"Respaldo {manifest.id} creado" + (" y verificado." if result.ok else ": la verificación falló."),
    }
    return await web.page("ops/backups.html", **context)


@post("/{backup_id:str}/verificar")
async def backup_verify(request: Request, backup_id: FromPath[str]) -> Template:
    web = Web(request)
    settings = web.state.settings
    result = await backups.verify_backup(settings.backup_dir, backup_id, database_url=settings.database_url)
    context = await _backups_context(web)
    context["message"] = {
        "ok": result.ok,
        "text": f"Respaldo {backup_id}: "
        + ("verificación correcta." if result.ok else "la verificación FALLÓ: " + "; ".join(result.problems)),
    }
    return await web.page("ops/backups.html", **context)


backups_router = Router(
    path="/admin/respaldos",
    guards=[requires(*ADMIN)],
    include_in_schema=False,
    route_handlers=[backups_page, backup_now, backup_verify],
)

route_handlers = [health, health_live, metrics_json, metrics_prometheus, backups_router]


# ---------------------------------------------------------------------------------- middleware


def request_metrics_middleware(app):
    """ASGI middleware: a request id (``X-Request-ID`` in and out), the log context, and the request's
    count and latency by route template."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        status = 500
        started = time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            with log_context(request_id=request_id):
                await app(scope, receive, send_with_id)
        finally:
            route = scope.get("path_template") or "unmatched"
            metrics.record_request(scope.get("method", "GET"), route, status, time.perf_counter() - started)

    return middleware


def install(app_config: AppConfig, *, settings=None, backups: bool = False) -> AppConfig:
    """Wire operations into an app being configured (also usable as an ``on_app_init`` hook):

    * the request middleware (request id, log context, request count and latency by route);
    * with ``settings``: the process's structured, masked JSON logs (``configure_logging``);
    * with ``backups=True`` (and settings): the scheduled backups inside the app process — for a single
      instance without ``caja worker`` (the demo, a small venue on SQLite).
    """
    if request_metrics_middleware not in app_config.middleware:
        app_config.middleware.insert(0, request_metrics_middleware)
    # Logging is configured once for the process by ``caja_core.ops.logging.configure_logging`` (JSON,
    # masked); Litestar must not install its own handlers over it.
    app_config.logging_config = None
    if settings is not None:
        from caja_core.ops.logging import configure_logging

        configure_logging(settings)
        if backups:
            app_config.lifespan.append(backup_scheduler_lifespan(settings))
    return app_config


def backup_scheduler_lifespan(settings, **overrides):
    """A Litestar lifespan that runs :class:`caja_core.ops.backups.BackupScheduler` while the app is up
    (nothing when ``CAJA_BACKUP_INTERVAL_HOURS=0``)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if settings.backup_interval_hours <= 0:
            yield
            return
        scheduler = backups.BackupScheduler.from_settings(settings, **overrides)
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()

    return lifespan
