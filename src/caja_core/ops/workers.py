"""Liveness of background workers (payment reconciliation, backup scheduler…).

A worker registers itself with its expected beat interval and calls :func:`beat` on every loop turn (with
``error=...`` when the turn failed). ``/health`` reads :func:`snapshot`: a worker whose last beat is older
than ``stale_after_s`` is not alive; one whose last turn failed is failing. The registry is per process:
every app instance reports its own workers.
"""

from __future__ import annotations

import threading
from datetime import datetime

import msgspec

from ..clock import utcnow


class WorkerStatus(msgspec.Struct, kw_only=True):
    name: str
    interval_s: float
    stale_after_s: float
    registered_at: datetime
    last_beat_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str = ""
    consecutive_failures: int = 0
    stopped: bool = False

    def state(self, now: datetime | None = None) -> str:
        """``ok``, ``failing`` (last turn raised), ``stale`` (no beat for too long) or ``stopped``."""
        now = now or utcnow()
        if self.stopped:
            return "stopped"
        reference = self.last_beat_at or self.registered_at
        if (now - reference).total_seconds() > self.stale_after_s:
            return "stale"
        if self.consecutive_failures:
            return "failing"
        return "ok"


class WorkerRegistry:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerStatus] = {}
        self._lock = threading.Lock()

    def register(self, name: str, *, interval_s: float, stale_after_s: float | None = None) -> None:
        """Declare a worker that beats every ``interval_s`` seconds (stale after 3 missed beats by default)."""
        with self._lock:
            self._workers[name] = WorkerStatus(
                name=name,
                interval_s=interval_s,
                stale_after_s=stale_after_s or max(3 * interval_s, 5.0),
                registered_at=utcnow(),
            )

    def beat(self, name: str, *, error: str = "") -> None:
        """Report one loop turn of ``name``: ``error`` empty when it went well."""
        now = utcnow()
        with self._lock:
            status = self._workers.get(name)
            if status is None:
                status = self._workers[name] = WorkerStatus(
                    name=name, interval_s=60, stale_after_s=180, registered_at=now
                )
            status.last_beat_at = now
            status.stopped = False
            if error:
                status.last_error = error[:300]
                status.consecutive_failures += 1
            else:
                status.last_ok_at = now
                status.consecutive_failures = 0

    def stopped(self, name: str) -> None:
        with self._lock:
            if name in self._workers:
                self._workers[name].stopped = True

    def unregister(self, name: str) -> None:
        with self._lock:
            self._workers.pop(name, None)

    def snapshot(self) -> dict[str, WorkerStatus]:
        with self._lock:
            return {name: msgspec.structs.replace(status) for name, status in self._workers.items()}

    def clear(self) -> None:
        with self._lock:
            self._workers.clear()


#: The process-wide registry that workers report to and ``/health`` reads.
WORKERS = WorkerRegistry()


def register_worker(name: str, *, interval_s: float, stale_after_s: float | None = None) -> None:
    WORKERS.register(name, interval_s=interval_s, stale_after_s=stale_after_s)


def beat(name: str, *, error: str = "") -> None:
    WORKERS.beat(name, error=error)


class DatabaseBackoff:
    """A background loop's back-off while the database does not answer: the wait doubles from ``base_s`` up
    to ``max_s`` and each step is one log line (no traceback); the first success says so once.

    ``failed(exc)`` returns False when ``exc`` is not a database outage (the caller logs it as a bug)."""

    def __init__(self, name: str, *, base_s: float = 1.0, max_s: float = 30.0) -> None:
        self.name = name
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0
        self.delay_s = 0.0

    def failed(self, exc: BaseException) -> bool:
        import logging

        from .dbstate import database_unavailable, describe

        if not database_unavailable(exc):
            return False
        self.failures += 1
        self.delay_s = min(self.max_s, self.base_s * 2 ** (self.failures - 1))
        logging.getLogger("caja.workers").warning(
            "%s: la base de datos no responde (%s); nuevo intento en %.0f s (intento %d)",
            self.name,
            describe(exc),
            self.delay_s,
            self.failures,
        )
        return True

    def succeeded(self) -> None:
        if self.failures:
            import logging

            logging.getLogger("caja.workers").info(
                "%s: la base de datos responde de nuevo tras %d intentos", self.name, self.failures
            )
        self.failures = 0
        self.delay_s = 0.0
