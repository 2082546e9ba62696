"""Commands for register-PC agents, kept in the ``agent_commands`` table, and how they are fenced.

The provider side (``DbAgentChannel.exchange``) writes a command and waits for its result; the agent side (the
web API that ``caja agent`` long-polls) hands the oldest queued command out, lets the agent claim it, stores the
intermediate messages and the result. Both sides only meet in the database, so the app instance that runs the
sale and the one the agent happens to reach may differ. Within one instance a small notifier wakes the waiting
side at once; across instances the waiting side re-reads the row every ``poll_interval_s``.

Life of a command::

    queued ──deliver──▶ delivered ──claim──▶ claimed ──result──▶ done
      │  ▲───redeliver───┘   │                  │
      └──────────────────────┴──▶ expired / revoked (never started: never will be)
                                                └──▶ expired (started, no result in time: a later result is applied)

* **Fencing.** Every delivery bumps the command's ``fence`` and carries ``expires_in_s``: the time left to
  *start* it (``start_by``, at most ``start_window_s`` after it was queued). The agent measures that on its own
  monotonic clock from the moment it received the command, and right before it touches the terminal it
  **claims** the command with the fence it got. The claim is one conditional UPDATE: it succeeds only if the
  command is still ``delivered``, the fence is the latest one and ``start_by`` has not passed. An expired or
  revoked command can never be claimed, so it never reaches the terminal.
* **Not started means not sent.** A command nobody took in ``pickup_timeout_s``, or that was delivered but not
  claimed by ``start_by``, is expired by the waiting side in the same conditional way; if that succeeds the
  terminal provably never saw it (the provider maps it to *unavailable*). When the waiting side gives up on an
  attempt (the cashier cancelled, the policy's max wait), it revokes its commands that were not started;
  ``revoke_attempt_commands`` does the same for the core and says whether a started command is still
  unaccounted for (then nobody may conclude "not charged").
* **Every result counts.** A result is stored whenever it comes. One that arrives after the waiting side gave
  up (``late``) is interpreted by the provider (``outcome_from_agent_result``) and applied to its attempt
  through the payment orchestrator, however late.
* A delivered command that is not claimed is handed out again after ``redeliver_after_s`` (with a new fence):
  an agent whose long-poll answer was lost gets another chance while ``start_by`` allows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import open_incident
from ..carddata import scrub, scrub_text
from ..clock import SYSTEM_CLOCK, Clock
from ..db.engine import rowcount
from ..errors import Conflict, NotFound, ValidationFailed
from ..payments.models import AgentCommand, PaymentAttempt, PaymentDevice
from ..providers import Progress, ProgressCallback

log = logging.getLogger("caja.agents")

QUEUED, DELIVERED, CLAIMED, DONE = "queued", "delivered", "claimed", "done"
EXPIRED, REVOKED = "expired", "revoked"
#: States in which a command will never be started again.
NEVER_STARTED_AGAIN = (CLAIMED, DONE, EXPIRED, REVOKED)
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
    start_window_s: float = 30.0  # a command not started (claimed) this long after it was queued never will be
    result_grace_s: float = 15.0  # beyond the command's own deadline, counted from its start: network, restart
    poll_interval_s: float = 0.5  # re-read of the row when the other side may be another instance
    redeliver_after_s: float = 15.0  # a delivered, unclaimed command is handed out again after this
    min_remaining_s: float = 1.0  # a command with less time than this left to start is not handed out
    retention_days: float = 30.0  # finished commands older than this are deleted (the attempt keeps the outcome)
    instance_lease_s: float = 10.0  # the agent process serving a register keeps it while it asked this recently


DEFAULT_TIMING = AgentTiming()


class AgentCommandOut(msgspec.Struct, kw_only=True):
    """What ``GET /api/agent/v1/commands/next`` returns. ``deadline_s``: how long the terminal has to answer
    once the command is started; ``expires_in_s``: how long the agent has to start (claim) it, counted on its own
    clock from when it received this; ``fence``: the token the claim must present."""

    command_id: int
    attempt_id: int | None
    payload: dict[str, Any]
    deadline_s: float
    fence: int
    expires_in_s: float


NOT_REACHED = "El agente de la caja no tomó el comando: ¿está encendido y conectado el PC de la caja?"
NOT_STARTED = "El agente de la caja recibió el comando pero no lo inició a tiempo: ya no se ejecutará."

#: Why a claim is refused (``claim`` returns one of these, or ``"claimed"``).
CLAIM_REFUSALS = {
    "revoked": "El servidor revocó este comando: no se ejecuta.",
    "expired": "El comando venció antes de iniciarse: no se ejecuta.",
    "stale": "Esta entrega del comando fue reemplazada por una más nueva: use la última.",
    "taken": "El comando ya fue iniciado o terminado.",
}


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

    async def wait(self, key: Hashable, seconds: float) -> bool:
        """True when notified within ``seconds``."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, seconds))
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


def scrub_card_data(value: Any) -> Any:
    """The agent masks the terminal's answer already; this drops card fields a faulty agent might still send
    (``caja_core.carddata``: track data dropped, card numbers masked, in keys and in text)."""
    return scrub(value)


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


# --- one agent process per register ------------------------------------------------------------------------

#: The header with which each ``caja agent`` process names itself: a random id drawn when it starts.
INSTANCE_HEADER = "X-Caja-Agent-Instance"
#: An agent that sends no instance id (an older one) is this instance.
ANONYMOUS_INSTANCE = "sin-id"
#: How long after a refused agent was last seen ``/health`` still says there are two.
TWO_AGENTS_WINDOW_S = 120.0


def two_agents_text(code: str) -> str:
    return (
        f"Dos agentes en la caja {code}: dos procesos «caja agent» usan el token de esta caja. Solo uno recibe "
        f"comandos; detenga el que sobra (¿un PC reemplazado que sigue encendido, un segundo agente con otro "
        f"terminal?) o rote el token de la caja."
    )


#: Per register, the holder's last renewal as this process last read it, and when (its monotonic clock) it
#: first read that one.
_renewals: dict[tuple[int, int], tuple[tuple[str | None, datetime | None], float]] = {}


async def take_turn(
    db: Any,
    register_id: int,
    instance: str | None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timing: AgentTiming = DEFAULT_TIMING,
) -> None:
    """Only one agent process serves a register: the first to ask holds it while it keeps asking (every long
    poll, claim and heartbeat renews it) and for ``instance_lease_s`` after its last request; any other gets a
    ``Conflict`` (409 ``agent.other_instance``) and nothing: no command, no claim, no heartbeat. When the holder
    stops asking (``kill -9``, power cut), the next one takes the register over once the lease has run out.

    A refused process whose holder still asks after it was refused means two live agents on one token: that is
    noted on the register (``agent_rival``: ``/health`` warns) and opens one incident."""
    from ..registers.models import CashRegister

    instance = (instance or "").strip()[:64] or ANONYMOUS_INSTANCE
    now = clock.now()
    lease = timedelta(seconds=timing.instance_lease_s)
    async with db.reader() as s:
        holder, seen_at = (
            await s.execute(
                select(CashRegister.agent_instance, CashRegister.agent_instance_seen_at).where(
                    CashRegister.id == register_id
                )
            )
        ).one()
    if holder == instance and seen_at is not None and timedelta(0) <= now - seen_at < lease / 5:
        return  # renewed a moment ago: no write
    # The holder is silent when its last renewal has not changed for the lease on this process's monotonic
    # clock: a step of the wall clock (or another instance's clock) neither ends a live holder's turn nor
    # holds a dead one's.
    mark, since_mono = _renewals.get((id(db), register_id), (None, None))
    if mark != (holder, seen_at) or since_mono is None:
        since_mono = clock.monotonic()
        _renewals[(id(db), register_id)] = ((holder, seen_at), since_mono)
    free = [
        CashRegister.agent_instance.is_(None),
        CashRegister.agent_instance == instance,
        CashRegister.agent_instance_seen_at.is_(None),
    ]
    if clock.monotonic() - since_mono >= timing.instance_lease_s and holder is not None and seen_at is not None:
        free.append(and_(CashRegister.agent_instance == holder, CashRegister.agent_instance_seen_at == seen_at))
    async with db.session() as s:
        taken = await s.execute(
            update(CashRegister)
            .where(CashRegister.id == register_id, or_(*free))
            .values(agent_instance=instance, agent_instance_seen_at=now)
        )
        if rowcount(taken) == 1:
            _renewals[(id(db), register_id)] = ((instance, now), clock.monotonic())
            if holder != instance:
                # Another process may have another device behind it (a spare on the USB port): what caja knew
                # of the device is no longer known, so its next charge asks it who it is first.
                await _forget_agent_devices(s, register_id)
            if holder not in (None, instance):
                log.warning(
                    "register %s: agent %s takes over from %s (silent for the lease)", register_id, instance, holder
                )
            return
        register = await s.get(CashRegister, register_id, populate_existing=True)
        assert register is not None
        rival = dict(register.agent_rival or {})
        last = _parse_time(rival.get("seen_at"))
        if rival.get("instance") != instance or last is None or (now - last) > 2 * lease:
            rival = {"instance": instance, "since": now.isoformat()}
        rival["seen_at"] = now.isoformat()
        since = _parse_time(rival["since"]) or now
        alive = register.agent_instance_seen_at is not None and register.agent_instance_seen_at > since
        code, venue_id = register.code, register.venue_id
        opened = False
        if alive:
            rival["both_alive_at"] = now.isoformat()
            if not rival.get("reported"):
                rival["reported"] = opened = True
                await open_incident(
                    s,
                    venue_id=venue_id,
                    kind="agent_two_instances",
                    description=two_agents_text(code),
                    register_id=register_id,
                )
        register.agent_rival = rival
    if opened:
        log.error("register %s: two agents serve it (%s holds it, %s refused)", code, register.agent_instance, instance)
    raise Conflict(
        f"Otro agente atiende la caja {code}: este agente no recibe comandos mientras el otro siga conectado "
        f"(si el otro se detuvo, este lo reemplaza en {timing.instance_lease_s:.0f} s). ¿Hay dos agentes con el "
        f"token de esta caja?",
        code="agent.other_instance",
    )


async def next_for_agent(
    db: Any,
    register_id: int,
    instance: str | None,
    wait_s: float,
    *,
    timing: AgentTiming = DEFAULT_TIMING,
    gone: Callable[[], bool] | None = None,
) -> AgentCommandOut | None:
    """``GET /commands/next``: the register's next command for the agent process that serves it
    (``take_turn``, else ``Conflict``), waiting up to ``wait_s``."""
    await take_turn(db, register_id, instance, timing=timing)
    return await next_command(db, register_id, wait_s, timing=timing, gone=gone)


async def claim_for_agent(
    db: Any,
    register_id: int,
    instance: str | None,
    command_id: int,
    fence: int,
    *,
    timing: AgentTiming = DEFAULT_TIMING,
) -> str:
    """``POST /commands/{id}/claim``: ``claim`` for the agent process that serves the register only (another one
    gets ``Conflict``: it never runs the command)."""
    await take_turn(db, register_id, instance, timing=timing)
    async with db.session() as s:
        status = await claim(s, register_id, command_id, fence, timing=timing)
    notify_committed(s)
    return status


async def heartbeat_of_agent(
    db: Any,
    register_id: int,
    instance: str | None,
    *,
    terminal: str,
    detail: str = "",
    timing: AgentTiming = DEFAULT_TIMING,
) -> None:
    """``POST /heartbeat``: recorded for the agent process that serves the register only."""
    await take_turn(db, register_id, instance, timing=timing)
    async with db.session() as s:
        await heartbeat(s, register_id, terminal=terminal, detail=detail)


async def _forget_agent_devices(s: AsyncSession, register_id: int) -> None:
    """Forget who the devices this register reached through its agent said they were (their key is the
    register's, not the device's): attempts already sent keep the identity they were stamped with."""
    latest = (
        select(func.max(PaymentAttempt.id))
        .where(PaymentAttempt.register_id == register_id)
        .group_by(PaymentAttempt.device_key)
    )
    rows = (
        await s.execute(
            select(PaymentAttempt.device_key, PaymentAttempt.device_settings).where(PaymentAttempt.id.in_(latest))
        )
    ).all()
    keys = [key for key, settings in rows if uses_agent({"": settings or {}})]
    if keys:
        await s.execute(
            update(PaymentDevice).where(PaymentDevice.device_key.in_(keys)).values(identity=None, identified_at=None)
        )


def _parse_time(raw: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


# --- the server side (what the agent API calls) -----------------------------------------------------------


def _start_by(command: AgentCommand, timing: AgentTiming) -> datetime:
    if command.start_by is not None:
        return command.start_by
    return command.created_at + timedelta(seconds=min(float(command.deadline_s), timing.start_window_s))


async def _expire_overdue(s: AsyncSession, register_id: int, now: datetime, timing: AgentTiming) -> None:
    """Commands that can no longer be started, or whose started run is long overdue, become ``expired``."""
    rows = (
        await s.execute(
            select(AgentCommand).where(
                AgentCommand.register_id == register_id, AgentCommand.status.in_((QUEUED, DELIVERED, CLAIMED))
            )
        )
    ).scalars()
    for command in list(rows):
        if command.status == CLAIMED:
            started = command.claimed_at or command.created_at
            overdue = now >= started + timedelta(seconds=command.deadline_s + timing.result_grace_s)
        else:
            overdue = (_start_by(command, timing) - now).total_seconds() < timing.min_remaining_s
        if overdue:
            await s.execute(
                update(AgentCommand)
                .where(AgentCommand.id == command.id, AgentCommand.status == command.status)
                .values(status=EXPIRED)
            )


async def claim_next(
    s: AsyncSession, register_id: int, *, clock: Clock = SYSTEM_CLOCK, timing: AgentTiming = DEFAULT_TIMING
) -> AgentCommandOut | None:
    """Mark the register's oldest queued command delivered and return it with a new fence (or a delivered,
    unclaimed command after ``redeliver_after_s``). One short transaction; never waits."""
    now = clock.now()
    await _expire_overdue(s, register_id, now, timing)
    candidates = (
        await s.execute(
            select(AgentCommand)
            .where(AgentCommand.register_id == register_id, AgentCommand.status.in_((QUEUED, DELIVERED)))
            .order_by(AgentCommand.id)
        )
    ).scalars()
    for command in list(candidates):
        if command.status == DELIVERED and (
            command.delivered_at is None or (now - command.delivered_at).total_seconds() < timing.redeliver_after_s
        ):
            continue
        if (_start_by(command, timing) - now).total_seconds() < timing.min_remaining_s:
            continue
        was, fence = command.status, command.fence
        taken = await s.execute(
            update(AgentCommand)
            .where(AgentCommand.id == command.id, AgentCommand.status == was, AgentCommand.fence == fence)
            .values(status=DELIVERED, delivered_at=now, fence=fence + 1)
        )
        if rowcount(taken) == 1:
            if was == DELIVERED:
                log.info("agent command %s handed out again (not started since its delivery)", command.id)
            return _out(command, fence + 1, now, timing)
    return None


def _out(command: AgentCommand, fence: int, now: datetime, timing: AgentTiming) -> AgentCommandOut:
    return AgentCommandOut(
        command_id=command.id,
        attempt_id=command.attempt_id,
        payload=dict(command.payload),
        deadline_s=float(command.deadline_s),
        fence=fence,
        expires_in_s=round(max(0.0, (_start_by(command, timing) - now).total_seconds()), 1),
    )


async def next_command(
    db: Any,
    register_id: int,
    wait_s: float,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timing: AgentTiming = DEFAULT_TIMING,
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


async def _anything_to_do(db: Any, register_id: int, now: datetime, timing: AgentTiming) -> bool:
    """A read-only look first, so an idle long poll never takes SQLite's write lock."""
    async with db.reader() as s:
        rows = (
            await s.execute(
                select(AgentCommand).where(
                    AgentCommand.register_id == register_id,
                    AgentCommand.status.in_((QUEUED, DELIVERED, CLAIMED)),
                    AgentCommand.result.is_(None),
                )
            )
        ).scalars()
        commands = list(rows)
    for command in commands:
        if command.status == QUEUED:
            return True
        if command.status == CLAIMED:
            started = command.claimed_at or command.created_at
            if now >= started + timedelta(seconds=command.deadline_s + timing.result_grace_s):
                return True
            continue
        to_start = (_start_by(command, timing) - now).total_seconds()
        if to_start < timing.min_remaining_s or (
            command.delivered_at is None or (now - command.delivered_at).total_seconds() >= timing.redeliver_after_s
        ):
            return True
    return False


async def claim(
    s: AsyncSession,
    register_id: int,
    command_id: int,
    fence: int,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timing: AgentTiming = DEFAULT_TIMING,
) -> str:
    """The agent is about to touch the terminal with this command: ``"claimed"`` if it may, else why not
    (``"revoked"``, ``"expired"``, ``"stale"`` — an older delivery —, ``"taken"``). Atomic: of a claim and a
    revoke (or an expiry) exactly one wins. A repeated claim with the same fence is ``"claimed"`` again (the
    agent may not have received the first answer)."""
    command = await _command_of(s, register_id, command_id)
    now = clock.now()
    if command.status == CLAIMED and command.fence == fence and command.result is None:
        return "claimed"
    if command.status in (REVOKED, EXPIRED):
        return command.status
    if command.status != DELIVERED:
        return "taken"
    if command.fence != fence:
        return "stale"
    if now >= _start_by(command, timing):
        await s.execute(
            update(AgentCommand)
            .where(AgentCommand.id == command_id, AgentCommand.status == DELIVERED)
            .values(status=EXPIRED)
        )
        s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
        return "expired"
    done = await s.execute(
        update(AgentCommand)
        .where(AgentCommand.id == command_id, AgentCommand.status == DELIVERED, AgentCommand.fence == fence)
        .values(status=CLAIMED, claimed_at=now)
    )
    if rowcount(done) != 1:
        return "taken"
    s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
    return "claimed"


async def revoke_attempt_commands(s: AsyncSession, attempt_id: int) -> bool:
    """The server gives the attempt up: every command of it that was not started is revoked (it will never
    reach the terminal). Returns False when a started command of the attempt has no result yet — its run is
    unaccounted for, so the attempt must not be declared not charged (keep it in doubt and reconcile later)."""
    revoked = await s.execute(
        update(AgentCommand)
        .where(AgentCommand.attempt_id == attempt_id, AgentCommand.status.in_((QUEUED, DELIVERED)))
        .values(status=REVOKED)
        .returning(AgentCommand.id)
    )
    for command_id in revoked.scalars():
        s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
        log.info("agent command %s revoked (attempt %s given up)", command_id, attempt_id)
    running = (
        await s.execute(
            select(AgentCommand.id).where(
                AgentCommand.attempt_id == attempt_id,
                AgentCommand.claimed_at.is_not(None),
                AgentCommand.result.is_(None),
            )
        )
    ).first()
    return running is None


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
    if command.status not in (QUEUED, DELIVERED, CLAIMED):
        return "ignored"
    seq, entries = _load_progress(command.progress_message)
    seq += 1
    entries.append([seq, code, scrub_text(message)[:_PROGRESS_TEXT_CHARS]])
    command.progress_message = _dump_progress(seq, entries)
    s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
    return "stored"


async def post_result(
    s: AsyncSession, register_id: int, command_id: int, result: dict[str, Any], *, clock: Clock = SYSTEM_CLOCK
) -> str:
    """Store the command's result. Idempotent: the same result again is ``"duplicate"`` (a no-op); a different
    one for a command that already has its result is a Conflict. A result after the waiting side gave up
    (the command expired or was revoked) is kept and returned as ``"late"``: ``receive_result`` then applies it
    to its attempt — unless the command was never claimed: then only the agent's own ``AgentError`` is kept, and
    a terminal answer is a Conflict (the terminal never saw that command)."""
    if not isinstance(result, dict) or not result:
        raise ValidationFailed(
            "El resultado debe ser un objeto JSON no vacío.", code="agent.result_invalid", field="result"
        )
    clean = scrub_card_data(result)
    command = await _command_of(s, register_id, command_id)
    if command.status in (EXPIRED, REVOKED) and command.claimed_at is None and "AgentError" not in clean:
        # Never claimed, so the fence kept it off the terminal and its attempt was settled "not sent" on that
        # proof: a terminal answer for it (replayed, forged, or from an agent that skipped the claim) is refused.
        raise Conflict(
            "Ese comando nunca se inició (el agente no lo reclamó a tiempo): el terminal no pudo responderlo; "
            "el resultado no se aplica.",
            code="agent.result_not_started",
        )
    if command.result is not None:
        if command.result == clean:
            return "duplicate"
        raise Conflict(
            "Este comando ya tiene otro resultado registrado; se conserva el primero.", code="agent.result_conflict"
        )
    command.result, command.result_at = clean, clock.now()
    if command.status in (EXPIRED, REVOKED):
        log.warning(
            "agent command %s: result arrived after the server gave up waiting (%s)", command_id, command.status
        )
        return "late"
    command.status = DONE
    s.info.setdefault("agent_notify", set()).add(_command_key(command_id))
    return "stored"


async def receive_result(
    db: Any,
    register_id: int,
    command_id: int,
    result: dict[str, Any],
    *,
    orchestrator: Any = None,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """What ``POST /commands/{id}/result`` does: store the result (``post_result``), wake whoever waits for it,
    and — when nobody does any more — apply it to its attempt (``apply_late_results``) before answering, so an
    agent that gets no answer posts again and the application is retried."""
    async with db.session() as s:
        status = await post_result(s, register_id, command_id, result, clock=clock)
    notify_committed(s)
    if status in ("late", "duplicate") and orchestrator is not None:
        await apply_late_results(db, orchestrator, register_id=register_id, clock=clock)
    return status


async def apply_late_results(
    db: Any, orchestrator: Any, *, register_id: int | None = None, clock: Clock = SYSTEM_CLOCK
) -> int:
    """Results that arrived after the waiting side gave up, not applied yet: each is interpreted by its
    attempt's provider (``outcome_from_agent_result``) and handed to the payment orchestrator. Returns how many
    outcomes were applied. Each result is applied once (``applied_at`` is taken before applying, and released
    if applying fails, so the next call retries)."""
    from ..providers import validate_settings
    from ..registers.models import CashRegister

    where: list[ColumnElement[bool]] = [
        AgentCommand.status.in_((EXPIRED, REVOKED)),
        AgentCommand.result.is_not(None),
        AgentCommand.attempt_id.is_not(None),
        AgentCommand.applied_at.is_(None),
    ]
    if register_id is not None:
        where.append(AgentCommand.register_id == register_id)
    async with db.reader() as s:
        pending = list((await s.execute(select(AgentCommand).where(*where).order_by(AgentCommand.id))).scalars())
    applied = 0
    for command in pending:
        async with db.session() as s:
            taken = await s.execute(
                update(AgentCommand)
                .where(AgentCommand.id == command.id, AgentCommand.applied_at.is_(None))
                .values(applied_at=clock.now())
            )
            if rowcount(taken) != 1:
                continue
            attempt = await s.get(PaymentAttempt, command.attempt_id)
            register = await s.get(CashRegister, command.register_id)
        if attempt is None:
            continue
        outcome = None
        try:
            provider = orchestrator.registry.get(attempt.provider_id)
            interpret = getattr(provider, "outcome_from_agent_result", None)
            if interpret is not None:
                settings = None
                try:
                    raw = (register.provider_settings or {}).get(provider.id) if register is not None else None
                    settings = validate_settings(provider, raw)
                except Exception:  # noqa: BLE001 - the settings changed since: the provider reads the result alone
                    log.warning("agent command %s: register settings unreadable; interpreted without", command.id)
                outcome = interpret(dict(command.payload), dict(command.result or {}), settings)
            if outcome is not None:
                log.warning(
                    "agent command %s: late result applied to attempt %s (%s)", command.id, attempt.id, outcome.kind
                )
                await _apply_outcome(orchestrator, attempt.id, outcome)
                applied += 1
        except Exception:
            log.exception("agent command %s: could not apply its late result; will retry", command.id)
            async with db.session() as s:
                await s.execute(update(AgentCommand).where(AgentCommand.id == command.id).values(applied_at=None))
            raise
    return applied


async def _apply_outcome(orchestrator: Any, attempt_id: int, outcome: Any) -> Any:
    """The agent's late answer goes to the payment orchestrator like any other provider answer."""
    return await orchestrator.apply_outcome(attempt_id, outcome, source="agent")


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
        s, register_id=register_id, status={"terminal": terminal, "detail": scrub_text(detail or "")[:MAX_DETAIL_CHARS]}
    )


def notify_committed(s: AsyncSession) -> None:
    """After the session committed: wake this instance's waiters of what it changed."""
    for key in s.info.pop("agent_notify", set()):
        NOTIFIER.notify(key)


# --- the provider side ------------------------------------------------------------------------------------


class DbAgentChannel:
    """``AgentChannel`` through the database: ``exchange()`` queues the command for the register's agent and
    waits for its result.

    Raises ``AgentNotReached`` (not sent: the terminal never saw it) when no agent took the command within the
    pick-up time or none started it by its ``start_by`` — in both cases the command was expired atomically, so
    it can never be started later — and ``AgentNoAnswer`` (in doubt, never declined) when the agent started it
    and no result came back by its deadline (counted from the start) plus the grace."""

    def __init__(
        self,
        db: Any,
        register_id: int,
        venue_id: int,
        clock: Clock = SYSTEM_CLOCK,
        *,
        timing: AgentTiming = DEFAULT_TIMING,
    ) -> None:
        self.db = db
        self.register_id = register_id
        self.venue_id = venue_id
        self.clock = clock
        self.timing = timing

    async def exchange(
        self, command: dict[str, Any], *, deadline_s: float, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        command_id, deadline = await self._queue(command, deadline_s)
        NOTIFIER.notify(_register_key(self.register_id))
        start = self.clock.monotonic()
        pickup_by = start + min(self.timing.pickup_timeout_s, deadline)
        start_by = start + min(self.timing.start_window_s, deadline)
        give_up_at: float | None = None  # once started: its deadline plus the grace
        seen = 0
        try:
            while True:
                status, raw_progress, result, claimed_at = await self._read(command_id)
                seen = await self._emit(raw_progress, seen, progress)
                if result is not None:
                    return dict(result)
                now = self.clock.monotonic()
                if status == QUEUED:
                    until = pickup_by
                    if now >= pickup_by:
                        if await self._expire(command_id, (QUEUED,)):
                            raise AgentNotReached(NOT_REACHED)
                        continue
                elif status == DELIVERED:
                    until = start_by
                    if now >= start_by:
                        if await self._expire(command_id, (DELIVERED,)):
                            raise AgentNotReached(NOT_STARTED)
                        continue
                elif status == CLAIMED:
                    if give_up_at is None:
                        give_up_at = now + deadline + self.timing.result_grace_s
                    until = give_up_at
                    if now >= give_up_at:
                        await self._expire(command_id, (CLAIMED,))
                        continue
                else:  # expired or revoked without a result (done always has one)
                    if claimed_at is None:
                        raise AgentNotReached(NOT_REACHED if status == EXPIRED else NOT_STARTED)
                    raise AgentNoAnswer("El agente inició el comando pero no devolvió el resultado a tiempo.")
                wait = min(self.timing.poll_interval_s, max(0.01, until - now))
                await NOTIFIER.wait(_command_key(command_id), wait)
        except asyncio.CancelledError:
            # The caller gave up (cashier cancelled, max wait): a command not started must never run later, and
            # the result of one already started will find nobody waiting, so it is applied when it comes.
            try:
                if not await self._expire(command_id, (QUEUED, DELIVERED), to=REVOKED):
                    await self._expire(command_id, (CLAIMED,))
            except Exception:
                log.warning("could not revoke agent command %s", command_id, exc_info=True)
            raise

    async def revoke_attempt(self, attempt_id: int) -> bool:
        """``revoke_attempt_commands`` for the provider: True when no started command of the attempt is
        unaccounted for (its not-started commands are revoked on the way)."""
        async with self.db.session() as s:
            clear = await revoke_attempt_commands(s, attempt_id)
        notify_committed(s)
        return clear

    async def _queue(self, command: dict[str, Any], deadline_s: float) -> tuple[int, int]:
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
            now = self.clock.now()
            deadline = max(1, round(deadline_s))
            row = AgentCommand(
                venue_id=self.venue_id,
                register_id=self.register_id,
                attempt_id=attempt_id,
                payload=dict(command),
                deadline_s=deadline,
                status=QUEUED,
                created_at=now,
                start_by=now + timedelta(seconds=min(float(deadline), self.timing.start_window_s)),
                fence=0,
            )
            s.add(row)
            await s.flush()
            return row.id, deadline

    async def _read(self, command_id: int) -> tuple[str, str, dict[str, Any] | None, Any]:
        async with self.db.reader() as s:
            row = (
                await s.execute(
                    select(
                        AgentCommand.status,
                        AgentCommand.progress_message,
                        AgentCommand.result,
                        AgentCommand.claimed_at,
                    ).where(AgentCommand.id == command_id)
                )
            ).one()
        return row.status, row.progress_message, row.result, row.claimed_at

    async def _expire(self, command_id: int, from_statuses: tuple[str, ...], *, to: str = EXPIRED) -> bool:
        async with self.db.session() as s:
            done = await s.execute(
                update(AgentCommand)
                .where(AgentCommand.id == command_id, AgentCommand.status.in_(from_statuses))
                .values(status=to)
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
    """Delete the register's finished (done/expired/revoked) commands created before ``before``."""
    done = await s.execute(
        delete(AgentCommand).where(
            AgentCommand.register_id == register_id,
            AgentCommand.status.in_((DONE, EXPIRED, REVOKED)),
            AgentCommand.created_at < before,
        )
    )
    return rowcount(done)


def uses_agent(provider_settings: dict[str, Any] | None) -> bool:
    """A register whose settings for some provider say ``connection: agent``."""
    return any(isinstance(v, dict) and v.get("connection") == "agent" for v in (provider_settings or {}).values())


def channel_factory(
    db: Any, *, clock: Clock = SYSTEM_CLOCK, timing: AgentTiming = DEFAULT_TIMING
) -> Callable[[Any], DbAgentChannel | None]:
    """For ``PaymentOrchestrator(agent_channel_factory=...)``: a channel for registers that use an agent."""

    def make(register: Any) -> DbAgentChannel | None:
        if not uses_agent(getattr(register, "provider_settings", None)):
            return None
        return DbAgentChannel(db, register.id, register.venue_id, clock, timing=timing)

    return make


__all__ = [
    "CLAIM_REFUSALS",
    "INSTANCE_HEADER",
    "MAX_WAIT_S",
    "NOTIFIER",
    "TERMINAL_STATUSES",
    "AgentCommandOut",
    "AgentNoAnswer",
    "AgentNotReached",
    "AgentTiming",
    "DbAgentChannel",
    "apply_late_results",
    "channel_factory",
    "claim",
    "claim_for_agent",
    "claim_next",
    "heartbeat",
    "heartbeat_of_agent",
    "next_command",
    "next_for_agent",
    "notify_committed",
    "post_progress",
    "post_result",
    "prune",
    "receive_result",
    "revoke_attempt_commands",
    "scrub_card_data",
    "take_turn",
    "two_agents_text",
    "uses_agent",
]
