"""The Litestar application: ``create_app()`` and the one wiring plugin that configures it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, ResponseHeader, State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from caja_core.db import Database
from caja_core.db.engine import database_from_settings
from caja_core.ops.health import version as caja_version
from caja_core.plugins import make_plugin_manager, template_dirs
from caja_core.printing import PrinterRegistry, PrintService
from caja_core.providers import ProviderRegistry
from caja_core.settings import Settings, load_settings

from . import filters
from .errors import EXCEPTION_HANDLERS, JSON_PREFIXES
from .ops.lifecycle import RETRY_BACKOFF_S, Lifecycle, wait_for_database
from .pos import messages
from .stores import RotatingSessionConfig, make_session_store

log = logging.getLogger("caja.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: Modules of other areas that expose ``route_handlers: list`` (health/metrics, webhooks, agent API).
EXTRA_ROUTE_MODULES = ("caja_web.ops.routes", "caja_web.webhooks.routes", "caja_web.agent.routes")

#: Paths with their own authentication (no CSRF, no browser session).
CSRF_EXCLUDE = ["^/webhooks/", "^/api/agent/"]

#: Scripts only from the app's own files (no inline script, no ``eval``); inline ``style`` attributes are allowed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SESSION_MAX_AGE_S = 16 * 3600  # one night plus margin
#: How long start-up waits for the database before serving 503 and retrying in the background.
STARTUP_TIMEOUT_S = 10.0


def extra_route_handlers() -> list[Any]:
    """Route handlers of the modules in ``EXTRA_ROUTE_MODULES`` that exist."""
    handlers: list[Any] = []
    for name in EXTRA_ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        handlers.extend(getattr(module, "route_handlers", []))
    return handlers


def page_route_handlers() -> list[Any]:
    from . import auth, dashboard, jornada, printing
    from .admin import routes as admin
    from .pos import offline
    from .pos import routes as pos

    return [
        *auth.route_handlers,
        jornada.router,
        dashboard.router,
        pos.router,
        *offline.route_handlers,
        *admin.routers,
        *printing.routers,
        *printing.route_handlers,
    ]


def make_orchestrator(
    db: Database, registry: ProviderRegistry, pm: Any, settings: Settings, options: dict[str, Any] | None = None
) -> Any | None:
    try:
        from caja_core.payments.service import PaymentOrchestrator
    except ImportError:
        log.warning("payment orchestrator not available: card payments disabled")
        return None
    from caja_core.agents.service import channel_factory

    options = dict(options or {})
    clock = options.get("clock")
    return PaymentOrchestrator(
        db=db,
        registry=registry,
        pm=pm,
        instance_id=settings.instance_id,
        agent_channel_factory=channel_factory(db, clock=clock) if clock is not None else channel_factory(db),
        **options,
    )


def make_print_service(db: Database, registry: ProviderRegistry, pm: Any, settings: Settings) -> PrintService:
    """Receipts, comandas, reports and the drawer; card sales print through its ``on_payment_event``."""
    service = PrintService(
        db,
        PrinterRegistry.from_plugin_manager(pm),
        secret_key=settings.secret_key,
        public_url=settings.public_url,
        provider_names={p.id: p.name for p in registry.all()},
    )
    previous = pm.get_plugin("caja-printing")
    if previous is not None:  # one listener: the newest app's
        pm.unregister(previous)
    pm.register(service, name="caja-printing")
    return service


class DemoLoginsInProduction(Exception):
    """A production instance found users with the demo's published secrets: it does not serve."""


class CajaWebPlugin(InitPlugin):
    """Wires caja into a Litestar app: state, templates, static files, sessions, CSRF, routes, errors."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        pm: Any,
        *,
        own_db: bool,
        scheduled_backups: bool = False,
        orchestrator_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.scheduled_backups = scheduled_backups
        self.db = db
        self.pm = pm
        self.own_db = own_db
        self.registry = ProviderRegistry.from_plugin_manager(pm)
        self.orchestrator = make_orchestrator(db, self.registry, pm, settings, orchestrator_options)
        self.printing = make_print_service(db, self.registry, pm, settings)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        self._configure_state(app_config)
        self._configure_templates(app_config)
        self._configure_unit(app_config)
        self._configure_static(app_config)
        self._configure_bounds(app_config)
        self._configure_sessions(app_config)
        self._configure_csrf(app_config)
        self._configure_routes(app_config)
        self._configure_errors(app_config)
        self._configure_lifespan(app_config)
        self._configure_openapi(app_config)
        self._configure_headers(app_config)
        self._configure_ops(app_config)
        return app_config

    def _configure_state(self, app_config: AppConfig) -> None:
        app_config.state = State(
            {
                "settings": self.settings,
                "db": self.db,
                "pm": self.pm,
                "registry": self.registry,
                "orchestrator": self.orchestrator,
                "printing": self.printing,
                "lifecycle": Lifecycle(max_drain_s=float(getattr(self.settings, "drain_seconds", 10))),
            }
        )

    def _configure_templates(self, app_config: AppConfig) -> None:
        dirs = [*template_dirs(self.pm), str(TEMPLATES)]
        env = Environment(
            loader=ChoiceLoader([FileSystemLoader(d) for d in dirs]),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        filters.install(env, self.registry)
        messages.install(env)
        app_config.template_config = TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))

    def _configure_unit(self, app_config: AppConfig) -> None:
        """The ``unit`` and ``web`` dependencies: one transaction for the whole request (``caja_web.units``)."""
        from litestar.di import Provide

        from .units import provide_unit, provide_web

        app_config.dependencies["unit"] = Provide(provide_unit)
        app_config.dependencies["web"] = Provide(provide_web)

    def _configure_static(self, app_config: AppConfig) -> None:
        app_config.route_handlers.append(
            create_static_files_router(
                path="/static",
                directories=[STATIC],
                include_in_schema=False,
                cache_control=CacheControlHeader(max_age=3600, public=True),
            )
        )

    def _configure_bounds(self, app_config: AppConfig) -> None:
        """Huge ids, long numbers and deep JSON are refused before any handler parses them."""
        from .bounds import BoundsMiddleware

        app_config.middleware.append(BoundsMiddleware())

    def _configure_sessions(self, app_config: AppConfig) -> None:
        store = make_session_store(self.settings.redis_url, self.db)
        app_config.stores = {"sessions": store}
        config = RotatingSessionConfig(
            key="caja_session",
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            samesite="lax",
            secure=self.settings.secure_cookies,
            store="sessions",
            exclude=[f"^{p}" for p in JSON_PREFIXES] + ["^/static/"],
        )
        app_config.middleware.append(config.middleware)

    def _configure_csrf(self, app_config: AppConfig) -> None:
        """CSRF tokens bound to the session (``caja_web.csrf``), checked inside the session middleware."""
        from .csrf import SessionBoundCSRFMiddleware

        secret = hashlib.sha256(f"csrf:{self.settings.secret_key}".encode()).hexdigest()
        config = CSRFConfig(
            secret=secret,
            cookie_name="caja_csrf",
            cookie_httponly=True,
            cookie_samesite="lax",
            cookie_secure=self.settings.secure_cookies,
            exclude=CSRF_EXCLUDE,
        )
        app_config.middleware.append(DefineMiddleware(SessionBoundCSRFMiddleware, config=config))

    def _configure_routes(self, app_config: AppConfig) -> None:
        app_config.route_handlers.extend(page_route_handlers())
        app_config.route_handlers.extend(extra_route_handlers())

    def _configure_errors(self, app_config: AppConfig) -> None:
        app_config.exception_handlers = {**EXCEPTION_HANDLERS, **(app_config.exception_handlers or {})}

    def _configure_lifespan(self, app_config: AppConfig) -> None:
        app_config.lifespan.append(self._lifespan)

    def _configure_openapi(self, app_config: AppConfig) -> None:
        """Only the JSON endpoints (agent API, webhooks, health, metrics) are published; the HTML pages are not."""
        app_config.openapi_config = OpenAPIConfig(
            title="caja",
            version=caja_version(),
            path="/schema",
            description="API JSON de caja: agente de caja, notificaciones de proveedores, salud y métricas.",
            components=Components(
                security_schemes={
                    "metricsToken": SecurityScheme(
                        type="http", scheme="bearer", description="CAJA_METRICS_TOKEN (o sesión de administrador)"
                    )
                }
            ),
        )

    def _configure_headers(self, app_config: AppConfig) -> None:
        """No page, export or API answer is kept by a browser or proxy cache (the static files set their own);
        the pages run only the app's own script files, no inline script."""
        app_config.cache_control = CacheControlHeader(no_store=True)
        app_config.response_headers = [
            *app_config.response_headers,
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Frame-Options", value="DENY"),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
            ResponseHeader(name="Referrer-Policy", value="same-origin"),
        ]

    def _configure_ops(self, app_config: AppConfig) -> None:
        """Request ids, request metrics; scheduled backups inside the app when asked (SQLite, one instance)."""
        from .ops.routes import backup_scheduler_lifespan, install

        install(app_config)
        if self.scheduled_backups:
            app_config.lifespan.append(backup_scheduler_lifespan(self.settings))

    async def _start_services(self) -> None:
        """What needs the database before the instance serves: in production no user with the demo's published
        password or PIN (``caja serve`` refuses to start; an instance that finds one later serves 503 until it
        is changed); the payment orchestrator's crash recovery."""
        if self.settings.env == "production":
            from caja_core.demo import demo_logins_in_use, demo_logins_message

            if found := await demo_logins_in_use(self.db):
                log.error("%s", demo_logins_message(found))
                raise DemoLoginsInProduction(found)
        if self.orchestrator is not None:
            await self.orchestrator.start()

    async def _start_when_database_answers(self, lifecycle: Lifecycle, stop: asyncio.Event) -> None:
        """The database was down at start: wait for it (back-off, one log line per try), then start."""
        attempt = 0
        while not stop.is_set():
            await wait_for_database(self.db, stop=stop)
            try:
                await self._start_services()
            except Exception as exc:  # noqa: BLE001 - e.g. the database went away again: retry
                delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                attempt += 1
                log.warning(
                    "no se pudo iniciar el servicio de pagos (%s); nuevo intento en %.0f s", type(exc).__name__, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            lifecycle.set_serving()
            log.info("instancia %s lista: sirviendo", self.settings.instance_id)
            return

    @asynccontextmanager
    async def _lifespan(self, app: Litestar):
        from caja_core.ops.heartbeats import Heartbeat

        lifecycle: Lifecycle = app.state.lifecycle

        def backup_report():
            scheduler = app.state.get("backup_scheduler")
            return scheduler.report() if scheduler is not None else None

        heartbeat = Heartbeat(self.db, name=self.settings.instance_id, kind="app", backup_info=backup_report)
        lifecycle.heartbeat = heartbeat
        stop = asyncio.Event()
        starter: asyncio.Task | None = None
        try:
            await asyncio.wait_for(self._start_services(), STARTUP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the database is down (or slow): serve /health and retry
            if not isinstance(exc, DemoLoginsInProduction):
                log.warning(
                    "la base de datos no responde al arrancar (%s): la instancia responde 503 mientras reintenta",
                    type(exc).__name__,
                )
            if self.orchestrator is not None:
                with contextlib.suppress(Exception):
                    await self.orchestrator.stop()
            starter = asyncio.create_task(self._start_when_database_answers(lifecycle, stop), name="caja-startup")
        else:
            lifecycle.set_serving()
        await heartbeat.start()
        try:
            yield
        finally:
            stop.set()
            if starter is not None:
                starter.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await starter
            if self.orchestrator is not None and lifecycle.state != "starting":
                await self.orchestrator.stop()
            await self.printing.stop()
            lifecycle.mark_stopped()
            await heartbeat.stop()
            if self.own_db:
                await self.db.dispose()


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    pm: Any = None,
    *,
    scheduled_backups: bool = False,
    orchestrator_options: dict[str, Any] | None = None,
) -> Litestar:
    """Build the app. Without arguments: settings from ``CAJA_*``, its own database and plugin manager.
    ``scheduled_backups`` runs the backup scheduler inside the app (``caja serve`` does on SQLite; on
    PostgreSQL ``caja worker`` runs it once for all instances). ``orchestrator_options`` are passed to the
    payment orchestrator (its clock and timings, for tests and rehearsals)."""
    settings = settings or load_settings()
    own_db = db is None
    db = db or database_from_settings(settings)
    pm = pm or make_plugin_manager()
    plugin = CajaWebPlugin(
        settings,
        db,
        pm,
        own_db=own_db,
        scheduled_backups=scheduled_backups,
        orchestrator_options=orchestrator_options,
    )
    return Litestar(plugins=[plugin], debug=False)
