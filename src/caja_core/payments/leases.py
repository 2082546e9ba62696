"""One command in flight per device, across app instances, that heals by itself when an instance dies.

A ``DeviceLease`` row is the lock. Inserting it takes the device; a row already there means "Terminal ocupado"
at once (no queue while a customer waits at the bar) — unless its holder is dead.

* **Heartbeat.** The holder renews every lease it holds every ``beat_s`` seconds (one UPDATE for all of them):
  ``beat`` goes up by one.
* **Death is judged on the observer's monotonic clock.** An instance that sees the same ``(token, beat)`` for
  ``ttl_s`` seconds of *its own* monotonic clock, looking at least every ``ttl_s / 2``, considers the holder
  dead and may take the lease over (an UPDATE conditioned on that token: one instance wins). No wall clock is compared, so a clock step on any
  instance, forward or back, neither frees a live lease nor keeps a dead one. With the defaults (beat 2 s,
  time 10 s) and the worker looking every second, a crashed instance's device is free again within ~12 s.
* **A holder of this machine that is gone.** When the holder's name is the default one of a process on this
  machine (host-pid, see ``CAJA_INSTANCE_ID``) and that process no longer exists (killed, crashed, restarted
  under a new pid), the operating system has proved it dead: its lease is free at once, so a restarted server
  asks the terminal about the charge its previous life left behind right away instead of after ``ttl_s``.
* **Fencing.** Each acquisition draws a new random ``token``; the attempt being worked on records it
  (``PaymentAttempt.fence``). A writer whose token is no longer the attempt's (its lease was taken over) may
  only deliver proofs of what the device did (an approval, a decline); it drives nothing else.
* **Cancel across instances.** A cashier's cancel that lands on another instance sets ``cancel_requested``;
  the holder learns it with its next heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import Clock
from ..db.engine import rowcount
from ..errors import Busy
from .models import DeviceLease
from .sql import insert_ignore

log = logging.getLogger("caja.payments.leases")

BUSY_MESSAGE = "Terminal ocupado: otra caja o proceso está usando este terminal. Intente en unos segundos."

#: Defaults: a holder beats every 2 s; a lease whose beat stands still for 10 s is dead.
DEFAULT_TTL_S = 10.0
DEFAULT_BEAT_S = 2.0


@dataclass(frozen=True)
class Taken:
    """A lease this instance now holds; ``previous_*`` describe the dead holder it replaced, if any."""

    device_key: str
    token: str
    previous_attempt_id: int | None = None
    previous_owner: str | None = None


@dataclass(frozen=True)
class BeatResult:
    lost: frozenset[str]  # tokens this instance no longer holds (taken over, or gone)
    cancel_requested: frozenset[str]  # tokens whose attempt a cashier cancelled on another instance


class LeaseKeeper:
    """The leases of one app instance: acquire, renew, judge others', release."""

    def __init__(
        self,
        clock: Clock,
        instance_id: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        beat_s: float = DEFAULT_BEAT_S,
    ) -> None:
        self.clock = clock
        self.instance_id = instance_id
        self.ttl_s = ttl_s
        self.beat_s = beat_s
        self._held: dict[str, str] = {}  # device_key → token
        # device_key → (token, beat, first seen, last seen), on this instance's monotonic clock
        self._seen: dict[str, tuple[str, int, float, float]] = {}

    # judging ---------------------------------------------------------------------------------------------
    def holds(self, device_key: str, token: str | None = None) -> bool:
        held = self._held.get(device_key)
        return held is not None and (token is None or held == token)

    def alive(self, row: DeviceLease) -> bool:
        """Whether ``row``'s holder is alive, as far as this instance can tell (never from a wall clock). The
        beat must stand still while this instance keeps looking: when this instance itself did not look for
        half the lease time (it was busy or paused), the holder may have been paused with it, and the count
        starts again. A holder that is a process of this machine which no longer exists is dead at once."""
        if self._held.get(row.device_key) == row.token:
            return True
        if process_gone(row.owner):
            return False
        mono = self.clock.monotonic()
        seen = self._seen.get(row.device_key)
        if seen is None or seen[0] != row.token or seen[1] != row.beat or mono - seen[3] > self.ttl_s / 2:
            self._seen[row.device_key] = (row.token, row.beat, mono, mono)
            return True
        self._seen[row.device_key] = (seen[0], seen[1], seen[2], mono)
        return mono - seen[2] < self.ttl_s

    def observe(self, rows: list[DeviceLease]) -> None:
        """Remember every lease's beat (the worker calls this each pass, so a holder that stops beating is
        known dead ``ttl_s`` after its last beat, not ``ttl_s`` after someone first looks)."""
        present = set()
        for row in rows:
            present.add(row.device_key)
            self.alive(row)
        for key in list(self._seen):
            if key not in present:
                del self._seen[key]

    def gone(self, row: DeviceLease) -> bool:
        """Whether ``row``'s holder is proved dead by this machine's operating system (see ``process_gone``)."""
        return self._held.get(row.device_key) != row.token and process_gone(row.owner)

    # taking and giving back --------------------------------------------------------------------------------
    async def acquire(
        self, s: AsyncSession, *, device_key: str, attempt_id: int | None, purpose: str = "charge"
    ) -> Taken:
        """Take the device or raise ``Busy``. Runs inside the caller's transaction."""
        now = self.clock.now()
        token = uuid.uuid4().hex
        values: dict[str, Any] = {
            "attempt_id": attempt_id,
            "owner": self.instance_id,
            "acquired_at": now,
            "expires_at": now + timedelta(seconds=self.ttl_s),
            "token": token,
            "beat": 0,
            "purpose": purpose,
            "cancel_requested": False,
        }
        inserted = await s.execute(insert_ignore(s, DeviceLease, {"device_key": device_key, **values}))
        if rowcount(inserted) == 1:
            self._held[device_key] = token
            return Taken(device_key=device_key, token=token)
        row = (
            await s.execute(
                select(DeviceLease)
                .where(DeviceLease.device_key == device_key)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if row is None or self.alive(row):
            raise Busy(BUSY_MESSAGE, code="payment.device_busy", details={"device_key": device_key})
        previous = (row.attempt_id, row.owner)
        taken = await s.execute(
            update(DeviceLease)
            .where(DeviceLease.device_key == device_key, DeviceLease.token == row.token)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if rowcount(taken) != 1:
            raise Busy(BUSY_MESSAGE, code="payment.device_busy", details={"device_key": device_key})
        log.warning(
            "lease of %s taken over from %s (attempt %s): its beat stood still for %.0f s",
            device_key,
            previous[1],
            previous[0],
            self.ttl_s,
        )
        self._seen.pop(device_key, None)
        self._held[device_key] = token
        return Taken(device_key=device_key, token=token, previous_attempt_id=previous[0], previous_owner=previous[1])

    async def release(self, s: AsyncSession, *, device_key: str, token: str | None) -> None:
        if token is None:
            return
        await s.execute(
            delete(DeviceLease)
            .where(DeviceLease.device_key == device_key, DeviceLease.token == token)
            .execution_options(synchronize_session=False)
        )
        if self._held.get(device_key) == token:
            del self._held[device_key]

    def forget(self, device_key: str, token: str | None) -> None:
        """This instance stops renewing a lease (its transaction did not commit, or it was lost)."""
        if token is not None and self._held.get(device_key) == token:
            del self._held[device_key]

    async def release_own(self, s: AsyncSession) -> int:
        """Drop the leases a previous life of this instance left behind (same instance id)."""
        done = await s.execute(
            delete(DeviceLease)
            .where(DeviceLease.owner == self.instance_id)
            .execution_options(synchronize_session=False)
        )
        return rowcount(done)

    # renewing --------------------------------------------------------------------------------------------
    async def beat(self, s: AsyncSession) -> BeatResult:
        """Renew every lease this instance holds, in one statement."""
        held = dict(self._held)
        if not held:
            return BeatResult(lost=frozenset(), cancel_requested=frozenset())
        now = self.clock.now()
        rows = (
            await s.execute(
                update(DeviceLease)
                .where(DeviceLease.token.in_(list(held.values())))
                .values(beat=DeviceLease.beat + 1, expires_at=now + timedelta(seconds=self.ttl_s))
                .returning(DeviceLease.token, DeviceLease.cancel_requested)
                .execution_options(synchronize_session=False)
            )
        ).all()
        alive = {r[0] for r in rows}
        lost = frozenset(t for t in held.values() if t not in alive)
        for key, token in held.items():
            if token in lost and self._held.get(key) == token:
                del self._held[key]
        return BeatResult(lost=lost, cancel_requested=frozenset(r[0] for r in rows if r[1]))


async def lease_row(s: AsyncSession, device_key: str) -> DeviceLease | None:
    return (await s.execute(select(DeviceLease).where(DeviceLease.device_key == device_key))).scalar_one_or_none()


async def all_leases(s: AsyncSession) -> list[DeviceLease]:
    return list((await s.execute(select(DeviceLease))).scalars())


async def request_cancel(s: AsyncSession, *, device_key: str, attempt_id: int) -> bool:
    """Ask the holder of the device's lease (maybe another instance) to cancel this attempt's charge."""
    done = await s.execute(
        update(DeviceLease)
        .where(DeviceLease.device_key == device_key, DeviceLease.attempt_id == attempt_id)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return rowcount(done) > 0


def process_gone(owner: str) -> bool:
    """Whether ``owner`` names, in the default form host-pid, a process of this machine that no longer exists (or
    is a zombie waiting to be reaped). Any other name, another machine's, or a process that exists: False (its
    death is judged by its beat)."""
    host, _, pid_text = owner.rpartition("-")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's process): alive as far as this machine can tell
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False
