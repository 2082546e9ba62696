"""An app instance's life: starting (waiting for the database), serving, draining (after SIGTERM), stopped.

* **Starting.** The instance listens at once. ``/health`` answers 503 (``lifecycle: starting``) and pages
  a Spanish 503 while a background task waits for the database with back-off (one log line per step), then
  starts the payment orchestrator (crash recovery first) and the scheduled backups, and serves.
* **Draining** (the first SIGTERM or Ctrl-C). ``/health`` and ``/health/ready`` answer 503, and so does every
  new GET/HEAD (``Connection: close``, ``Retry-After``): the proxy retries those on another instance and,
  after one such failure, stops sending it anything (``max_fails=1`` in ``deploy/nginx/caja.conf``). Other
  methods (a sale, a payment) are still served, so no POST ever gets an error that the proxy would not
  replay. Once no request has arrived for ``quiet_s`` (or after ``max_drain_s``) the instance stops
  listening, lets the requests in flight finish, stops its background work, writes ``stopped`` in its
  heartbeat and exits with code 0. A second signal stops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("caja.web")

#: Paths that answer in every state: the process's own liveness and readiness, and static files.
ALWAYS_SERVED = ("/health/live", "/health/ready", "/static/")
#: Paths that answer while starting or draining (they report the state themselves).
STATE_REPORTING = ("/health",)
RETRY_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class Lifecycle:
    def __init__(self, *, quiet_s: float = 1.0, min_drain_s: float = 0.5, max_drain_s: float = 10.0) -> None:
        self.state = "starting"
        self.quiet_s = quiet_s
        self.min_drain_s = min_drain_s
        self.max_drain_s = max_drain_s
        self.drain_started: float | None = None
        self.last_request_at = time.monotonic()
        self.in_flight = 0
        self.heartbeat: Any = None
        self.waiting_reason = ""

    @property
    def serving(self) -> bool:
        return self.state == "serving"

    @property
    def draining(self) -> bool:
        return self.state == "draining"

    def set_serving(self) -> None:
        if self.state == "starting":
            self.state = "serving"
            if self.heartbeat is not None:
                self.heartbeat.set_state("serving")

    def mark_stopped(self) -> None:
        self.state = "stopped"

    def begin_drain(self) -> None:
        """Called from the signal handler: only flags (the event loop does the rest)."""
        if self.state in ("draining", "stopped"):
            return
        self.state = "draining"
        self.drain_started = time.monotonic()
        if self.heartbeat is not None:
            self.heartbeat.set_state("draining", wake=False)

    def ready_to_close(self) -> bool:
        """The proxy has stopped sending us requests (or we waited long enough)."""
        if self.drain_started is None:
            return False
        now = time.monotonic()
        elapsed = now - self.drain_started
        if elapsed >= self.max_drain_s:
            return True
        return elapsed >= self.min_drain_s and now - self.last_request_at >= self.quiet_s

    def request_started(self) -> None:
        self.last_request_at = time.monotonic()
        self.in_flight += 1

    def request_finished(self) -> None:
        self.in_flight -= 1


async def wait_for_database(db: Any, *, stop: asyncio.Event | None = None) -> None:
    """Return once the database answers; until then try again with back-off, one log line per try."""
    from caja_core.ops.health import ping_database

    attempt = 0
    while True:
        try:
            await ping_database(db, 5)
        except Exception as exc:  # noqa: BLE001 - any failure: say it in one line and wait
            delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
            attempt += 1
            log.warning(
                "la base de datos no responde (%s); nuevo intento en %.0f s (intento %d)",
                type(exc).__name__,
                delay,
                attempt,
            )
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    raise asyncio.CancelledError from None
            else:
                await asyncio.sleep(delay)
            continue
        if attempt:
            log.info("la base de datos responde de nuevo tras %d intentos", attempt)
        return
