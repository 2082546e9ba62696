"""``caja serve`` and ``caja demo``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from caja_core.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    import uvicorn

    from .ops.lifecycle import Lifecycle

DEMO_DB = "var/demo.db"


def _settings(**overrides: object) -> Settings:
    """Settings from CAJA_*; on problems print one per line and exit with code 2."""
    from caja_core.settings import settings_or_exit

    return settings_or_exit(None, **overrides)


def draining_server(config: uvicorn.Config, lifecycle: Lifecycle) -> uvicorn.Server:
    """uvicorn's server with a graceful drain on the first SIGTERM/SIGINT (see ``caja_web.ops.lifecycle``):
    the instance keeps listening until the proxy stops sending it requests, then stops accepting, finishes
    what is in flight and exits with code 0. A second signal stops it at once."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.started and not lifecycle.draining and not self.should_exit:
                lifecycle.begin_drain()
                return
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if lifecycle.draining and not self.should_exit and lifecycle.ready_to_close():
                self.should_exit = True
            return await super().on_tick(counter)

    return DrainingServer(config)


def refuse_demo_logins_in_production(settings: Settings) -> None:
    """In production, exit with one line while a user still has the demo's published password or PIN. A
    database that does not answer yet is left to the instance, which checks again before it serves."""
    if settings.env != "production":
        return
    from caja_core.db.engine import database_from_settings
    from caja_core.demo import demo_logins_in_use, demo_logins_message

    async def check() -> list[str]:
        db = database_from_settings(settings)
        try:
            return await asyncio.wait_for(demo_logins_in_use(db), 10)
        finally:
            await db.dispose()

    try:
        found = asyncio.run(check())
    except Exception:  # noqa: BLE001 - database down or not migrated: the app's start-up reports it
        return
    if found:
        click.echo(f"caja: {demo_logins_message(found)}", err=True)
        sys.exit(2)


def _run(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from caja_core.ops.logging import configure_logging

    from .app import create_app

    configure_logging(settings)  # JSON, masked; uvicorn's own loggers go through it (log_config=None)
    app = create_app(settings, scheduled_backups=settings.is_sqlite)
    lifecycle = app.state.lifecycle
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,  # caja writes its own JSON access line (with the request id)
        log_config=None,
        use_colors=False,
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        timeout_graceful_shutdown=max(5, 30 - settings.drain_seconds),
    )
    draining_server(config, lifecycle).run()


@click.command()
@click.option("--host", default=None, help="Dirección (por defecto CAJA_HOST o 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Puerto (por defecto CAJA_PORT o 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Sirve la aplicación web."""
    settings = _settings(host=host, port=port)
    refuse_demo_logins_in_production(settings)
    _run(settings, settings.host, settings.port)


@click.command()
@click.option("--host", default=None, help="Dirección (por defecto CAJA_HOST o 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Puerto (por defecto CAJA_PORT o 8000).")
@click.option("--db", "db_path", default=DEMO_DB, show_default=True, help="Archivo SQLite de la demostración.")
@click.option("--no-serve", is_flag=True, help="Solo crear los datos, sin servir.")
def demo(host: str | None, port: int | None, db_path: str, no_serve: bool) -> None:
    """Crea (o reutiliza) una base SQLite de demostración con datos de ejemplo y la sirve."""
    from caja_core.db import Database
    from caja_core.db.migrate import upgrade
    from caja_core.demo import seed_demo

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{Path(db_path).resolve()}"
    env = dict(
        os.environ,
        CAJA_ENV=os.environ.get("CAJA_ENV", "demo"),
        CAJA_DATABASE_URL=url,
        CAJA_LOG_FORMAT=os.environ.get("CAJA_LOG_FORMAT", "text"),
    )
    try:
        settings = load_settings(env, host=host, port=port)
    except SettingsError as exc:
        for problem in exc.problems:
            click.echo(f"caja: {problem}", err=True)
        sys.exit(2)
    host, port = settings.host, settings.port
    upgrade(url)

    async def seed():
        db = Database(url)
        try:
            return await seed_demo(db, public_url=f"http://{host}:{port}")
        finally:
            await db.dispose()

    info = asyncio.run(seed())
    click.echo(f"Demostración: {info.venue_name} ({'creada' if info.created else 'reutilizada'}) en {db_path}")
    click.echo(f"Abra http://{host}:{port}/login")
    for login in info.logins:
        who = "PIN" if login.role == "cashier" else "contraseña"
        extra = f" · PIN de autorización {login.authorization_pin}" if login.authorization_pin else ""
        click.echo(
            f"  {login.role:<10} {login.display_name:<22} usuario {login.username:<11} {who} {login.secret}{extra}"
        )
    if not no_serve:
        _run(settings, host, port)
