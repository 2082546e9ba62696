"""Commands for register-PC agents, kept in the ``agent_commands`` table.

The provider side (``DbAgentChannel.exchange``) writes a command and waits for its result; the agent side (the
web API that ``caja agent`` long-polls) hands the oldest queued command out, stores the intermediate messages
and the result. Both sides only meet in the database, so the app instance that runs the sale and the one the
agent happens to reach may differ. Within one instance a small notifier wakes the waiting side at once; across
instances the waiting side re-reads the row every ``poll_interval_s``.

Life of a command: ``queued`` → ``delivered`` (the agent took it) → ``done`` (result stored). A command nobody
took before its pick-up time, or without a result after its deadline, becomes ``expired``: a queued command
that expired is never handed out (the terminal never sees it: *not sent*); a delivered one that expired may
still get its result later (kept for the record; the payment was already reconciled through the terminal).

A delivered command without result is handed out again when the agent asks after ``redeliver_after_s``: an
agent that never received it (the answer to its long poll was lost) runs it; one that did run it knows it
from its journal and posts its stored result again instead of running it twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import SYSTEM_CLOCK, Clock
from ..db.engine import rowcount
from ..errors import Conflict, NotFound, ValidationFailed
from ..ops.logging import luhn_ok
from ..payments.models import AgentCommand, PaymentAttempt
from ..providers import Progress, ProgressCallback

log = logging.getLogger("caja.agents")

QUEUED, DELIVERED, DONE, EXPIRED = "queued", "delivered", "done", "expired"
#: Longest long poll the server accepts (the agent asks for 25 s).
MAX_WAIT_S = 30.0
#: Terminal statuses an agent may report in its heartbeat.
TERMINAL_STATUSES = ("ok", "unreachable")
#: Size limits of what an agent posts.
MAX_MESSAGE_CHARS = 200
MAX_DETAIL_CHARS = 300
_PROGRESS_COLUMN_CHARS = 200
_PROGRESS_TEXT_CHARS = 80


class AgentTiming(msgspec.Struct, frozen=True, kw_only=True):
    """How long each side waits. Defaults suit a real night; tests use short ones."""

    pickup_timeout_s: float = 10.0  # a command nobody takes in this time was not sent (agent offline)
    result_grace_s: float = 15.0  # beyond the command's own deadline: network, agent restart
    poll_interval_s: float = 0.5  # re-read of the row when the other side may be another instance
    redeliver_after_s: float = 15.0  # a delivered command without result is handed out again after this
    min_remaining_s: float = 1.0  # a command with less time left than this is not handed out
    retention_days: float = 30.0  # finished commands older than this are deleted (the attempt keeps the outcome)


class AgentCommandOut(msgspec.Struct, kw_only=True):
    """What ``GET /api/agent/v1/commands/next`` returns."""

    command_id: int
    attempt_id: int | None
    payload: dict[str, Any]
    deadline_s: float


NOT_REACHED = "El agente de la caja no tomó el comando: ¿está encendido y conectado el PC de la caja?"


class AgentNotReached(Exception):
    """Nobody took the command in time: it never reached the terminal (the provider maps it to unavailable)."""

    not_sent = True


class AgentNoAnswer(Exception):
    """The agent took the command but no result came back in time: the sale is in doubt, never declined."""

    not_sent = False


# --- waking the other side within one instance --------------------------------------------------------------


class Notifier:
    """Wake-ups by key (``("register", id)``, ``("command", id)``) for waiters of any event loop."""

    def __init__(self) -> None:
        self._waiters: dict[Hashable, set[asyncio.Future]] = {}

    async def wait(self, key: Hashable, timeout: float) -> bool:
        """True when notified within ``timeout`` seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiters.pop(key, None)

    def notify(self, key: Hashable) -> None:
        for fut in list(self._waiters.get(key, ())):
            loop = fut.get_loop()
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(True)


NOTIFIER = Notifier()


def _register_key(register_id: int) -> tuple[str, int]:
    return ("register", register_id)


def _command_key(command_id: int) -> tuple[str, int]:
    return ("command", command_id)


# --- card data never stored ------------------------------------------------------------------------------

_CARD_KEYS = {
    "accountnumber",
    "pan",
    "cardnumber",
    "numerotarjeta",
    "track",
    "track1",
    "track2",
    "trackdata",
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "pin",
    "pinblock",
}
_PAN_LIKE = re.compile(r"^\d{13,19}$")


def scrub_card_data(value: Any) -> Any:
    """The agent masks the terminal's answer already; this drops card fields a faulty agent might still send."""
    if isinstance(value, dict):
        return {
            str(k): scrub_card_data(v)
            for k, v in value.items()
            if re.sub(r"[^a-z0-9]", "", str(k).lower()) not in _CARD_KEYS
        }
    if isinstance(value, list):
        return [scrub_card_data(v) for v in value]
    if isinstance(value, str):
        digits = value.replace(" ", "").replace("-", "")
        if _PAN_LIKE.match(digits) and luhn_ok(digits):
            return "*" * 12 + digits[-4:]
    return value


# --- intermediate messages, kept in the row's progress column ----------------------------------------------


def _load_progress(raw: str | None) -> tuple[int, list[list[Any]]]:
    """(last sequence number, recent [seq, code, text] entries) of a progress column."""
    if not raw:
        return 0, []
    try:
        data = json.loads(raw)
        return int(data["n"]), [list(item) for item in data["m"]]
    except (ValueError, KeyError, TypeError):
        return 0, []


def _dump_progress(seq: int, entries: list[list[Any]]) -> str:
    """The newest entries that fit the column (older ones are dropped: progress is for people)."""
    while True:
        raw = json.dumps({"n": seq, "m": entries}, ensure_ascii=False, separators=(",", ":"))
        if len(raw) <= _PROGRESS_COLUMN_CHARS or len(entries) <= 1:
            return raw[:_PROGRESS_COLUMN_CHARS] if len(raw) > _PROGRESS_COLUMN_CHARS else raw
        entries = entries[1:]


# --- the server side (what the agent API calls) -----------------------------------------------------------


def _remaining_s(command: AgentCommand, now) -> float:
    return command.deadline_s - (now - command.created_at).total_seconds()


async def _expire_overdue(s: AsyncSession, register_id: int, now, timing: AgentTiming) -> None:
    rows = (
        await s.execute(
            select(AgentCommand).where(
                AgentCommand.register_id == register_id, AgentCommand.status.in_((QUEUED, DELIVERED))
            )
        )
    ).scalars()
    for command in list(rows):
        remaining = _remaining_s(command, now)
        overdue = remaining < timing.min_remaining_s if command.status == QUEUED else remaining < -timing.result_grace_s
        if overdue:
            await s.execute(
                update(AgentCommand)
                .where(AgentCommand.id == command.id, AgentCommand.status == command.status)
                .values(status=EXPIRED)
            )


async def claim_next(
    s: AsyncSession, register_id: int, *, clock: Clock = SYSTEM_CLOCK, timing: AgentTiming = AgentTiming()
) -> AgentCommandOut | None:
    """Mark the register's oldest queued command delivered and return it (or a delivered command whose result
    never came back, after ``redeliver_after_s``). One short transaction; never waits."""
    now = clock.now()
    await _expire_overdue(s, register_id, now, timing)
    queued = (
        await s.execute(
            select(AgentCommand)
            .where(AgentCommand.register_id == register_id, AgentCommand.status == QUEUED)
            .order_by(AgentCommand.id)
        )
    ).scalars()
    for command in list(queued):
        taken = await s.execute(
            update(AgentCommand)
            .where(AgentCommand.id == command.id, AgentCommand.status == QUEUED)
            .values(status=DELIVERED, delivered_at=now)
        )
        if rowcount(taken) == 1:
            return _out(command, now)
    delivered = (
        await s.execute(
            select(AgentCommand)
            .where(
                AgentCommand.register_id == register_id, AgentCommand.status == DELIVERED, AgentCommand.result.is_(None)
            )
            .order_by(AgentCommand.id)
        )
    ).scalars()
    for command in list(delivered):
        if command.delivered_at is None or (now - command.delivered_at).total_seconds() < timing.redeliver_after_s:
            continue
        if _remaining_s(command, now) < timing.min_remaining_s:
            continue
        taken = await s.execute(
            update(AgentCommand)
            .where(
                AgentCommand.id == command.id,
                AgentCommand.status == DELIVERED,
                AgentCommand.delivered_at == command.delivered_at,
            )
            .values(delivered_at=now)
        )
        if rowcount(taken) == 1:
            log.info("agent command %s handed out again (no result since its delivery)", command.id)
            return _out(command, now)
    return None


def _out(command: AgentCommand, now) -> AgentCommandOut:
    return AgentCommandOut(
        command_id=command.id,
        attempt_id=command.attempt_id,
        payload=dict(command.payload),
        deadline_s=round(max(0.0, _remaining_s(command, now)), 1),
    )


async def next_command(
    db: Any,
    register_id: int,
    wait_s: float,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timing: AgentTiming = AgentTiming(),
    gone: Callable[[], bool] | None = None,
) -> AgentCommandOut | None:
    """Long poll: the next command for the register, waiting up to ``wait_s`` (capped at ``MAX_WAIT_S``)
    for one. Each look is its own short transaction. ``gone()`` true (the agent hung up) ends the wait without
    taking a command, so no command is handed to a connection nobody reads."""
    wait_s = min(max(0.0, float(wait_s)), MAX_WAIT_S)
    end = clock.monotonic() + wait_s
    while True:
        if gone is not None and gone():
            return None
        if await _anything_to_do(db, register_id, clock.now(), timing):
            async with db.session() as s:
                command = await claim_next(s, register_id, clock=clock, timing=timing)
            if command is not None:
                return command
        remaining = end - clock.monotonic()
        if remaining <= 0:
            return None
        await NOTIFIER.wait(_register_key(register_id), min(timing.poll_interval_s, remaining))


async def _anything_to_do(db: Any, register_id: int, now, timing: AgentTiming) -> bool:
    """A read-only look first, so an idle long poll never takes SQLite's write lock."""
    async with db.reader() as s:
        rows = (
            await s.execute(
                select(
                    AgentCommand.status, AgentCommand.created_at, AgentCommand.deadline_s, AgentCommand.delivered_at
                ).where(
                    AgentCommand.register_id == register_id,
                    AgentCommand.status.in_((QUEUED, DELIVERED)),
                    AgentCommand.result.is_(None),
                )
            )
        ).all()
    for row in rows:
        if row.status == QUEUED:
            return True
        remaining = row.deadline_s - (now - row.created_at).total_seconds()
        if (
            remaining < -timing.result_grace_s
            or row.delivered_at is None
            or (now - row.delivered_at).total_seconds() >= timing.redeliver_after_s
        ):
            return True
    return False


async def _command_of(s: AsyncSession, register_id: int, command_id: int) -> AgentCommand:
    if not 0 < command_id < 2**31:
        raise NotFound("El comando no existe para esta caja.", code="agent.command_not_found")
    command = (
        await s.execute(select(AgentCommand).where(AgentCommand.id == command_id).with_for_update())
    ).scalar_one_or_none()
    if command is None or command.register_id != register_id:
        # Another register's command is "not found" too: a token never learns about other registers.
        raise NotFound("El comando no existe para esta caja.", code="agent.command_not_found")
    return command


async def post_progress(s: AsyncSession, register_id: int, command_id: int, *, message: str, code: int | None) -> str:
    """Store an intermediate message for the waiting provider. ``"stored"``, or ``"ignored"`` once the command
    has its result or expired (progress is never a result)."""
    message = (message or "").strip()
    if not message:
        raise ValidationFailed("El mensaje intermedio está vacío.", code="agent.progress_empty", field="message")
    command = await _command_of(s, register_id, command_id)
    if command.status not in (QUEUED, DELIVERED):
        return "ignored"
    seq, entries = _load_progress(command.progress_message)
    seq += 1
    entries.append([seq, code, message[:_PROGRESS_TEXT_CHARS]])
    command.progress_message = _dump_progress(seq, entries)
    s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
    return "stored"


async def post_result(
    s: AsyncSession, register_id: int, command_id: int, result: dict[str, Any], *, clock: Clock = SYSTEM_CLOCK
) -> str:
    """Store the command's result. Idempotent: the same result again is ``"duplicate"`` (a no-op); a different
    one for a command that already has its result is a Conflict. A result after the command expired is kept
    (``"late"``) — the waiting side already gave up and the payment was reconciled with the terminal."""
    if not isinstance(result, dict) or not result:
        raise ValidationFailed(
            "El resultado debe ser un objeto JSON no vacío.", code="agent.result_invalid", field="result"
        )
    clean = scrub_card_data(result)
    command = await _command_of(s, register_id, command_id)
    if command.result is not None:
        if command.result == clean:
            return "duplicate"
        raise Conflict(
            "Este comando ya tiene otro resultado registrado; se conserva el primero.", code="agent.result_conflict"
        )
    command.result, command.result_at = clean, clock.now()
    if command.status == EXPIRED:
        log.warning("agent command %s: result arrived after its deadline (kept for the record)", command_id)
        return "late"
    command.status = DONE
    s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
    return "stored"


async def heartbeat(s: AsyncSession, register_id: int, *, terminal: str, detail: str = "") -> None:
    """The agent is alive; ``terminal`` says whether it reaches the terminal (shown in /health and the admin)."""
    from ..registers.service import record_agent_heartbeat

    if terminal not in TERMINAL_STATUSES:
        raise ValidationFailed(
            "El estado del terminal debe ser «ok» o «unreachable».",
            code="agent.terminal_status_invalid",
            field="terminal",
        )
    await record_agent_heartbeat(
        s, register_id=register_id, status={"terminal": terminal, "detail": (detail or "")[:MAX_DETAIL_CHARS]}
    )


def notify_committed(s: AsyncSession) -> None:
    """After the session committed: wake this instance's waiters of what it changed."""
    for key in s.info.pop("agent_notify", set()):
        NOTIFIER.notify(key)


# --- the provider side ------------------------------------------------------------------------------------


class DbAgentChannel:
    """``AgentChannel`` through the database: ``exchange()`` queues the command for the register's agent and
    waits for its result. Raises ``AgentNotReached`` (not sent) when no agent took it within the pick-up time,
    ``AgentNoAnswer`` (in doubt) when the result did not come back by the deadline."""

    def __init__(
        self,
        db: Any,
        register_id: int,
        venue_id: int,
        clock: Clock = SYSTEM_CLOCK,
        *,
        timing: AgentTiming = AgentTiming(),
    ) -> None:
        self.db = db
        self.register_id = register_id
        self.venue_id = venue_id
        self.clock = clock
        self.timing = timing

    async def exchange(
        self, command: dict[str, Any], *, deadline_s: float, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        command_id = await self._queue(command, deadline_s)
        NOTIFIER.notify(_register_key(self.register_id))
        start = self.clock.monotonic()
        pickup_by = start + min(self.timing.pickup_timeout_s, deadline_s)
        give_up_at = start + deadline_s + self.timing.result_grace_s
        seen = 0
        try:
            while True:
                status, raw_progress, result, delivered_at = await self._read(command_id)
                seen = await self._emit(raw_progress, seen, progress)
                if result is not None:
                    return dict(result)
                now = self.clock.monotonic()
                if status == QUEUED and now >= pickup_by:
                    if await self._expire(command_id, QUEUED):
                        raise AgentNotReached(NOT_REACHED)
                    continue
                if status == EXPIRED and delivered_at is None:
                    raise AgentNotReached(NOT_REACHED)
                if status == EXPIRED or now >= give_up_at:
                    await self._expire(command_id, DELIVERED)
                    result = (await self._read(command_id))[2]
                    if result is not None:
                        return dict(result)
                    raise AgentNoAnswer("El agente no devolvió el resultado a tiempo.")
                wait = min(
                    self.timing.poll_interval_s, max(0.01, (pickup_by if status == QUEUED else give_up_at) - now)
                )
                await NOTIFIER.wait(_command_key(command_id), wait)
        except asyncio.CancelledError:
            # The caller gave up (cashier cancelled, max wait): a command nobody took must never run later.
            try:
                await self._expire(command_id, QUEUED)
            except Exception:
                log.warning("could not expire agent command %s", command_id, exc_info=True)
            raise

    async def _queue(self, command: dict[str, Any], deadline_s: float) -> int:
        async with self.db.session() as s:
            await prune(s, self.register_id, before=self.clock.now() - timedelta(days=self.timing.retention_days))
            attempt_id = None
            ticket = command.get("TicketNumber")
            if ticket and int(command.get("Command", 0) or 0) == 100:
                attempt_id = (
                    await s.execute(
                        select(PaymentAttempt.id)
                        .where(PaymentAttempt.register_id == self.register_id, PaymentAttempt.ticket == str(ticket))
                        .order_by(PaymentAttempt.id.desc())
                        .limit(1)
                    )
                ).scalar_one_or_none()
            row = AgentCommand(
                venue_id=self.venue_id,
                register_id=self.register_id,
                attempt_id=attempt_id,
                payload=dict(command),
                deadline_s=max(1, round(deadline_s)),
                status=QUEUED,
                created_at=self.clock.now(),
            )
            s.add(row)
            await s.flush()
            return row.id

    async def _read(self, command_id: int) -> tuple[str, str, dict[str, Any] | None, Any]:
        async with self.db.reader() as s:
            row = (
                await s.execute(
                    select(
                        AgentCommand.status,
                        AgentCommand.progress_message,
                        AgentCommand.result,
                        AgentCommand.delivered_at,
                    ).where(AgentCommand.id == command_id)
                )
            ).one()
        return row.status, row.progress_message, row.result, row.delivered_at

    async def _expire(self, command_id: int, from_status: str) -> bool:
        async with self.db.session() as s:
            done = await s.execute(
                update(AgentCommand)
                .where(AgentCommand.id == command_id, AgentCommand.status == from_status)
                .values(status=EXPIRED)
            )
            return rowcount(done) == 1

    @staticmethod
    async def _emit(raw: str, seen: int, progress: Callable[[Progress], Awaitable[None]] | None) -> int:
        seq, entries = _load_progress(raw)
        if seq <= seen:
            return seen
        for entry_seq, code, text in entries:
            if entry_seq > seen and progress is not None:
                await progress(Progress(message=str(text), code=code if isinstance(code, int) else None))
        return seq


async def prune(s: AsyncSession, register_id: int, *, before: datetime) -> int:
    """Delete the register's finished (done/expired) commands created before ``before``."""
    done = await s.execute(
        delete(AgentCommand).where(
            AgentCommand.register_id == register_id,
            AgentCommand.status.in_((DONE, EXPIRED)),
            AgentCommand.created_at < before,
        )
    )
    return rowcount(done)


def uses_agent(provider_settings: dict[str, Any] | None) -> bool:
    """A register whose settings for some provider say ``connection: agent``."""
    return any(isinstance(v, dict) and v.get("connection") == "agent" for v in (provider_settings or {}).values())


def channel_factory(
    db: Any, *, clock: Clock = SYSTEM_CLOCK, timing: AgentTiming = AgentTiming()
) -> Callable[[Any], DbAgentChannel | None]:
    """For ``PaymentOrchestrator(agent_channel_factory=...)``: a channel for registers that use an agent."""

    def make(register: Any) -> DbAgentChannel | None:
        if not uses_agent(getattr(register, "provider_settings", None)):
            return None
        return DbAgentChannel(db, register.id, register.venue_id, clock, timing=timing)

    return make


__all__ = [
    "MAX_WAIT_S",
    "NOTIFIER",
    "TERMINAL_STATUSES",
    "AgentCommandOut",
    "AgentNoAnswer",
    "AgentNotReached",
    "AgentTiming",
    "DbAgentChannel",
    "channel_factory",
    "claim_next",
    "heartbeat",
    "next_command",
    "notify_committed",
    "post_progress",
    "post_result",
    "prune",
    "scrub_card_data",
    "uses_agent",
]
