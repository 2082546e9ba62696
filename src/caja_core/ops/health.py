"""``/health``: is this instance able to take payments, and what is wrong if not.

Overall status:

* ``error`` (HTTP 503): the database does not answer, its schema is not at the code's migration head, or
  the configured Redis session store does not answer. Nothing can be sold through this instance.
* ``degraded`` (HTTP 200): it works, but something needs attention: an open circuit breaker (that register
  sells in contingency mode), a register agent that stopped reporting, a background worker that is stale or
  failing, a missing or failed backup, a register that names a provider that is not installed.
* ``ok`` (HTTP 200).

The report never contains a secret: no URLs, tokens or provider settings, only states and timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata as importlib_metadata
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec
from sqlalchemy import inspect, select, text

from ..clock import utcnow
from ..db import migrate
from ..db.engine import Database
from .contingency import allowed_methods
from .workers import WORKERS, WorkerRegistry

Status = Literal["ok", "degraded", "error"]
_RANK = {"ok": 0, "degraded": 1, "error": 2}


class HealthReport(msgspec.Struct, kw_only=True):
    status: Status
    checked_at: datetime
    version: str
    instance: str
    services: dict[str, Any]
    #: One Spanish line per problem found (empty when ``ok``).
    problems: list[str]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "error" else 200

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    def public_dict(self) -> dict[str, Any]:
        """What anyone may see: every state, but no device addresses, error texts, host names or problem
        lines (those need the metrics token or an admin session)."""
        services = self.to_dict()["services"]
        public: dict[str, Any] = {
            "database": services["database"],
            "migrations": {"status": services["migrations"]["status"]},
            "redis": services["redis"],
            "session_store": services["session_store"],
            "workers": {name: w["status"] for name, w in services["workers"].items()},
        }
        if "backups" in services:
            public["backups"] = {"status": services["backups"]["status"], "age_hours": services["backups"]["age_hours"]}
        if "payments" in services:
            public["payments"] = services["payments"]
        if "registers" in services:
            public["registers"] = {
                code: {
                    "mode": r["mode"],
                    "allowed_methods": r["allowed_methods"],
                    "breakers_open": sum(1 for state in r["breakers"].values() if state != "closed"),
                    "agent": r["agent"]["status"],
                }
                for code, r in services["registers"].items()
            }
        return {
            "status": self.status,
            "checked_at": msgspec.to_builtins(self.checked_at),
            "version": self.version,
            "services": public,
        }


def _version() -> str:
    try:
        return importlib_metadata.version("caja-core")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "0"


class _Collector:
    def __init__(self) -> None:
        self.status: Status = "ok"
        self.problems: list[str] = []

    def flag(self, level: Status, problem: str) -> None:
        if _RANK[level] > _RANK[self.status]:
            self.status = level
        self.problems.append(problem)


async def ping_redis(url: str, *, timeout_s: float = 2.0) -> bool:
    """PING a Redis server (AUTH first when the URL has a password): redis://, rediss:// (TLS) or unix://."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            opening = asyncio.open_unix_connection(parts.path)
        else:
            opening = asyncio.open_connection(
                parts.hostname or "127.0.0.1", parts.port or 6379, ssl=True if parts.scheme == "rediss" else None
            )
        reader, writer = await asyncio.wait_for(opening, timeout_s)
    except (TimeoutError, OSError):
        return False
    try:

        def command(*args: str) -> bytes:
            out = f"*{len(args)}\r\n".encode()
            for arg in args:
                data = arg.encode()
                out += b"$%d\r\n%s\r\n" % (len(data), data)
            return out

        if parts.password:
            auth = [unquote(parts.username), unquote(parts.password)] if parts.username else [unquote(parts.password)]
            writer.write(command("AUTH", *auth))
            line = await asyncio.wait_for(reader.readline(), timeout_s)
            if not line.startswith(b"+OK"):
                return False
        writer.write(command("PING"))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        return line.startswith(b"+PONG")
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _database(db: Database, timeout_s: float) -> str | None:
    """The current migration revision, or raise when the database does not answer."""

    async def probe() -> str | None:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            has_table = await conn.run_sync(lambda c: inspect(c).has_table("alembic_version"))
            if not has_table:
                return None
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()

    return await asyncio.wait_for(probe(), timeout_s)


async def _registers(db: Database, timeout_s: float) -> tuple[list[Any], dict[int, dict[str, str]]]:
    from ..payments.models import BreakerState
    from ..registers.models import CashRegister

    async def load():
        async with db.reader() as s:
            registers = list(
                (
                    await s.execute(
                        select(CashRegister)
                        .where(CashRegister.active.is_(True))
                        .order_by(CashRegister.venue_id, CashRegister.code)
                    )
                ).scalars()
            )
            breakers: dict[int, dict[str, str]] = {}
            for row in (await s.execute(select(BreakerState))).scalars():
                if row.register_id is not None:
                    breakers.setdefault(row.register_id, {})[row.device_key] = row.state
            return registers, breakers

    return await asyncio.wait_for(load(), timeout_s)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def check_health(
    db: Database,
    *,
    redis_url: str | None = None,
    workers: WorkerRegistry | None = None,
    provider_ids: Iterable[str] | None = None,
    backup_dir: str | None = None,
    backup_max_age_hours: float = 26.0,
    agent_stale_after_s: float = 120.0,
    instance: str = "",
    timeout_s: float = 3.0,
    now: datetime | None = None,
) -> HealthReport:
    """Check everything this instance depends on.

    ``provider_ids``: the installed providers (a register naming another one is flagged); None skips the
    check. ``backup_dir``: where the scheduled backups go (None when backups are not scheduled here).
    """
    now = now or utcnow()
    workers = workers if workers is not None else WORKERS
    result = _Collector()
    services: dict[str, Any] = {}

    # Database and migrations.
    db_ok = False
    try:
        current = await _database(db, timeout_s)
        db_ok = True
        services["database"] = "connected"
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"; the message may hold the URL
        current = None
        services["database"] = "unreachable"
        result.flag("error", f"La base de datos no responde ({type(exc).__name__}).")
    if db_ok:
        head = migrate.head_revision()
        pending = migrate.pending_revisions(current) if current != head else []
        services["migrations"] = {
            "status": "at_head" if current == head else "pending",
            "current": current,
            "head": head,
            "pending": pending,
        }
        if current != head:
            result.flag(
                "error", f"La base no está migrada a la última versión ({current} ≠ {head}): ejecute `caja db upgrade`."
            )
    else:
        services["migrations"] = {"status": "unknown", "current": None, "head": migrate.head_revision(), "pending": []}

    # Session store.
    if redis_url:
        redis_ok = await ping_redis(redis_url, timeout_s=timeout_s)
        services["redis"] = "connected" if redis_ok else "unreachable"
        services["session_store"] = {"backend": "redis", "status": services["redis"]}
        if not redis_ok:
            result.flag("error", "Redis (sesiones) no responde: nadie puede iniciar sesión.")
    else:
        services["redis"] = "not_configured"
        services["session_store"] = {"backend": "database", "status": services["database"]}

    # Background workers of this instance.
    worker_report: dict[str, Any] = {}
    for name, status in sorted(workers.snapshot().items()):
        state = status.state(now)
        worker_report[name] = {
            "status": state,
            "last_beat_at": _iso(status.last_beat_at),
            "last_ok_at": _iso(status.last_ok_at),
            "last_error": status.last_error,
            "consecutive_failures": status.consecutive_failures,
        }
        if state == "stale":
            result.flag("degraded", f"El proceso de fondo «{name}» no da señales de vida.")
        elif state == "failing":
            result.flag("degraded", f"El proceso de fondo «{name}» está fallando: {status.last_error}")
        elif state == "stopped":
            result.flag("degraded", f"El proceso de fondo «{name}» está detenido.")
    services["workers"] = worker_report

    # Backups.
    if backup_dir is not None:
        from .backups import backup_status

        info = backup_status(backup_dir, now=now, max_age_hours=backup_max_age_hours)
        services["backups"] = info.to_dict()
        if info.status == "failed":
            result.flag("degraded", f"El último respaldo falló: {info.last_error}")
        elif info.status == "stale":
            result.flag(
                "degraded", f"El último respaldo tiene {info.age_hours:.0f} h (más de {backup_max_age_hours:.0f} h)."
            )
        elif info.status == "none":
            result.flag("degraded", "No hay ningún respaldo.")

    # Registers: providers, breakers, agents, contingency mode.
    if db_ok:
        try:
            registers, breakers = await _registers(db, timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the report says so instead of failing
            result.flag("error", f"No se pudieron leer las cajas ({type(exc).__name__}).")
            registers, breakers = [], {}
        installed = set(provider_ids) if provider_ids is not None else None
        register_report: dict[str, Any] = {}
        for register in registers:
            key = register.code if len({r.venue_id for r in registers}) == 1 else f"{register.venue_id}:{register.code}"
            reg_breakers = breakers.get(register.id, {})
            mode = allowed_methods(register, reg_breakers, db_ok=True)
            providers: dict[str, Any] = {}
            for role in ("primary", "backup"):
                pid = getattr(register, f"{role}_provider")
                if not pid:
                    continue
                registered = installed is None or pid in installed
                providers[role] = {"id": pid, "installed": registered}
                if not registered:
                    result.flag("degraded", f"La caja {register.code} usa el proveedor «{pid}», que no está instalado.")
            for device, bstate in sorted(reg_breakers.items()):
                if bstate != "closed":
                    result.flag("degraded", f"Caja {register.code}: corte {bstate} en {device}.")
            agent: dict[str, Any] = {"status": "not_used", "last_seen_at": _iso(register.agent_last_seen_at)}
            if register.agent_token_hash:
                if register.agent_last_seen_at is None:
                    agent["status"] = "never_seen"
                    result.flag("degraded", f"El agente de la caja {register.code} nunca se ha conectado.")
                else:
                    age = (now - register.agent_last_seen_at).total_seconds()
                    agent["age_s"] = round(age, 1)
                    if age > agent_stale_after_s:
                        agent["status"] = "stale"
                        result.flag("degraded", f"El agente de la caja {register.code} no reporta hace {age:.0f} s.")
                    else:
                        agent["status"] = "ok"
            register_report[key] = {
                "operational_status": register.operational_status,
                "mode": mode.mode,
                "allowed_methods": mode.allowed_methods,
                "providers": providers,
                "breakers": dict(sorted(reg_breakers.items())),
                "agent": agent,
            }
        services["registers"] = register_report

    # Payments that need a person.
    if db_ok:
        try:
            from ..payments.terminal_ops import payment_alerts

            async with db.reader() as s:
                alerts = await asyncio.wait_for(payment_alerts(s), timeout_s)
            services["payments"] = msgspec.to_builtins(alerts)
            if alerts.needs_decision:
                result.flag(
                    "degraded",
                    f"{alerts.needs_decision} cobro(s) en duda que caja no puede resolver sola: un supervisor debe "
                    f"resolverlos con evidencia (Jornada → Cobros por resolver).",
                )
            if alerts.refunds_due:
                result.flag("degraded", f"{alerts.refunds_due} cobro(s) duplicado(s) por devolver al cliente.")
            if alerts.terminal_differences:
                result.flag(
                    "degraded",
                    f"{alerts.terminal_differences} revisión(es) de terminal con diferencias contra caja sin resolver.",
                )
        except Exception as exc:  # noqa: BLE001
            result.flag("degraded", f"No se pudieron revisar los cobros pendientes ({type(exc).__name__}).")

    return HealthReport(
        status=result.status,
        checked_at=now,
        version=_version(),
        instance=instance,
        services=services,
        problems=result.problems,
    )


def liveness() -> dict[str, Any]:
    """``/health/live``: the process answers (no dependency is checked)."""
    return {"status": "ok", "version": _version()}
