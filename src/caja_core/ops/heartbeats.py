"""Process heartbeats in the database (table ``ops_processes``).

Every app instance and every ``caja worker`` runs a :class:`Heartbeat`: every ``every_s`` seconds it writes
its row (state, version, its background workers' statuses and, for a backup runner, the last backup run).
Any instance reads all rows (:func:`list_processes`), so:

* ``/health`` and the metrics show every process's workers, and a process killed without a word shows as
  *stale* once its last beat is older than ``STALE_AFTER_S``;
* the backup result of the runner (often another process, with another folder) is known everywhere;
* ``caja db downgrade`` and ``caja backup restore`` refuse while app instances are live (:func:`live_instances`).

A clean stop writes ``stopped``. Rows not heard from for ``FORGET_AFTER_S`` are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, select, update

from ..clock import utcnow
from ..db.engine import Database, rowcount
from .models import OpsProcess
from .workers import WORKERS, WorkerRegistry

log = logging.getLogger("caja.ops")

BEAT_EVERY_S = 5.0
#: A process whose last beat is older than this is not live (killed, frozen, or its host is down).
STALE_AFTER_S = 30.0
#: Rows of processes not heard from for this long are forgotten.
FORGET_AFTER_S = 24 * 3600.0


class ProcessInfo(msgspec.Struct, kw_only=True):
    name: str
    kind: str
    host: str
    pid: int
    version: str
    state: str
    started_at: datetime
    last_beat_at: datetime
    workers: dict[str, Any]
    backup: dict[str, Any] | None

    def age_s(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.last_beat_at).total_seconds())

    def live(self, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> bool:
        """Running and heard from recently."""
        return self.state != "stopped" and self.age_s(now) <= stale_after_s

    def status(self, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> str:
        """``stopped`` (clean stop), ``stale`` (no beat for too long: killed or frozen) or its state."""
        if self.state == "stopped":
            return "stopped"
        if self.age_s(now) > stale_after_s:
            return "stale"
        return self.state


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("caja-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "0"


def workers_snapshot(registry: WorkerRegistry, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    out: dict[str, Any] = {}
    for name, status in sorted(registry.snapshot().items()):
        out[name] = {
            "status": status.state(now),
            "last_beat_at": status.last_beat_at.isoformat() if status.last_beat_at else None,
            "last_ok_at": status.last_ok_at.isoformat() if status.last_ok_at else None,
            "last_error": status.last_error,
            "consecutive_failures": status.consecutive_failures,
        }
    return out


async def write_beat(
    db: Database,
    *,
    name: str,
    kind: str,
    state: str,
    started_at: datetime,
    workers: dict[str, Any],
    backup: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Insert or update this process's row (and forget rows silent for a day)."""
    now = now or utcnow()
    values = {
        "kind": kind,
        "host": socket.gethostname()[:120],
        "pid": os.getpid(),
        "version": _version(),
        "state": state,
        "started_at": started_at,
        "last_beat_at": now,
        "workers": workers,
        "backup": backup,
    }
    async with db.session() as s:
        result = await s.execute(update(OpsProcess).where(OpsProcess.name == name).values(**values))
        if rowcount(result) == 0:
            s.add(OpsProcess(name=name, **values))
        await s.execute(delete(OpsProcess).where(OpsProcess.last_beat_at < now - timedelta(seconds=FORGET_AFTER_S)))


async def list_processes(db: Database) -> list[ProcessInfo]:
    async with db.reader() as s:
        rows = (await s.execute(select(OpsProcess).order_by(OpsProcess.kind, OpsProcess.name))).scalars()
        return [
            ProcessInfo(
                name=r.name,
                kind=r.kind,
                host=r.host,
                pid=r.pid,
                version=r.version,
                state=r.state,
                started_at=r.started_at,
                last_beat_at=r.last_beat_at,
                workers=dict(r.workers or {}),
                backup=dict(r.backup) if r.backup else None,
            )
            for r in rows
        ]


async def live_instances(db: Database, *, now: datetime | None = None) -> list[ProcessInfo]:
    """App instances and workers that are running now (heard from in the last ``STALE_AFTER_S``).

    An older database without the table has no heartbeats: nothing is reported live."""
    from sqlalchemy.exc import DBAPIError

    try:
        processes = await list_processes(db)
    except DBAPIError:
        return []
    return [p for p in processes if p.live(now)]


class Heartbeat:
    """Writes this process's row every ``every_s`` seconds while it runs.

    ``backup_info`` (optional) returns the backup runner's report for the row. A failing write (database
    down) is logged once per outage, not once per beat.
    """

    def __init__(
        self,
        db: Database,
        *,
        name: str,
        kind: str,
        workers: WorkerRegistry | None = None,
        every_s: float = BEAT_EVERY_S,
        backup_info: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.db = db
        self.name = name
        self.kind = kind
        self.workers = workers if workers is not None else WORKERS
        self.every_s = every_s
        self.backup_info = backup_info
        self.state = "starting"
        self.started_at = utcnow()
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._failing = False

    def set_state(self, state: str, *, wake: bool = True) -> None:
        """Change the state (``serving``, ``draining``…) and write it at once; ``wake=False`` from a signal
        handler (the next beat writes it)."""
        self.state = state
        if wake:
            self._wake.set()

    async def beat_once(self) -> bool:
        try:
            await write_beat(
                self.db,
                name=self.name,
                kind=self.kind,
                state=self.state,
                started_at=self.started_at,
                workers=workers_snapshot(self.workers),
                backup=self.backup_info() if self.backup_info else None,
            )
        except Exception as exc:  # noqa: BLE001 - the database may be down: say it once, keep trying
            if not self._failing:
                log.warning(
                    "no se pudo registrar el latido de %s en la base (%s); se reintenta cada %.0f s",
                    self.name,
                    type(exc).__name__,
                    self.every_s,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("latido de %s registrado de nuevo en la base", self.name)
        self._failing = False
        return True

    async def _loop(self) -> None:
        while True:
            await self.beat_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every_s)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"caja-heartbeat-{self.name}")

    async def stop(self) -> None:
        """Stop beating and write ``stopped`` (best effort: the database may be gone)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = "stopped"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.beat_once(), 5)
