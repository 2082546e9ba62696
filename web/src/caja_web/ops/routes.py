"""Operations endpoints. The core computes (``caja_core.ops``); these handlers only authenticate and render.

* ``GET /health`` (public): ok / degraded → 200, error → 503. Anyone gets only ``{"status", "checked_at"}``;
  the metrics token or an install operator's session gets the whole install's report (every venue's
  registers, every process, ``problems``); another venue admin gets that venue's.
* ``GET /health/live`` (public): the process answers. ``GET /health/ready``: 200 while serving, 503 while
  starting or draining.
* ``GET /metrics`` (JSON) and ``GET /metrics/prometheus`` (text exposition): ``Authorization: Bearer
  <CAJA_METRICS_TOKEN>`` or an install operator's session; a venue admin gets that venue's JSON summary and
  no Prometheus series. A wrong token is a bare 401.
* ``/admin/respaldos``: the backups of the whole install, their verification, "back up now" and "verify"
  (install operators; another venue admin sees only whether backups are up to date).

``install(app_config)`` wraps the app (request id, log context, request metrics, access log, starting and
draining); ``backup_scheduler_lifespan(settings)`` runs the scheduled backups while the app is up.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import html
import json
import logging
import os
import re
import time
from typing import Any, Literal

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.config.app import AppConfig
from litestar.middleware.session.server_side import ServerSideSessionBackend
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import Template

from caja_core.errors import Forbidden
from caja_core.ops import backups, metrics
from caja_core.ops.health import check_health, liveness
from caja_core.ops.logging import log_context

from ..auth import ADMIN, requires
from ..context import Viewer, Web, viewer_from
from ..errors import JSON_PREFIXES
from .lifecycle import ALWAYS_SERVED, STATE_REPORTING

BACKUP_MAX_AGE_HOURS = 26.0
access_log = logging.getLogger("caja.access")

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


class ReadyOut(msgspec.Struct, kw_only=True):
    status: Literal["serving", "starting", "draining"]


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


def new_request_id() -> str:
    """16 characters of base32 (A–Z, 2–7): a hex id is all digits now and then, which a card-data scanner
    reading the logs takes for a card number."""
    return base64.b32encode(os.urandom(10)).decode()


def _health_kwargs(request: Request) -> dict[str, Any]:
    state = request.app.state
    settings = state.settings
    registry = getattr(state, "registry", None)
    lifecycle = getattr(state, "lifecycle", None)
    return {
        "redis_url": settings.redis_url,
        "provider_ids": registry.ids() if registry is not None else None,
        "backup_dir": settings.backup_dir if settings.backup_interval_hours > 0 else None,
        "backups_expected": settings.backup_interval_hours > 0,
        "backup_max_age_hours": BACKUP_MAX_AGE_HOURS,
        "tls_cert_file": getattr(settings, "tls_cert_file", None),
        "instance": settings.instance_id,
        "lifecycle": lifecycle.state if lifecycle is not None else None,
    }


Scope = Literal["install", "venue"]


async def ops_scope(request: Request) -> tuple[Scope, int | None] | None:
    """Who is asking: ``("install", None)`` for the metrics token or an install operator, ``("venue",
    venue_id)`` for another venue admin, None for anyone else (a wrong token is None too)."""
    settings = request.app.state.settings
    tokens = [t for t in (settings.metrics_token, getattr(settings, "metrics_token_previous", None)) if t]
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        matches = [hmac.compare_digest(given.strip().encode(), token.encode()) for token in tokens]
        return ("install", None) if any(matches) else None
    try:
        viewer = await _session_viewer(request)
        if viewer is None or not viewer.is_admin:
            return None
        operator = await install_operator(request, viewer)
    except Exception:  # noqa: BLE001 - sessions or users unreadable (database down): answer as to anyone
        return None
    return ("install", None) if operator else ("venue", viewer.venue_id)


async def install_operator(request: Request, viewer: Viewer) -> bool:
    from caja_core.ops.access import is_install_operator, parse_operators

    settings = request.app.state.settings
    async with request.app.state.db.reader() as s:
        return await is_install_operator(
            s, user_id=viewer.id, operators=parse_operators(getattr(settings, "install_operators", None))
        )


@get(
    "/health",
    cache=False,
    tags=["operación"],
    summary="Estado del sistema",
    description="ok / degraded → 200, error → 503. Sin credenciales solo el estado general; con `Authorization: "
    "Bearer <CAJA_METRICS_TOKEN>` (o sesión de operador) el detalle de toda la instalación y `problems`; con la "
    "sesión del administrador de un local, el detalle de ese local.",
    responses=HEALTH_RESPONSES,
)
async def health(request: Request) -> Response[HealthOut]:
    scope = await ops_scope(request)
    kwargs = _health_kwargs(request)
    if scope is not None and scope[0] == "venue":
        kwargs["venue_id"] = scope[1]
    report = await check_health(request.app.state.db, **kwargs)
    body = report.to_dict() if scope is not None else report.public_dict()
    return Response[Any](body, status_code=report.http_status, media_type=MediaType.JSON)


@get(
    "/health/live",
    cache=False,
    tags=["operación"],
    summary="El proceso responde",
    description="No revisa dependencias: para el supervisor de procesos.",
)
async def health_live() -> Response[LiveOut]:
    return Response[Any](liveness(), media_type=MediaType.JSON)


@get(
    "/health/ready",
    cache=False,
    tags=["operación"],
    summary="La instancia acepta tráfico",
    description="200 mientras sirve; 503 mientras arranca (espera la base de datos) o se detiene (drenaje).",
    responses={503: ResponseSpec(data_container=ReadyOut, description="Arrancando o deteniéndose")},
)
async def health_ready(request: Request) -> Response[ReadyOut]:
    lifecycle = getattr(request.app.state, "lifecycle", None)
    state = lifecycle.state if lifecycle is not None else "serving"
    return Response[Any](
        {"status": state},
        status_code=200 if state == "serving" else 503,
        media_type=MediaType.JSON,
    )


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
    """The whole install's metrics: the metrics token (or, while it is rotated, the previous one), or an
    install operator's session."""
    scope = await ops_scope(request)
    return scope is not None and scope[0] == "install"


@get(
    "/metrics",
    cache=False,
    tags=["operación"],
    summary="Resumen de métricas (JSON)",
    description="Con el token de métricas (o sesión de operador): toda la instalación. Con la sesión del "
    "administrador de un local: solo ese local.",
    security=METRICS_SECURITY,
    responses={401: UNAUTHORIZED_SPEC},
)
async def metrics_json(request: Request) -> Response[MetricsOut]:
    scope = await ops_scope(request)
    if scope is None:
        return _unauthorized()
    kwargs = _health_kwargs(request)
    if scope[0] == "venue":
        kwargs["venue_id"] = scope[1]
    data = await metrics.collect(request.app.state.db, **kwargs)
    return Response[Any](data, media_type=MediaType.JSON)


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
    return Response[Any](
        metrics.prometheus_text().decode(),
        media_type=metrics.CONTENT_TYPE,
        headers={"Content-Type": metrics.CONTENT_TYPE},
    )


# ------------------------------------------------------------------------------ admin backups page


def _backup_rows(settings) -> list[dict[str, Any]]:
    rows = []
    for entry in backups.scan_backups(settings.backup_dir):
        m = entry.manifest
        rows.append(
            {
                "id": entry.id,
                "created_at": entry.created_at,
                "kind": m.kind if m else "—",
                "size": m.size if m else 0,
                "schema_revision": m.schema_revision if m else None,
                "rows": sum(m.row_counts.values()) if m else 0,
                "sha256": m.sha256 if m else "",
                "verification": entry.verification,
                "damaged": entry.damaged,
            }
        )
    return rows


async def _backups_context(web: Web, *, operator: bool) -> dict[str, Any]:
    from caja_core.ops.heartbeats import list_processes

    settings = web.state.settings
    runner = None
    try:
        processes = await list_processes(web.db)
        runners = [p for p in processes if p.backup]
        runner = max(runners, key=lambda p: p.last_beat_at) if runners else None
    except Exception:  # noqa: BLE001 - an older schema: the folder alone tells the state
        runner = None
    if runner is not None and runner.backup is not None:
        status = backups.backup_status(max_age_hours=BACKUP_MAX_AGE_HOURS, runner=runner.backup)
    else:
        status = backups.backup_status(settings.backup_dir, max_age_hours=BACKUP_MAX_AGE_HOURS)
    return {
        "operator": operator,
        "backups": _backup_rows(settings) if operator else [],
        "status": status,
        "interval_hours": settings.backup_interval_hours,
        "keep_daily": settings.backup_keep_daily,
        "keep_weekly": settings.backup_keep_weekly,
        "message": None,
    }


async def _operator(request: Request) -> bool:
    viewer = viewer_from(request)
    return viewer is not None and await install_operator(request, viewer)


async def _require_operator(request: Request) -> None:
    if not await _operator(request):
        raise Forbidden(
            "Los respaldos son de toda la instalación (todos los locales): los toma el operador de la instalación.",
            code="backup.install_operator",
        )


@get("/", name="ops-backups")
async def backups_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("ops/backups.html", **await _backups_context(web, operator=await _operator(request)))


@post("/crear")
async def backup_now(request: Request) -> Template:
    await _require_operator(request)
    web = Web(request)
    settings = web.state.settings
    try:
        manifest = await backups.create_backup(settings.database_url, settings.backup_dir, kind="manual")
    except backups.BackupFailed as exc:
        context = await _backups_context(web, operator=True)
        context["message"] = {"ok": False, "text": f"No se pudo crear el respaldo: {exc.message}"}
        return await web.page("ops/backups.html", **context)
    result = await backups.verify_backup(settings.backup_dir, manifest, database_url=settings.database_url)
    context = await _backups_context(web, operator=True)
    context["message"] = {
        "ok": result.ok,
        "text": f"Respaldo {manifest.id} creado" + (" y verificado." if result.ok else ": la verificación falló."),
    }
    return await web.page("ops/backups.html", **context)


@post("/{backup_id:str}/verificar")
async def backup_verify(request: Request, backup_id: FromPath[str]) -> Template:
    await _require_operator(request)
    web = Web(request)
    settings = web.state.settings
    result = await backups.verify_backup(settings.backup_dir, backup_id, database_url=settings.database_url)
    context = await _backups_context(web, operator=True)
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

route_handlers = [health, health_live, health_ready, metrics_json, metrics_prometheus, backups_router]


# ---------------------------------------------------------------------------------- the outer wrapper

STARTING_MESSAGE = "El sistema está arrancando y espera la base de datos. Reintente en unos segundos."
DRAINING_MESSAGE = "Esta instancia se está reiniciando. Reintente: otra instancia lo atiende."
DATABASE_DOWN_MESSAGE = (
    "La base de datos no responde. Reintente en unos segundos; si sigue así, avise al supervisor "
    "(la caja puede seguir en modo contingencia)."
)


def unavailable_body(path: str, message: str, *, htmx: bool) -> tuple[bytes, bytes]:
    """A Spanish 503 (page, HTMX partial or JSON) that needs neither templates nor the database."""
    if path.startswith(JSON_PREFIXES):
        return json.dumps({"error": "unavailable", "message": message}).encode(), b"application/json"
    section = (
        '<section class="card error-page" id="error" data-status="503"><h1>Servicio no disponible</h1>'
        f'<p class="alert error" role="alert">{html.escape(message)}</p>'
        '<p><a class="btn" href="">Reintentar</a></p></section>'
    )
    if htmx:
        return section.encode(), b"text/html; charset=utf-8"
    page = (
        '<!doctype html><html lang="es"><head><meta charset="utf-8"><meta name="viewport" '
        'content="width=device-width, initial-scale=1"><title>Servicio no disponible · caja</title>'
        '<link rel="stylesheet" href="/static/css/caja.css"></head><body><main class="container">'
        f"{section}</main></body></html>"
    )
    return page.encode(), b"text/html; charset=utf-8"


def _refusal(lifecycle, method: str, path: str) -> str | None:
    """Why the instance does not take this request now (None: it does)."""
    if lifecycle is None or lifecycle.serving or path.startswith(ALWAYS_SERVED):
        return None
    if lifecycle.state == "starting":
        return None if path.startswith(STATE_REPORTING) else STARTING_MESSAGE
    if lifecycle.draining and method in ("GET", "HEAD") and not path.startswith(STATE_REPORTING):
        return DRAINING_MESSAGE
    return None


def ops_wrapper(app, handler):
    """Wraps the whole ASGI app (404s and refusals included): a request id (``X-Request-ID`` in and out), the
    log context, the request's count and latency by route template, one JSON access-log line, and the
    instance's life (503 while starting; while draining, 503 to new GET/HEAD and ``Connection: close``)."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            await handler(scope, receive, send)
            return
        incoming = ""
        htmx = False
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"hx-request":
                htmx = value == b"true"
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        lifecycle = getattr(app.state, "lifecycle", None)
        status = 500
        route = None
        started = time.perf_counter()
        if lifecycle is not None:
            lifecycle.request_started()

        logged = False

        def log_access() -> None:
            # Written when the response starts (before the client can see it): the line is there by the time
            # anyone looks for the request id. The duration is the time to the response's first byte.
            nonlocal logged
            logged = True
            duration = time.perf_counter() - started
            client = scope.get("client")
            access_log.info(
                "%s %s %d %.0f ms",
                method,
                path,
                status,
                duration * 1000,
                extra={
                    "method": method,
                    "path": path,
                    "route": route or scope.get("path_template") or "unmatched",
                    "status": status,
                    "duration_ms": round(duration * 1000, 1),
                    "client": client[0] if client else None,
                },
            )

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if lifecycle is not None and lifecycle.draining:
                    headers = [(k, v) for k, v in headers if k.lower() != b"connection"]
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
                log_access()
            await send(message)

        try:
            with log_context(request_id=request_id):
                refusal = _refusal(lifecycle, method, path)
                if refusal is not None:
                    route = lifecycle.state
                    body, content_type = unavailable_body(path, refusal, htmx=htmx)
                    await send_with_id(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [
                                (b"content-type", content_type),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", b"2"),
                                (b"cache-control", b"no-store"),
                            ],
                        }
                    )
                    await send_with_id({"type": "http.response.body", "body": body})
                else:
                    await handler(scope, receive, send_with_id)
        finally:
            if lifecycle is not None:
                lifecycle.request_finished()
            route = route or scope.get("path_template") or "unmatched"
            metrics.record_request(method, route, status, time.perf_counter() - started)
            if not logged:  # no response at all (the client went away, or the server crashed)
                with log_context(request_id=request_id):
                    log_access()

    wrapped.caja_ops = True
    return wrapped


def _wrap_on_startup(app) -> None:
    if not getattr(app.asgi_handler, "caja_ops", False):
        app.asgi_handler = ops_wrapper(app, app.asgi_handler)


def install(app_config: AppConfig, *, settings=None, backups: bool = False) -> AppConfig:
    """Wire operations into an app being configured (also usable as an ``on_app_init`` hook):

    * the outer wrapper (request id, log context, request count and latency by route, access log, the
      instance's life), put around the whole app when it starts;
    * with ``settings``: the process's structured, masked JSON logs (``configure_logging``);
    * with ``backups=True`` (and settings): the scheduled backups inside the app process — for a single
      instance without ``caja worker`` (the demo, a small venue on SQLite).
    """
    if _wrap_on_startup not in app_config.on_startup:
        app_config.on_startup.insert(0, _wrap_on_startup)
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
    (nothing when ``CAJA_BACKUP_INTERVAL_HOURS=0``). Its state reaches the other processes through this
    process's heartbeat (``app.state.backup_scheduler``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if settings.backup_interval_hours <= 0:
            yield
            return
        scheduler = backups.BackupScheduler.from_settings(settings, **overrides)
        app.state.backup_scheduler = scheduler
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()

    return lifespan
