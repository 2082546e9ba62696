"""``/health``: is this instance able to take payments, and what is wrong if not.

Overall status:

* ``error`` (HTTP 503): the database does not answer, its schema is not at the code's migration head, the
  configured Redis session store does not answer, or the instance is still starting or draining. Nothing
  can be sold through this instance.
* ``degraded`` (HTTP 200): it works, but something needs attention: an open circuit breaker (that register
  sells in contingency mode), a register agent that stopped reporting, a background worker (of this or any
  other process, ``caja worker`` included) that is stale or failing, a process killed without stopping, a
  missing, old or failed backup, no process taking the scheduled backups, a TLS certificate about to
  expire, a register that names a provider that is not installed.
* ``ok`` (HTTP 200).

Scopes: the full report (``scope="install"``, for the metrics token and install operators) shows every
venue's registers and every process; a venue admin's report (``scope="venue"``) shows that venue's
registers and no process, host or backup detail; the public answer (:meth:`HealthReport.public_dict`)
is only the overall status.

The report never contains a secret: no URLs, tokens or provider settings, only states and timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec
from sqlalchemy import inspect, select, text

from ..agents.service import TWO_AGENTS_WINDOW_S, two_agents_text
from ..clock import utcnow
from ..db import migrate
from ..db.engine import Database
from .contingency import allowed_methods
from .workers import WORKERS, WorkerRegistry

Status = Literal["ok", "degraded", "error"]
_RANK = {"ok": 0, "degraded": 1, "error": 2}
#: What a venue admin reads about another process of the install (names and hosts are the operator's).
VENUE_PROCESS_TEXT = "Un proceso del sistema necesita atención: avise al operador de la instalación."
#: Days before the configured TLS certificate expires when /health turns degraded.
CERT_WARN_DAYS = 14


class HealthReport(msgspec.Struct, kw_only=True):
    status: Status
    checked_at: datetime
    version: str
    instance: str
    services: dict[str, Any]
    #: One Spanish line per problem found (empty when ``ok``).
    problems: list[str]
    scope: str = "install"

    @property
    def http_status(self) -> int:
        return 503 if self.status == "error" else 200

    def to_dict(self) -> dict[str, Any]:
        data = msgspec.to_builtins(self)
        data.pop("scope")
        if self.scope != "install":
            data.pop("instance")
        return data

    def public_dict(self) -> dict[str, Any]:
        """What anyone may see: the overall state only (no venue, register, device, host or error text)."""
        return {"status": self.status, "checked_at": msgspec.to_builtins(self.checked_at)}


def version() -> str:
    try:
        return importlib_metadata.version("caja-core")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "0"


_version = version


class _Collector:
    def __init__(self, scope: str = "install") -> None:
        self.status: Status = "ok"
        self.problems: list[str] = []
        self.scope = scope

    def flag(self, level: Status, problem: str, *, venue_text: str | None = None) -> None:
        """Record a problem. ``venue_text``: what a venue admin reads instead (install details hidden)."""
        if _RANK[level] > _RANK[self.status]:
            self.status = level
        text = venue_text if self.scope == "venue" and venue_text is not None else problem
        if text not in self.problems:
            self.problems.append(text)


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


async def ping_database(db: Database, timeout_s: float = 5.0) -> None:
    """Return when the database answers a trivial query; raise (driver error or TimeoutError) when it does not."""

    async def probe() -> None:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    await asyncio.wait_for(probe(), timeout_s)


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


async def _registers(
    db: Database, timeout_s: float, venue_id: int | None
) -> tuple[list[Any], dict[int, dict[str, str]]]:
    from ..payments.models import BreakerState
    from ..registers.models import CashRegister

    async def load():
        async with db.reader() as s:
            query = select(CashRegister).where(CashRegister.active.is_(True))
            breakers_query = select(BreakerState)
            if venue_id is not None:
                query = query.where(CashRegister.venue_id == venue_id)
                breakers_query = breakers_query.where(BreakerState.venue_id == venue_id)
            registers = list((await s.execute(query.order_by(CashRegister.venue_id, CashRegister.code))).scalars())
            breakers: dict[int, dict[str, str]] = {}
            for row in (await s.execute(breakers_query)).scalars():
                if row.register_id is not None:
                    breakers.setdefault(row.register_id, {})[row.device_key] = row.state
            return registers, breakers

    return await asyncio.wait_for(load(), timeout_s)


def _parse_iso(raw: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def certificate_not_after(path: str | Path) -> datetime:
    """The expiry (``notAfter``) of the first certificate of a PEM file (the served certificate of a
    ``fullchain.pem``). Raises ``ValueError`` on a file that holds no readable certificate."""
    import base64

    pem = Path(path).read_text(errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if begin not in pem or end not in pem:
        raise ValueError("no contiene un certificado PEM")
    body = pem.split(begin, 1)[1].split(end, 1)[0]
    der = base64.b64decode("".join(body.split()))

    def tlv(data: bytes, pos: int) -> tuple[int, int, int]:
        """(tag, start of the value, end of the value) of the DER element at ``pos``."""
        tag = data[pos]
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        return tag, pos, pos + length

    _, cert_start, _ = tlv(der, 0)  # Certificate
    _, tbs_start, _ = tlv(der, cert_start)  # TBSCertificate
    pos = tbs_start
    tag, _, end_ = tlv(der, pos)
    if tag == 0xA0:  # [0] version
        pos = end_
    for _ in range(3):  # serialNumber, signature, issuer
        pos = tlv(der, pos)[2]
    _, validity_start, _ = tlv(der, pos)
    not_before_end = tlv(der, validity_start)[2]
    tag, start, end_ = tlv(der, not_before_end)
    value = der[start:end_].decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return datetime.strptime(value, fmt).replace(tzinfo=UTC)


def _processes_report(
    processes: list[Any], *, now: datetime, instance: str, result: _Collector, stale_after_s: float
) -> tuple[dict[str, Any], Any]:
    """Every process's state and workers; returns (report, the backup runner's row or None)."""
    report: dict[str, Any] = {}
    runner = None
    for process in processes:
        status = process.status(now, stale_after_s)
        report[process.name] = {
            "kind": process.kind,
            "status": status,
            "version": process.version,
            "last_beat_at": _iso(process.last_beat_at),
            "age_s": round(process.age_s(now), 1),
            "workers": {name: w.get("status") for name, w in process.workers.items()},
        }
        if process.backup and (runner is None or process.last_beat_at > runner.last_beat_at):
            runner = process
        if process.name == instance:
            continue  # this instance's own workers are checked from its registry
        label = "caja worker" if process.kind == "worker" else "instancia"
        if status == "stale":
            result.flag(
                "degraded",
                f"El proceso {process.name} ({label}) no da señales hace {process.age_s(now):.0f} s: "
                "se detuvo sin avisar o está colgado.",
                venue_text=VENUE_PROCESS_TEXT,
            )
        elif status != "stopped":
            for name, worker in sorted(process.workers.items()):
                if worker.get("status") == "failing":
                    result.flag(
                        "degraded",
                        f"El proceso de fondo «{name}» de {process.name} está fallando: {worker.get('last_error')}",
                        venue_text=VENUE_PROCESS_TEXT,
                    )
                elif worker.get("status") == "stale":
                    result.flag(
                        "degraded",
                        f"El proceso de fondo «{name}» de {process.name} no da señales de vida.",
                        venue_text=VENUE_PROCESS_TEXT,
                    )
    workers = [p for p in processes if p.kind == "worker"]
    if workers and not any(p.live(now, stale_after_s) for p in workers):
        newest = max(workers, key=lambda p: p.last_beat_at)
        if newest.status(now, stale_after_s) == "stopped":
            result.flag(
                "degraded",
                f"No hay ningún caja worker en marcha ({newest.name} se detuvo).",
                venue_text=VENUE_PROCESS_TEXT,
            )
    return report, runner


async def check_health(
    db: Database,
    *,
    redis_url: str | None = None,
    workers: WorkerRegistry | None = None,
    provider_ids: Iterable[str] | None = None,
    backup_dir: str | None = None,
    backups_expected: bool = False,
    backup_max_age_hours: float = 26.0,
    agent_stale_after_s: float = 120.0,
    tls_cert_file: str | None = None,
    instance: str = "",
    lifecycle: str | None = None,
    venue_id: int | None = None,
    process_stale_after_s: float | None = None,
    timeout_s: float = 3.0,
    now: datetime | None = None,
) -> HealthReport:
    """Check everything this instance depends on.

    ``provider_ids``: the installed providers (a register naming another one is flagged); None skips the
    check. ``backup_dir``: this process's backup folder, read when no backup runner has reported in the
    database yet. ``backups_expected``: backups are scheduled here (``CAJA_BACKUP_INTERVAL_HOURS`` > 0), so
    having no runner at all is a problem. ``lifecycle``: ``starting`` / ``serving`` / ``draining`` (not
    ``serving`` is an error: the instance does not take requests). ``venue_id``: a venue admin's view
    (that venue's registers, no process or backup detail).
    """
    now = now or utcnow()
    workers = workers if workers is not None else WORKERS
    scope = "install" if venue_id is None else "venue"
    result = _Collector(scope)
    services: dict[str, Any] = {}

    if lifecycle is not None:
        services["lifecycle"] = lifecycle
        if lifecycle == "starting":
            result.flag("error", "La instancia está arrancando (espera la base de datos).")
        elif lifecycle == "draining":
            result.flag("error", "La instancia se está deteniendo: termina lo que tiene en curso y no acepta más.")

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
    head = migrate.head_revision()
    if db_ok:
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
        services["migrations"] = {"status": "unknown", "current": None, "head": head, "pending": []}
    schema_ok = db_ok and current == head

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
            result.flag(
                "degraded", f"El proceso de fondo «{name}» no da señales de vida.", venue_text=VENUE_PROCESS_TEXT
            )
        elif state == "failing":
            result.flag(
                "degraded",
                f"El proceso de fondo «{name}» está fallando: {status.last_error}",
                venue_text=VENUE_PROCESS_TEXT,
            )
        elif state == "stopped":
            result.flag("degraded", f"El proceso de fondo «{name}» está detenido.", venue_text=VENUE_PROCESS_TEXT)
    services["workers"] = worker_report

    # Every process (app instances, caja worker) from their heartbeats in the database.
    runner = None
    if schema_ok:
        from .heartbeats import list_processes

        try:
            processes = await asyncio.wait_for(list_processes(db), timeout_s)
        except Exception as exc:  # noqa: BLE001
            result.flag("degraded", f"No se pudo leer el latido de los procesos ({type(exc).__name__}).")
            processes = []
        from .heartbeats import STALE_AFTER_S

        process_report, runner = _processes_report(
            processes,
            now=now,
            instance=instance,
            result=result,
            stale_after_s=process_stale_after_s or STALE_AFTER_S,
        )
        services["processes"] = process_report

    # Backups: the runner's report in the database, else this process's own folder.
    from .backups import backup_status

    info = None
    if runner is not None:
        info = backup_status(now=now, max_age_hours=backup_max_age_hours, runner=runner.backup)
        services["backups"] = {**info.to_dict(), "runner": runner.name}
    elif backup_dir is not None:
        info = backup_status(backup_dir, now=now, max_age_hours=backup_max_age_hours)
        services["backups"] = info.to_dict()
    elif backups_expected and db_ok:
        services["backups"] = {"status": "not_scheduled"}
        result.flag("degraded", "Ningún proceso toma los respaldos programados: inicie `caja worker`.")
    if info is not None:
        if info.status == "failed":
            result.flag(
                "degraded", f"El último respaldo falló: {info.last_error}", venue_text="El último respaldo falló."
            )
        elif info.status == "stale":
            result.flag(
                "degraded", f"El último respaldo tiene {info.age_hours:.0f} h (más de {backup_max_age_hours:.0f} h)."
            )
        elif info.status == "none":
            result.flag("degraded", "No hay ningún respaldo.")
        if info.damaged:
            result.flag("degraded", f"Hay {info.damaged} respaldo(s) dañado(s): vea `caja backup list`.")

    # The TLS certificate the proxy serves (when configured).
    if tls_cert_file:
        try:
            not_after = await asyncio.to_thread(certificate_not_after, tls_cert_file)
        except (OSError, ValueError, IndexError) as exc:
            services["tls_certificate"] = {"status": "unreadable"}
            result.flag(
                "degraded", f"No se puede leer el certificado TLS de CAJA_TLS_CERT_FILE ({type(exc).__name__})."
            )
        else:
            days = (not_after - now).total_seconds() / 86400
            state = "expired" if days <= 0 else "expiring" if days < CERT_WARN_DAYS else "ok"
            services["tls_certificate"] = {
                "status": state,
                "not_after": not_after.isoformat(),
                "days_left": round(days, 1),
            }
            if state == "expired":
                result.flag("error", "El certificado TLS venció: los navegadores no abren el sistema.")
            elif state == "expiring":
                result.flag("degraded", f"El certificado TLS vence en {days:.0f} días: renuévelo (certbot renew).")

    # Registers: providers, breakers, agents, contingency mode.
    if schema_ok:
        try:
            registers, breakers = await _registers(db, timeout_s, venue_id)
        except Exception as exc:  # noqa: BLE001
            result.flag("error", f"No se pudieron leer las cajas ({type(exc).__name__}).")
            registers, breakers = [], {}
        installed = set(provider_ids) if provider_ids is not None else None
        register_report: dict[str, Any] = {}
        several = len({r.venue_id for r in registers}) > 1
        for register in registers:
            key = f"{register.venue_id}:{register.code}" if several else register.code
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
                rival = register.agent_rival or {}
                both_at = _parse_iso(rival.get("both_alive_at"))
                rival_seen = _parse_iso(rival.get("seen_at"))
                if (
                    both_at is not None
                    and rival_seen is not None
                    and (now - rival_seen).total_seconds() < TWO_AGENTS_WINDOW_S
                ):
                    agent["status"] = "two_agents"
                    result.flag("degraded", two_agents_text(register.code))
            register_report[key] = {
                "venue_id": register.venue_id,
                "operational_status": register.operational_status,
                "mode": mode.mode,
                "allowed_methods": mode.allowed_methods,
                "providers": providers,
                "breakers": dict(sorted(reg_breakers.items())),
                "agent": agent,
            }
        services["registers"] = register_report

    # Payments that need a person (install-wide counts: not in a venue admin's view).
    if db_ok and scope == "install":
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

    if scope == "venue":
        # A venue admin sees the venue's registers and the states of shared services, not the install's
        # processes, hosts, backup folder or other venues' problems.
        services.pop("processes", None)
        services["workers"] = {name: w["status"] for name, w in services["workers"].items()}
        if "backups" in services:
            services["backups"] = {"status": services["backups"]["status"]}
        services.pop("tls_certificate", None)
    return HealthReport(
        status=result.status,
        checked_at=now,
        version=version(),
        instance=instance,
        services=services,
        problems=result.problems,
        scope=scope,
    )


def liveness() -> dict[str, Any]:
    """``/health/live``: the process answers (no dependency is checked)."""
    return {"status": "ok", "version": version()}
