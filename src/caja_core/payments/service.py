"""Payment orchestration: take a sale from "pending payment" to "paid" through the register's primary provider,
fall back to the backup only when it is safe, and never charge twice, whatever fails.

The rules live in ``lifecycle`` (states, the transition table, what an answer means). This module runs them:
the asyncio side (one background flight per charge, its deadline, cancels, reconciliation, breaker probes)
and the persistence (each decision is applied to the attempt row with its effects in one transaction).

The web layer calls one method per user action (``start_payment``, ``poll``, ``cancel``, ``start_backup``,
``confirm_manual``, ``override_to_backup``, ``refund_attempt``, ``resolve_by_hand``); late answers from other
channels arrive through ``apply_outcome``. Provider calls run in background tasks; the browser only polls.

* write-ahead: the attempt (with its ticket and a snapshot of the device's settings) is committed before the
  provider is called; every later step talks to that same device, whatever the register says later;
* one command in flight per device (``LeaseKeeper``): "Terminal ocupado" at once; a dead instance's lease is
  taken over after its heartbeat stood still for the lease time (monotonic), and fencing tokens keep a
  superseded writer from driving the attempt;
* max wait (monotonic): cancel, then reconcile; the backup is offered only once the primary attempt is
  provably not charged and a policy trigger matches;
* a late approval is applied: the sale becomes paid, or the duplicate is returned (provider refund, else a
  supervisor task that blocks the close); a refund is marked as sent (``refund_sent_at``) before it is sent,
  and one whose answer never came (a kill -9, no answer from the device) is never sent again by caja: a
  supervisor checks the device and records what it did;
* reconciliation backs off; when caja cannot find out by itself, the attempt waits for a supervisor's
  decision with evidence (``resolve_by_hand``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import SYSTEM_CLOCK, Clock
from ..db import models as _all_models  # noqa: F401 - every mapped table, for foreign keys
from ..errors import Busy, CajaError, Conflict, Forbidden, NotFound, ValidationFailed
from ..fallback.engine import collect_rules, decide
from ..fallback.policy import FallbackPolicy, load_policy
from ..money import format_clp, parse_amount
from ..ops.dbstate import database_unavailable
from ..ops.workers import WORKERS, DatabaseBackoff
from ..plugins import call_event
from ..providers import (
    UNREACHABLE,
    Capability,
    CardData,
    ChargeRequest,
    DeviceIdentity,
    Outcome,
    OutcomeKind,
    PaymentProvider,
    Progress,
    ProviderContext,
    ProviderRegistry,
    ask_provider,
    device_key_of,
    settings_to_json,
    validate_settings,
)
from ..registers.models import BackupPhone, CashRegister
from ..sales.models import Sale
from ..text import clean_reason
from ..users.models import User
from . import breaker as breakers
from . import devices, terminal_ops
from . import lifecycle as lc
from .events import EventKind, PaymentEvent
from .leases import DEFAULT_BEAT_S, DEFAULT_TTL_S, LeaseKeeper, all_leases, lease_row, request_cancel
from .models import BreakerState, DeviceLease, PaymentAttempt
from .references import AUTH_CODE, BRAND, CARD_TYPES, LAST4, VOUCHER
from .schemas import AttemptOut, ManualInstructions, PaymentProgress, SupervisorItem
from .tickets import TicketIssuer

if TYPE_CHECKING:
    from ..sales.service import SaleOut

log = logging.getLogger("caja.payments")

#: The name under which the reconciliation worker reports its liveness to /health.
RECONCILIATION_WORKER = "reconciliation"

DOUBT_MESSAGE = (
    "No sabemos aún si se cobró: se está consultando al terminal. No cobre de nuevo ni cambie de "
    "medio de pago sin autorización de supervisor."
)
ORPHAN_MESSAGE = (
    "El servidor se reinició mientras se cobraba: se está consultando al terminal si se cobró. No cobre de nuevo "
    "ni entregue el pedido."
)
DECISION_MESSAGE = (
    "caja no puede averiguar sola si este cobro se hizo: un supervisor debe resolverlo con el comprobante o los "
    "totales del terminal (Jornada → Cobros por resolver)."
)
REFUND_UNANSWERED = (
    "La anulación se envió al terminal y caja no recibió su respuesta: no se envía de nuevo. Revise en el terminal "
    "si el cobro quedó anulado y registre la devolución (si no lo está, anúlelo en el terminal y regístrelo)."
)
#: After this many unanswered questions the attempt also waits for a supervisor (it keeps being asked).
DECISION_AFTER_TRIES = 8


class CannotAsk(Exception):
    """The attempt's device cannot even be asked (its provider or settings are gone)."""


@dataclass
class _Flight:
    """A provider charge this instance is running."""

    attempt_id: int
    device_key: str
    token: str
    started: float
    deadline: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    received: bool = False
    in_call: bool = False


@dataclass
class _Call:
    """Everything needed to talk to the provider about one attempt."""

    provider: PaymentProvider
    settings: Any
    request: ChargeRequest
    ctx: ProviderContext
    policy: FallbackPolicy
    register: Any


def capabilities_of(provider: PaymentProvider, settings: Any) -> frozenset[Capability]:
    """A provider's capabilities for one register's settings (``capabilities_for`` when it has it)."""
    per_settings = getattr(provider, "capabilities_for", None)
    if callable(per_settings):
        return frozenset(per_settings(settings))
    return frozenset(provider.capabilities)


class _Incident(NamedTuple):
    """An incident a decision's effect opens: its kind, the attempt's detail that keeps its id, what the screens
    are told, whether an attempt has it once at most, and whether it is the acting user's."""

    kind: str
    note: str
    reason: str
    once: bool = False
    by_user: bool = False


_INCIDENTS = {
    lc.Effect.INCIDENT_AMOUNT_MISMATCH: _Incident(
        "amount_mismatch", "amount_mismatch_incident", "Monto distinto", once=True
    ),
    lc.Effect.INCIDENT_NOT_MATCHING: _Incident(
        "approval_not_matching", "not_matching_incident", "Aprobación que no corresponde", once=True
    ),
    lc.Effect.INCIDENT_DOUBLE_CHARGE: _Incident(
        "double_charge_suspected", "double_charge_incident", "Cobro duplicado: devolución pendiente", by_user=True
    ),
    lc.Effect.INCIDENT_LATE_APPROVAL: _Incident(
        "late_approval", "late_approval_incident", "Aprobación tardía aplicada", by_user=True
    ),
    lc.Effect.INCIDENT_OVERRIDE_APPROVED: _Incident(
        "double_charge_suspected", "double_charge_incident", "Posible doble cobro", by_user=True
    ),
    lc.Effect.INCIDENT_NEEDS_DECISION: _Incident(
        "payment_needs_decision", "needs_decision_incident", "Cobro por resolver a mano", once=True
    ),
}


def _incident_text(effect: lc.Effect, a: PaymentAttempt, sale: Sale, decision: lc.Decision, outcome: Outcome) -> str:
    """What the incident an effect opens says to the supervisor."""
    E = lc.Effect
    if effect is E.INCIDENT_AMOUNT_MISMATCH:
        return (
            f"El terminal aprobó {format_clp(outcome.amount or 0)} pero se pidió {format_clp(a.amount)} "
            f"(intento #{a.id}, ticket {a.ticket}): no se da por pagado."
        )
    if effect is E.INCIDENT_NOT_MATCHING:
        return (
            f"El terminal informa aprobado el ticket {a.ticket} con una fecha anterior al envío del "
            f"intento #{a.id}: no se da por pagado; revise el comprobante."
        )
    if effect is E.INCIDENT_DOUBLE_CHARGE:
        return (
            f"Cobro duplicado: el intento #{a.id} ({a.provider_id}, {format_clp(a.amount)}, ticket {a.ticket}) "
            f"fue aprobado pero la venta #{sale.id} ya estaba "
            f"{'pagada' if sale.status == 'paid' else 'anulada'}. Hay que devolver {format_clp(a.amount)} "
            f"al cliente."
        )
    if effect is E.INCIDENT_LATE_APPROVAL:
        return (
            f"El terminal aprobó el ticket {a.ticket} ({format_clp(a.amount)}) después de que se diera por no "
            f"cobrado: la venta #{sale.id} quedó pagada con ese cobro."
        )
    if effect is E.INCIDENT_OVERRIDE_APPROVED:
        return (
            f"Posible doble cobro: el terminal aprobó tarde el intento #{a.id} ({format_clp(a.amount)}) "
            f"después de la autorización para usar el respaldo en la venta #{sale.id}. Verifique si el "
            f"cliente pagó también en el respaldo."
        )
    why = decision.reason or (a.details or {}).get("not_proof") or outcome.message or "sin respuesta"
    return (
        f"El cobro #{a.id} (venta #{sale.id}, ticket {a.ticket}, {format_clp(a.amount)}) sigue en duda "
        f"y caja no puede resolverlo sola ({why}). Un supervisor debe resolverlo con el comprobante o "
        f"los totales del terminal."
    )


def _detail(a: PaymentAttempt, **values: Any) -> None:
    a.details = {**(a.details or {}), **values}


def _refund_unanswered(a: PaymentAttempt) -> bool:
    """A refund of this attempt was sent to its provider and no answer was recorded (the process died, or the
    provider did not answer): it may have been done, so caja never sends it again."""
    return bool((a.details or {}).get("refund_sent_at"))


def _refund_answered(a: PaymentAttempt, outcome: Outcome) -> None:
    """Record a refund's answer other than an approval: a refusal (or a device that could not be reached) means
    nothing was returned, and a supervisor may ask again; no answer keeps the refund marked as sent."""
    if outcome.kind is OutcomeKind.UNKNOWN:
        _detail(a, refund_error=REFUND_UNANSWERED)
    else:
        _detail(a, refund_sent_at=None, refund_error=(outcome.message or outcome.kind.value)[:200])


def _text(value: str | None, limit: int) -> str:
    return "".join(ch for ch in (value or "").strip() if ch.isprintable())[:limit]


async def _role_of(s: AsyncSession, venue_id: int, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = (await s.execute(select(User).where(User.id == user_id, User.venue_id == venue_id))).scalar_one_or_none()
    if user is None or not user.active:
        return None
    return user.role


async def _require_supervisor(s: AsyncSession, venue_id: int, user_id: int | None, what: str) -> None:
    if await _role_of(s, venue_id, user_id) not in ("supervisor", "admin"):
        raise Forbidden(f"Solo un supervisor o administrador puede {what}.", code="payment.needs_supervisor")


def describe(a: PaymentAttempt) -> str:
    return (
        f"Intento #{a.id} de la venta #{a.sale_id} ({a.provider_id}, {format_clp(a.amount)}, ticket {a.ticket}): "
        f"{lc.label(a.state).lower()}"
    )


async def unresolved_attempts(s: AsyncSession, session_id: int) -> list[PaymentAttempt]:
    return list(
        (
            await s.execute(
                select(PaymentAttempt)
                .where(PaymentAttempt.session_id == session_id, PaymentAttempt.state.in_(lc.UNRESOLVED))
                .order_by(PaymentAttempt.id)
            )
        ).scalars()
    )


async def unresolved_attempt_summaries(s: AsyncSession, session_id: int) -> list[str]:
    """One line per attempt of the session that is not resolved yet (the session cannot close while any)."""
    return [describe(a) for a in await unresolved_attempts(s, session_id)]


async def supervisor_items(s: AsyncSession, venue_id: int) -> list[SupervisorItem]:
    """What waits for a supervisor in the venue: attempts in doubt (first those caja cannot settle by itself)
    and duplicate charges still to return."""
    from ..registers.models import CashRegister

    rows = (
        await s.execute(
            select(PaymentAttempt, CashRegister.code)
            .join(CashRegister, CashRegister.id == PaymentAttempt.register_id)
            .where(
                PaymentAttempt.venue_id == venue_id,
                PaymentAttempt.state.in_((*lc.DOUBTFUL, lc.SENDING, lc.AWAITING, lc.REFUND_DUE)),
            )
            .order_by(PaymentAttempt.needs_decision.desc(), PaymentAttempt.id)
        )
    ).all()
    items = []
    for a, code in rows:
        if a.state in (lc.SENDING, lc.AWAITING) and not a.needs_decision:
            continue  # a charge in progress, not a decision
        details = a.details or {}
        if a.state == lc.REFUND_DUE:
            reason = details.get("refund_error") or (
                REFUND_UNANSWERED if _refund_unanswered(a) else "Cobro duplicado: devuelva el dinero al cliente."
            )
        else:
            reason = details.get("not_proof") or a.response_message or lc.label(a.state)
        items.append(
            SupervisorItem(
                attempt_id=a.id,
                sale_id=a.sale_id,
                register_code=code,
                provider_id=a.provider_id,
                ticket=a.ticket,
                amount=a.amount,
                state=a.state,
                state_label=lc.label(a.state),
                needs_decision=bool(a.needs_decision),
                reason=str(reason)[:300],
                created_at=a.created_at,
                kind="return" if a.state == lc.REFUND_DUE else "resolve",
                refund_unanswered=_refund_unanswered(a),
            )
        )
    return items


async def _revoke_agent_commands(s: AsyncSession, attempt_id: int) -> bool:
    """Before an attempt that went through a register's agent is declared not charged, every command of it
    the agent has not started is revoked; False when one already started on the terminal (then it may still
    charge, and the attempt stays in doubt)."""
    from ..agents import service as agent_service

    revoke = getattr(agent_service, "revoke_attempt_commands", None)
    if revoke is None:
        return True
    return bool(await revoke(s, attempt_id))


@functools.cache
def _follow_statement() -> Select:
    """``PaymentOrchestrator.follow``'s one statement: the sale (``s_*``) and its register's policy and backup
    provider (``r_*``), then one row per attempt in order (``a_*``, null when there is none), each with its
    device's breaker (``b_*``) and lease (``l_*``) and its backup phone (``p_*``), when there is one."""
    sale, register, attempt = Sale.__table__, CashRegister.__table__, PaymentAttempt.__table__
    breaker, lease, phone = BreakerState.__table__, DeviceLease.__table__, BackupPhone.__table__
    columns = [
        *(c.label(f"s_{c.name}") for c in sale.columns),
        register.c.fallback_policy.label("r_fallback_policy"),
        register.c.register_type.label("r_register_type"),
        register.c.backup_provider.label("r_backup_provider"),
        *(c.label(f"a_{c.name}") for c in attempt.columns),
        *(c.label(f"b_{c.name}") for c in breaker.columns),
        *(c.label(f"l_{c.name}") for c in lease.columns),
        phone.c.id.label("p_id"),
        phone.c.name.label("p_name"),
        phone.c.identifier.label("p_identifier"),
    ]
    return (
        select(*columns)
        .select_from(
            sale.join(register, register.c.id == sale.c.register_id)
            .outerjoin(attempt, attempt.c.sale_id == sale.c.id)
            .outerjoin(breaker, breaker.c.device_key == attempt.c.device_key)
            .outerjoin(lease, lease.c.device_key == attempt.c.device_key)
            .outerjoin(phone, phone.c.id == attempt.c.backup_phone_id)
        )
        .where(sale.c.id == bindparam("sale_id"), sale.c.venue_id == bindparam("venue_id"))
        .order_by(attempt.c.id)
    )


class PaymentOrchestrator:
    """Owns the background provider calls, the reconciliation worker and breaker probes of one app instance."""

    def __init__(
        self,
        db: Any,
        registry: ProviderRegistry,
        pm: Any,
        *,
        clock: Clock = SYSTEM_CLOCK,
        instance_id: str,
        agent_channel_factory: Callable[[Any], Any] | None = None,
        worker_interval_s: float = 1.0,
        cancel_timeout_s: float = 10.0,
        cancel_grace_s: float = 0.5,
        status_timeout_s: float = 10.0,
        health_timeout_s: float = 10.0,
        reconcile_backoff_s: tuple[float, float] = (1.0, 60.0),
        blocked_backoff_s: float = 300.0,
        lease_ttl_s: float = DEFAULT_TTL_S,
        lease_beat_s: float = DEFAULT_BEAT_S,
        match_tolerance_s: float = lc.DEFAULT_MATCH_TOLERANCE_S,
        identify_every_s: float = 3600.0,
        stop_grace_s: float = 2.0,
        audit_listener: bool = True,
        pre_sale_check_s: float = 4.0,
    ) -> None:
        self.db = db
        self.registry = registry
        self.pm = pm
        self.clock = clock
        self.instance_id = instance_id
        self.agent_channel_factory = agent_channel_factory
        self.worker_interval_s = worker_interval_s
        self.cancel_timeout_s = cancel_timeout_s
        self.cancel_grace_s = cancel_grace_s
        self.status_timeout_s = status_timeout_s
        self.health_timeout_s = health_timeout_s
        self.reconcile_backoff_s = reconcile_backoff_s
        self.blocked_backoff_s = blocked_backoff_s
        self.match_tolerance_s = match_tolerance_s
        self.identify_every_s = identify_every_s
        self.stop_grace_s = stop_grace_s
        self.pre_sale_check_s = pre_sale_check_s
        self.rules = collect_rules(pm)
        self.leases = LeaseKeeper(clock, instance_id, ttl_s=lease_ttl_s, beat_s=lease_beat_s)
        self.breaker_times = breakers.BreakerClock(clock)
        self.tickets = TicketIssuer(db, instance_id)
        self._flights: dict[int, _Flight] = {}
        self._tasks: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        self._heart: asyncio.Task | None = None
        self._running = False
        self._wake = asyncio.Event()
        self._audit_listener_enabled = audit_listener
        self._audit: Any = None
        self._reconciling: dict[int, asyncio.Event] = {}  # attempts being asked about now → set when done
        self._resolving: set[int] = set()  # attempts a supervisor is deciding right now
        self._due: dict[int, float] = {}  # attempt id → when to ask its device again (monotonic)

    # life cycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Crash recovery, then the reconciliation worker and the lease heartbeat. Every attempt left in
        sending/awaiting/in_doubt goes through the provider's ``status()`` before its device takes a new sale."""
        if self._audit_listener_enabled:
            from .audit_listener import PaymentAuditListener

            self._audit = PaymentAuditListener.install(self.pm, self.db)
        async with self.db.session() as s:
            # Leases of this instance's previous life: whatever it was doing died with it.
            await self.leases.release_own(s)
        await self.tickets.start_series()
        self._running = True
        WORKERS.register(RECONCILIATION_WORKER, interval_s=self.worker_interval_s)
        self._heart = asyncio.create_task(self._heart_loop(), name="caja-payments-heartbeat")
        await self.run_once(recovery=True)
        WORKERS.beat(RECONCILIATION_WORKER)
        self._worker = asyncio.create_task(self._worker_loop(), name="caja-payments-worker")

    async def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._worker is not None:
            # Let the worker finish its pass (a pass cut in the middle could leave a write lock behind).
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._worker), self.status_timeout_s + 1)
        # Give the work that is only writing down an answer a moment to finish (and announce it); a charge still
        # waiting on its provider is cut: the next start's recovery reconciles it.
        waiting_on_provider = {f.task for f in self._flights.values() if f.in_call}
        finishing = [t for t in self._tasks if t not in waiting_on_provider]
        if finishing:
            await asyncio.wait(finishing, timeout=self.stop_grace_s)
        tasks = [t for t in [self._worker, self._heart, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._flights.clear()
        self._worker = self._heart = None
        WORKERS.stopped(RECONCILIATION_WORKER)
        if self._audit is not None:
            await self._audit.uninstall(self.pm)
            self._audit = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro, name: str = "caja-payment") -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_task_error)
        return task

    @staticmethod
    def _log_task_error(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("payment task %s failed", task.get_name(), exc_info=task.exception())

    def _emit(self, events: Iterable[PaymentEvent]) -> None:
        for event in events:
            call_event(self.pm, event)

    def _event(self, kind: EventKind, a: PaymentAttempt, **kw: Any) -> PaymentEvent:
        return PaymentEvent(
            kind=kind,
            venue_id=a.venue_id,
            at=self.clock.now(),
            attempt_id=a.id,
            sale_id=a.sale_id,
            session_id=a.session_id,
            register_id=a.register_id,
            provider_id=a.provider_id,
            role=a.role,
            amount=a.amount,
            state=a.state,
            device_key=a.device_key,
            **kw,
        )

    # helpers -------------------------------------------------------------------------------------------
    async def _register(self, s: AsyncSession, venue_id: int, register_id: int) -> Any:
        from ..registers.service import get_register

        return await get_register(s, venue_id, register_id)

    def _settings(self, register: Any, provider: PaymentProvider) -> Any:
        return validate_settings(provider, (register.provider_settings or {}).get(provider.id))

    def _ctx(
        self, register: Any, provider_id: str | None = None, device_settings: dict | None = None
    ) -> ProviderContext:
        """The provider context; with ``device_settings``, the agent (if any) is the one those settings name."""
        target = register
        if provider_id is not None and device_settings is not None:
            target = types.SimpleNamespace(
                id=register.id,
                venue_id=register.venue_id,
                code=getattr(register, "code", ""),
                provider_settings={provider_id: device_settings},
            )
        agent = self.agent_channel_factory(target) if self.agent_channel_factory else None
        return ProviderContext(register_id=register.id, venue_id=register.venue_id, agent=agent)

    def _device_settings(self, a: PaymentAttempt, register: Any) -> tuple[PaymentProvider, Any, dict]:
        """The provider and the settings of the device the attempt was sent to (its snapshot)."""
        if a.provider_id not in self.registry:
            raise CannotAsk(f"El proveedor {a.provider_id!r} ya no está instalado.")
        provider = self.registry.get(a.provider_id)
        raw = a.device_settings
        if raw is None:  # attempts from before snapshots: the register's settings
            raw = dict((register.provider_settings or {}).get(provider.id) or {})
        try:
            settings = validate_settings(provider, raw)
        except ValidationFailed as exc:
            raise CannotAsk(f"La configuración del terminal de este cobro ya no es válida: {exc.message}") from exc
        return provider, settings, raw

    async def _call(self, s: AsyncSession, a: PaymentAttempt) -> _Call:
        register = await self._register(s, a.venue_id, a.register_id)
        provider, settings, raw = self._device_settings(a, register)
        card = None
        if a.authorization_code:
            card = CardData(
                brand=a.card_brand,
                card_type=a.card_type,
                last4=a.last4,
                authorization_code=a.authorization_code,
                operation_id=a.operation_id,
                terminal_id=a.terminal_id,
            )
        request = ChargeRequest(
            attempt_id=a.id,
            ticket=a.ticket,
            amount=a.amount,
            tip=a.tip or 0,
            register_id=a.register_id,
            register_code=register.code,
            venue_id=a.venue_id,
            device_key=a.device_key,
            description=f"Venta {a.sale_id}",
            employee_id=str(a.started_by or ""),
            reference=a.provider_reference or a.reference,
            card=card,
        )
        return _Call(
            provider=provider,
            settings=settings,
            request=request,
            ctx=self._ctx(register, provider.id, raw),
            policy=register.policy,
            register=register,
        )

    async def _sale(self, s: AsyncSession, venue_id: int | None, sale_id: int, *, lock: bool = False) -> Sale:
        stmt = select(Sale).where(Sale.id == sale_id)
        if venue_id is not None:
            stmt = stmt.where(Sale.venue_id == venue_id)
        if lock:
            stmt = stmt.with_for_update()
        sale = (await s.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
        if sale is None:
            raise NotFound("La venta no existe.", code="sale.not_found")
        return sale

    async def _attempt(
        self, s: AsyncSession, attempt_id: int, *, venue_id: int | None = None, lock: bool = False
    ) -> PaymentAttempt:
        """The attempt; with ``lock``, its sale's row is locked first and then the attempt's: every writer takes
        the two in that one order (sale, then attempt), so two of them never wait on each other."""
        stmt = select(PaymentAttempt).where(PaymentAttempt.id == attempt_id)
        if venue_id is not None:
            stmt = stmt.where(PaymentAttempt.venue_id == venue_id)
        if lock:
            sale_id = await s.scalar(stmt.with_only_columns(PaymentAttempt.sale_id))
            if sale_id is None:
                raise NotFound("El intento de pago no existe.", code="payment.attempt_not_found")
            await self._sale(s, None, sale_id, lock=True)
            stmt = stmt.with_for_update()
        attempt = (await s.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
        if attempt is None:
            raise NotFound("El intento de pago no existe.", code="payment.attempt_not_found")
        return attempt

    async def _active_attempt(self, s: AsyncSession, sale_id: int) -> PaymentAttempt | None:
        return (
            await s.execute(
                select(PaymentAttempt).where(PaymentAttempt.sale_id == sale_id, PaymentAttempt.active.is_(True))
            )
        ).scalar_one_or_none()

    def _backoff(self, tries: int) -> float:
        base, cap = self.reconcile_backoff_s
        return min(cap, base * (2 ** max(0, tries - 1)))

    def _schedule(self, a: PaymentAttempt, delay_s: float) -> None:
        """Ask the device about ``a`` again after ``delay_s`` (this instance's monotonic clock; the wall-clock
        column is for people)."""
        self._due[a.id] = self.clock.monotonic() + delay_s
        a.next_reconcile_at = self.clock.now() + timedelta(seconds=delay_s)

    def _is_due(self, attempt_id: int) -> bool:
        return self._due.get(attempt_id, -math.inf) <= self.clock.monotonic()

    async def _tolerance(self, s: AsyncSession, a: PaymentAttempt) -> float:
        device = await devices.known_device(s, a.device_key)
        return lc.match_tolerance_s(device.clock_skew_s if device else None, self.match_tolerance_s)

    async def _view(self, s: AsyncSession, a: PaymentAttempt, *, token: str | None = None) -> lc.AttemptView:
        sale = await self._sale(s, a.venue_id, a.sale_id, lock=True)
        return lc.AttemptView(
            state=a.state,
            role=a.role,
            ticket=a.ticket,
            amount=a.amount,
            sent_at=a.sent_at,
            sale_pending=sale.status == "pending_payment",
            overridden=a.overridden_by is not None,
            classification=a.classification,
            fenced_out=token is not None and a.fence is not None and a.fence != token,
        )

    # user actions ----------------------------------------------------------------------------------
    async def start_payment(
        self, venue_id: int, sale_id: int, user_id: int | None, *, method: str = "card"
    ) -> PaymentProgress:
        """Pay a pending sale by card on the register's primary provider. Returns at once (the provider call runs
        in the background); double clicks, two tabs and two app instances all end in one active attempt."""
        if method != "card":
            raise ValidationFailed(
                "Este medio de pago no se cobra en un terminal (el efectivo se registra en la venta).",
                code="payment.method_invalid",
                field="method",
            )
        await self._ask_about_earlier_attempts(venue_id, sale_id)
        events: list[PaymentEvent] = []
        flight: _Flight | None = None
        probe_device: tuple[str, str] | None = None
        reconcile_ids: list[int] = []
        taken_token: tuple[str, str] | None = None
        try:
            async with self.db.session() as s:
                sale = await self._sale(s, venue_id, sale_id, lock=True)
                if sale.status == "paid":
                    raise Conflict("La venta ya está pagada.", code="sale.already_paid")
                if sale.status != "pending_payment":
                    raise Conflict("La venta está anulada; no se puede cobrar.", code="sale.not_payable")
                existing = await self._active_attempt(s, sale.id)
                if existing is None:
                    register = await self._register(s, venue_id, sale.register_id)
                    if not register.can_sell:
                        raise Conflict(
                            f"La caja {register.name} no está activa; no puede cobrar.", code="register.not_active"
                        )
                    if "card" not in (register.payment_methods or []):
                        raise Conflict("Esta caja no acepta pagos con tarjeta.", code="payment.method_not_allowed")
                    candidates = [p for p in [register.primary_provider] if p]
                    chosen = self.pm.hook.select_provider(intent=sale, candidates=candidates, policy=register.policy)
                    if not chosen:
                        raise Conflict(
                            "Esta caja no tiene un proveedor de tarjeta configurado.", code="payment.no_provider"
                        )
                    if chosen not in candidates:
                        raise Conflict(
                            f"Un plugin eligió el proveedor {chosen!r}, que esta caja no tiene configurado.",
                            code="payment.provider_not_configured",
                        )
                    provider = self.registry.get(chosen)
                    settings = self._settings(register, provider)
                    # the tip is charged too; a split payment's cash part is not
                    amount = self._check_amount(sale.total + (sale.tip or 0) - (sale.cash_part or 0), provider)
                    device_key = device_key_of(provider, settings, register.code)
                    now = self.clock.now()
                    blocked_message = ""
                    pending_on_device = await self._unresolved_on_device(s, device_key, exclude_sale=sale.id)
                    breaker_view = await breakers.view(s, device_key, register.policy, self.breaker_times)
                    if pending_on_device:
                        blocked_message = (
                            "El terminal tiene un cobro sin resolver (se está consultando): no se envió nada."
                        )
                        reconcile_ids = [a.id for a in pending_on_device]
                    elif breaker_view.blocks_sales:
                        blocked_message = "Terminal fuera de servicio (corte de protección abierto): no se envió nada."
                        if breaker_view.probe_due:
                            probe_device = (device_key, provider.id)
                    known = await devices.known_device(s, device_key)
                    attempt = PaymentAttempt(
                        venue_id=venue_id,
                        sale_id=sale.id,
                        session_id=sale.session_id,
                        register_id=sale.register_id,
                        provider_id=provider.id,
                        device_key=device_key,
                        device_settings=settings_to_json(settings),
                        device_identity=known.identity if known else None,
                        role="primary",
                        amount=amount,
                        tip=sale.tip or 0,
                        ticket=await self.tickets.allocate(s),
                        active=not blocked_message,
                        started_by=user_id,
                        created_at=now,
                        progress_message="",
                        response_message="",
                        verification_note="",
                        reconcile_tries=0,
                        needs_decision=False,
                        details={"max_wait_s": register.policy.max_wait_s},
                    )
                    lc.begin(attempt, manual=False, now=now)
                    try:
                        async with s.begin_nested():
                            s.add(attempt)
                            await s.flush()
                    except IntegrityError:
                        existing = await self._active_attempt(s, sale.id)
                        if existing is None:
                            raise
                    else:
                        if blocked_message:
                            decision = lc.decide(lc.AttemptView(state=attempt.state), lc.Event.BLOCKED)
                            lc.apply(attempt, decision, now)
                            attempt.response_message = blocked_message
                            self._offer_backup(
                                attempt, register, Outcome(kind=OutcomeKind.UNAVAILABLE), "unavailable", now
                            )
                            events += [
                                self._event("attempt_started", attempt, user_id=user_id),
                                self._event("not_sent", attempt, reason=blocked_message, user_id=user_id),
                            ]
                        else:
                            taken = await self.leases.acquire(s, device_key=device_key, attempt_id=attempt.id)
                            taken_token = (device_key, taken.token)
                            attempt.fence = taken.token
                            mono = self.clock.monotonic()
                            flight = _Flight(
                                attempt_id=attempt.id,
                                device_key=device_key,
                                token=taken.token,
                                started=mono,
                                deadline=mono + register.policy.max_wait_s,
                            )
                            events.append(self._event("attempt_started", attempt, user_id=user_id))
        except BaseException:
            if taken_token is not None:
                self.leases.forget(*taken_token)
            raise
        self._emit(events)
        self._launch(flight)
        for attempt_id in reconcile_ids:
            self._spawn(self.reconcile(attempt_id), name=f"caja-reconcile-{attempt_id}")
        if probe_device is not None:
            self._spawn(self.probe(probe_device[0], probe_device[1]), name="caja-breaker-probe")
        return await self.poll(venue_id, sale_id)

    async def _ask_about_earlier_attempts(self, venue_id: int, sale_id: int) -> None:
        """Before a card sale, the register's terminal is asked at once about any earlier attempt of another sale
        still in doubt on it (without waiting for the reconciliation's next turn), for at most
        ``pre_sale_check_s``: when the answer clears it (charged or provably not), the new sale goes on in the
        same tap; otherwise the new sale is refused as before and the question goes on in the background."""
        async with self.db.reader() as s:
            sale = await self._sale(s, venue_id, sale_id)
            if sale.status != "pending_payment" or await self._active_attempt(s, sale.id) is not None:
                return
            register = await self._register(s, venue_id, sale.register_id)
            if not register.primary_provider or register.primary_provider not in self.registry:
                return
            provider = self.registry.get(register.primary_provider)
            try:
                device_key = device_key_of(provider, self._settings(register, provider), register.code)
            except ValidationFailed:
                return
            doubtful = [
                a.id
                for a in await self._unresolved_on_device(s, device_key, exclude_sale=sale.id)
                if a.state in lc.DOUBTFUL
            ]
        if not doubtful:
            return

        async def ask(attempt_id: int) -> None:
            running = self._reconciling.get(attempt_id)
            if running is not None:
                await running.wait()
            else:
                await self._reconcile_now(attempt_id)

        asking = [self._spawn(ask(attempt_id), name=f"caja-reconcile-{attempt_id}") for attempt_id in doubtful]
        await asyncio.wait(asking, timeout=self.clock.timer(self.pre_sale_check_s))

    def _check_amount(self, total: Any, provider: PaymentProvider) -> int:
        amount = parse_amount(total, label="El monto a cobrar")
        minimum = int(getattr(provider, "min_amount", 1) or 1)
        if amount < minimum:
            raise ValidationFailed(
                f"{provider.name} no acepta montos menores a {format_clp(minimum)}.",
                code="payment.amount_below_minimum",
                field="amount",
            )
        return amount

    async def _unresolved_on_device(
        self, s: AsyncSession, device_key: str, *, exclude_sale: int
    ) -> list[PaymentAttempt]:
        """Attempts of other sales on this device whose outcome nobody knows (in doubt, or in flight with no live
        lease: their instance died). A device with any of them takes no new sale until they are resolved."""
        known = await devices.known_device(s, device_key)
        rows = list(
            (
                await s.execute(
                    select(PaymentAttempt).where(
                        devices.same_device(device_key, known.identity if known else None),
                        PaymentAttempt.sale_id != exclude_sale,
                        PaymentAttempt.state.in_((*lc.IN_FLIGHT, *lc.DOUBTFUL)),
                    )
                )
            ).scalars()
        )
        if not rows:
            return []
        lease = await lease_row(s, device_key)
        live = lease if lease is not None and self.leases.alive(lease) else None
        return [
            a
            for a in rows
            if a.classification != "pending" and (a.state in lc.DOUBTFUL or live is None or live.attempt_id != a.id)
        ]

    async def cancel(self, venue_id: int, sale_id: int, user_id: int | None) -> PaymentProgress:
        """The cashier cancels the payment in progress: never sent → cancelled at once; on the terminal →
        CancelSale then reconcile; on the backup phone → cancelled. An attempt in doubt cannot be cancelled."""
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            await self._sale(s, venue_id, sale_id)
            a = await self._active_attempt(s, sale_id)
            if a is None:
                raise Conflict("No hay un cobro en curso para esta venta.", code="payment.nothing_to_cancel")
            a = await self._attempt(s, a.id, lock=True)
            now = self.clock.now()
            if a.state in (lc.CREATED, lc.MANUAL_PENDING):
                lc.apply(a, lc.decide(lc.AttemptView(state=a.state), lc.Event.CASHIER_CANCEL), now)
                a.response_message = "Cancelado por el cajero"
                _detail(a, cancelled_by=user_id)
                if a.role == "primary":
                    await self.leases.release(s, device_key=a.device_key, token=a.fence)
                events.append(self._event("cancelled", a, user_id=user_id))
            elif a.state == lc.AWAITING and a.classification == "pending":
                raise Conflict(
                    "El pago está pendiente en el proveedor (la respuesta llega después): espere su "
                    "confirmación o pida autorización de supervisor para usar el respaldo.",
                    code="payment.pending_at_provider",
                )
            elif a.state in (lc.SENDING, lc.AWAITING) and await self._orphaned(s, a):
                self._wake.set()
                raise Conflict(ORPHAN_MESSAGE, code="payment.in_doubt")
            elif a.state in (lc.SENDING, lc.AWAITING):
                _detail(a, cancel_requested=True, cancelled_by=user_id)
                a.progress_message = "Cancelando en el terminal…"
                flight = self._flights.get(a.id)
                if flight is not None:
                    flight.cancel.set()
                else:  # the charge runs on another instance: it learns it with its next heartbeat
                    await request_cancel(s, device_key=a.device_key, attempt_id=a.id)
            else:
                raise Conflict(
                    "El cobro está en duda: no se puede cancelar hasta saber si se cobró. Espere la "
                    "consulta al terminal o pida autorización de supervisor.",
                    code="payment.in_doubt",
                )
        self._emit(events)
        return await self.poll(venue_id, sale_id)

    async def start_backup(self, venue_id: int, sale_id: int, user_id: int | None) -> PaymentProgress:
        """Switch this sale to the register's backup provider, only when the primary attempt is provably not
        charged and the policy offers the backup for its reason."""
        events: list[PaymentEvent] = []
        flight: _Flight | None = None
        async with self.db.session() as s:
            sale = await self._sale(s, venue_id, sale_id, lock=True)
            if sale.status != "pending_payment":
                raise Conflict("La venta ya no está pendiente de pago.", code="sale.not_payable")
            register = await self._register(s, venue_id, sale.register_id)
            self._check_backup_configured(register)
            active = await self._active_attempt(s, sale.id)
            if active is not None:
                if active.role == "backup":
                    return await self._poll_in(s, venue_id, sale)
                raise Conflict(
                    "El cobro con el terminal principal sigue en curso o en duda: no se puede usar el "
                    "respaldo sin autorización de supervisor (posible doble cobro).",
                    code="payment.primary_unresolved",
                )
            last = (
                await s.execute(
                    select(PaymentAttempt)
                    .where(PaymentAttempt.sale_id == sale.id, PaymentAttempt.role == "primary")
                    .order_by(PaymentAttempt.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if last is None:
                raise Conflict("Primero se cobra con el terminal principal.", code="payment.primary_first")
            if last.state not in lc.NOT_CHARGED:
                raise Conflict(
                    "El cobro con el terminal principal no está resuelto como no cobrado: no se puede "
                    "usar el respaldo sin autorización de supervisor.",
                    code="payment.primary_unresolved",
                )
            if last.backup_offered_at is None:
                raise Conflict(
                    f"La política de la caja no ofrece el respaldo por este motivo "
                    f"({last.response_message or lc.label(last.state)}). Reintente con el terminal o "
                    f"cobre en efectivo.",
                    code="payment.backup_not_offered",
                )
            if register.policy.require_supervisor:
                await _require_supervisor(s, venue_id, user_id, "autorizar el uso del respaldo en esta caja")
            reason = (last.details or {}).get("backup_reason") or "Respaldo"
            backup, flight = await self._create_backup(s, sale, register, user_id)
            await self._fallback_event(s, sale, backup, last.provider_id, reason, user_id, override=False)
            events += [
                self._event("fell_back", backup, reason=reason, user_id=user_id),
                self._event("attempt_started", backup, user_id=user_id),
            ]
        self._emit(events)
        self._launch(flight)
        return await self.poll(venue_id, sale_id)

    def _check_backup_configured(self, register: Any) -> None:
        if not register.backup_provider:
            raise Conflict("Esta caja no tiene proveedor de respaldo.", code="payment.no_backup")
        if not register.policy.enabled:
            raise Conflict("La política de esta caja no permite usar el respaldo.", code="payment.backup_disabled")

    def _launch(self, flight: _Flight | None) -> None:
        if flight is not None:
            self._flights[flight.attempt_id] = flight
            flight.task = self._spawn(self._run_charge(flight), name=f"caja-charge-{flight.attempt_id}")

    async def _create_backup(
        self, s: AsyncSession, sale: Sale, register: Any, user_id: int | None
    ) -> tuple[PaymentAttempt, _Flight | None]:
        provider = self.registry.get(register.backup_provider)
        settings = self._settings(register, provider)
        # the tip is charged too; a split payment's cash part is not
        amount = self._check_amount(sale.total + (sale.tip or 0) - (sale.cash_part or 0), provider)
        device_key = device_key_of(provider, settings, register.code)
        now = self.clock.now()
        manual = Capability.MANUAL in capabilities_of(provider, settings)
        known = await devices.known_device(s, device_key)
        attempt = PaymentAttempt(
            venue_id=sale.venue_id,
            sale_id=sale.id,
            session_id=sale.session_id,
            register_id=sale.register_id,
            provider_id=provider.id,
            device_key=device_key,
            device_settings=settings_to_json(settings),
            device_identity=known.identity if known else None,
            role="backup",
            amount=amount,
            tip=sale.tip or 0,
            ticket=await self.tickets.allocate(s),
            active=True,
            started_by=user_id,
            created_at=now,
            progress_message="",
            response_message="",
            verification_note="",
            reconcile_tries=0,
            needs_decision=False,
            details={"max_wait_s": register.policy.max_wait_s},
        )
        lc.begin(attempt, manual=manual, now=now)
        if manual:
            attempt.reference = f"{register.code}-{attempt.ticket}"[:40]
            phone = (
                await s.execute(
                    select(BackupPhone)
                    .where(
                        BackupPhone.venue_id == sale.venue_id,
                        BackupPhone.available.is_(True),
                        (BackupPhone.register_id == register.id) | (BackupPhone.register_id.is_(None)),
                    )
                    .order_by(BackupPhone.register_id.is_(None), BackupPhone.id)
                    .limit(1)
                )
            ).scalar_one_or_none()
            if phone is not None:
                attempt.backup_phone_id = phone.id
            attempt.progress_message = (
                f"Cobre {format_clp(amount)} en el celular de respaldo"
                + (f" «{phone.name}»" if phone else "")
                + f" con la referencia {attempt.reference}."
            )
        s.add(attempt)
        await s.flush()
        flight = None
        if not manual:
            taken = await self.leases.acquire(s, device_key=device_key, attempt_id=attempt.id)
            attempt.fence = taken.token
            mono = self.clock.monotonic()
            flight = _Flight(
                attempt_id=attempt.id,
                device_key=device_key,
                token=taken.token,
                started=mono,
                deadline=mono + register.policy.max_wait_s,
            )
        return attempt, flight

    async def _fallback_event(
        self,
        s: AsyncSession,
        sale: Sale,
        backup: PaymentAttempt,
        from_provider: str,
        reason: str,
        user_id: int | None,
        *,
        override: bool,
    ) -> None:
        from ..sessions.service import add_fallback_event

        await add_fallback_event(
            s,
            venue_id=sale.venue_id,
            session_id=sale.session_id,
            sale_id=sale.id,
            attempt_id=backup.id,
            from_provider=from_provider,
            to_provider=backup.provider_id,
            reason=reason[:300],
            user_id=user_id,
            override=override,
        )

    async def confirm_manual(
        self,
        venue_id: int,
        attempt_id: int,
        user_id: int | None,
        authorization_code: str,
        last4: str,
        brand: str,
        card_type: str,
        sale_id: int | None = None,
    ) -> PaymentProgress:
        """The cashier charged on the backup phone and types what the phone shows. The amount cannot change.
        A phone charge confirmed after the sale was paid another way is a duplicate to return. ``sale_id``, when
        given, is the sale on the cashier's screen: an attempt of another sale is refused."""
        code = (authorization_code or "").strip().upper()
        if not AUTH_CODE.fullmatch(code):
            raise ValidationFailed(
                "El código de autorización debe tener exactamente 6 letras o números.",
                code="payment.auth_code_invalid",
                field="authorization_code",
            )
        digits = (last4 or "").strip()
        if not LAST4.fullmatch(digits):
            raise ValidationFailed(
                "Los últimos 4 dígitos de la tarjeta deben ser exactamente 4 números.",
                code="payment.last4_invalid",
                field="last4",
            )
        brand_clean = (brand or "").strip()
        if not BRAND.fullmatch(brand_clean):
            raise ValidationFailed(
                "Indique la marca de la tarjeta (Visa, Mastercard…).", code="payment.brand_invalid", field="brand"
            )
        kind = CARD_TYPES.get((card_type or "").strip().lower())
        if kind is None:
            raise ValidationFailed(
                "El tipo de tarjeta debe ser débito, crédito o prepago.",
                code="payment.card_type_invalid",
                field="card_type",
            )
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, venue_id=venue_id, lock=True)
            if sale_id is not None and a.sale_id != sale_id:
                raise NotFound("Ese cobro de respaldo no es de esta venta.", code="payment.manual_other_sale")
            if a.state in (lc.APPROVED_MANUAL, lc.REFUND_DUE) and a.authorization_code == code and a.last4 == digits:
                sale = await self._sale(s, venue_id, a.sale_id)
                return await self._poll_in(s, venue_id, sale)  # the same confirmation twice: applied once
            # A phone charge given up on screen (the cashier's cancel, or another attempt that went first) is
            # still a charge once its authorization is typed: it pays the sale if it waits, else it is returned.
            given_up = a.state == lc.CANCELLED and a.reference is not None
            if a.state != lc.MANUAL_PENDING and not given_up:
                raise Conflict(
                    f"Este intento no espera confirmación manual ({lc.label(a.state)}).",
                    code="payment.not_manual_pending",
                )
            sale = await self._sale(s, venue_id, a.sale_id, lock=True)
            now = self.clock.now()
            waiting = sale.status == "pending_payment"
            if given_up and waiting:  # nothing else may be charging the sale on a terminal meanwhile
                charging = await s.scalar(
                    select(func.count())
                    .select_from(PaymentAttempt)
                    .where(
                        PaymentAttempt.sale_id == sale.id,
                        PaymentAttempt.active.is_(True),
                        PaymentAttempt.id != a.id,
                        PaymentAttempt.state != lc.MANUAL_PENDING,
                    )
                )
                waiting = not charging
            decision = lc.decide(lc.AttemptView(state=a.state, sale_pending=waiting), lc.Event.MANUAL_CONFIRM)
            a.confirmed_by = user_id
            a.authorization_code, a.last4, a.card_brand, a.card_type = code, digits, brand_clean[:20], kind
            a.response_message = "Aprobado en el celular de respaldo"
            duplicate = (
                await s.execute(
                    select(func.count())
                    .select_from(PaymentAttempt)
                    .join(Sale, Sale.id == PaymentAttempt.sale_id)
                    .where(
                        Sale.jornada_id == sale.jornada_id,
                        PaymentAttempt.provider_id == a.provider_id,
                        PaymentAttempt.authorization_code == code,
                        PaymentAttempt.id != a.id,
                        PaymentAttempt.state.in_(lc.PAID),
                    )
                )
            ).scalar_one()
            if duplicate:
                incident = await self._incident(
                    s,
                    a,
                    sale,
                    "duplicate_authorization",
                    f"Código de autorización {code} repetido en la jornada (intento #{a.id}, venta #{sale.id}): "
                    f"verifique contra el reporte de {a.provider_id}.",
                    user_id,
                )
                _detail(a, duplicate_authorization_incident=incident)
                events.append(self._event("incident", a, reason="Código de autorización repetido"))
            lc.apply(a, decision, now)
            post = await self._effects(s, a, sale, decision, Outcome(kind=OutcomeKind.APPROVED), "", user_id, events)
            if decision.notify:
                events.append(self._event(decision.notify, a, user_id=user_id))
        self._emit(events)
        self._after(post)
        return await self.poll(venue_id, a.sale_id)

    async def override_to_backup(self, venue_id: int, sale_id: int, supervisor_id: int, note: str) -> PaymentProgress:
        """A supervisor switches to the backup while the primary is still in flight or in doubt. Audited as
        "posible doble cobro"; the primary keeps being reconciled, and a late approval is returned."""
        note = clean_reason(
            note,
            "El motivo de la autorización",
            field="note",
            maximum=500,
            missing="Escriba el motivo de la autorización.",
            code="payment.override_note",
        )
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            await _require_supervisor(s, venue_id, supervisor_id, "autorizar el cambio al respaldo")
            sale = await self._sale(s, venue_id, sale_id, lock=True)
            if sale.status != "pending_payment":
                raise Conflict("La venta ya no está pendiente de pago.", code="sale.not_payable")
            register = await self._register(s, venue_id, sale.register_id)
            self._check_backup_configured(register)
            active = await self._active_attempt(s, sale.id)
            if (
                active is None
                or active.role != "primary"
                or active.state not in (lc.SENDING, lc.AWAITING, *lc.DOUBTFUL)
            ):
                raise Conflict(
                    "No hay un cobro del terminal principal en curso o en duda: no hace falta "
                    "autorización (use el respaldo si se ofrece).",
                    code="payment.override_not_needed",
                )
            primary = await self._attempt(s, active.id, lock=True)
            now = self.clock.now()
            primary.active, primary.overridden_by, primary.overridden_at = False, supervisor_id, now
            primary.classification = "overridden"
            _detail(primary, override_note=note[:300])
            self._schedule(primary, 0)
            await s.flush()
            backup, flight = await self._create_backup(s, sale, register, supervisor_id)
            reason = f"Autorización de supervisor (posible doble cobro): {note}"
            await self._fallback_event(s, sale, backup, primary.provider_id, reason, supervisor_id, override=True)
            events += [
                self._event("overridden", primary, reason=reason, user_id=supervisor_id, audited=True),
                self._event("fell_back", backup, reason=reason, user_id=supervisor_id),
                self._event("attempt_started", backup, user_id=supervisor_id),
            ]
        self._emit(events)
        self._launch(flight)
        return await self.poll(venue_id, sale_id)

    async def refund_attempt(
        self,
        venue_id: int,
        attempt_id: int,
        user_id: int,
        reason: str = "Cobro duplicado",
        *,
        by_hand: bool = False,
        note: str = "",
        sale_id: int | None = None,
    ) -> PaymentProgress:
        """Return a duplicate charge (an attempt that charged a sale another attempt already paid): through the
        provider, or — ``by_hand`` — record that the supervisor returned it on the device (with a note).
        ``sale_id``, when given, is the sale the supervisor authorized for: an attempt of another sale is refused."""
        from ..audit.service import record

        note = _text(note, 300)
        if by_hand and len(note) < 5:
            raise ValidationFailed(
                "Describa cómo se devolvió el dinero (anulación en el terminal, número de comprobante…).",
                code="payment.refund_note",
                field="note",
            )
        taken: str | None = None
        async with self.db.session() as s:
            await _require_supervisor(s, venue_id, user_id, "anular un cobro duplicado")
            a = await self._attempt(s, attempt_id, venue_id=venue_id, lock=True)
            if sale_id is not None and a.sale_id != sale_id:
                raise NotFound("Ese cobro no es de esta venta.", code="payment.refund_other_sale")
            due = a.state == lc.REFUND_DUE or (
                a.state in (lc.APPROVED, lc.APPROVED_MANUAL) and (a.details or {}).get("refund_offered")
            )
            if not due:
                raise Conflict(
                    "Solo se anulan aquí los cobros duplicados; para anular una venta pagada use la "
                    "anulación de venta.",
                    code="payment.refund_not_offered",
                )
            call = None
            manual = by_hand
            if not by_hand:
                try:
                    call = await self._call(s, a)
                except CannotAsk as exc:
                    raise Conflict(
                        f"No se puede anular por el proveedor: {exc}. Devuelva el dinero en el terminal y regístrelo.",
                        code="payment.refund_failed",
                    ) from exc
                manual = Capability.MANUAL in capabilities_of(call.provider, call.settings)
                if not manual and Capability.REFUND not in capabilities_of(call.provider, call.settings):
                    raise Conflict(
                        f"{call.provider.name} no permite anular desde caja: devuelva el dinero en el terminal y "
                        f"regístrelo.",
                        code="payment.refund_unsupported",
                    )
                if not manual:
                    if _refund_unanswered(a):
                        lease = await lease_row(s, a.device_key)
                        if lease is not None and lease.attempt_id == a.id and self.leases.alive(lease):
                            raise Conflict(
                                "La anulación de este cobro está en curso en el terminal: espere su respuesta.",
                                code="payment.refund_in_progress",
                            )
                        raise Conflict(REFUND_UNANSWERED, code="payment.refund_unanswered")
                    try:
                        async with s.begin_nested():
                            taken = (
                                await self.leases.acquire(s, device_key=a.device_key, attempt_id=a.id, purpose="refund")
                            ).token
                    except Busy:
                        raise Conflict(
                            "El terminal está ocupado con otro cobro: reintente la anulación en unos segundos.",
                            code="payment.device_busy",
                        ) from None
                    # Written with the lease, before the refund leaves: whatever happens next, it is never sent
                    # again blindly.
                    _detail(a, refund_sent_at=self.clock.now().isoformat())
        outcome: Outcome | None = None
        if call is not None and not manual:
            try:
                outcome = await asyncio.wait_for(
                    ask_provider(
                        call.provider.id, "refund", call.provider.refund(call.request, call.settings, call.ctx)
                    ),
                    self.clock.timer(self.status_timeout_s),
                )
            except Exception as exc:  # noqa: BLE001 - any failure means "not refunded yet"
                outcome = Outcome(kind=OutcomeKind.UNKNOWN, message=str(exc)[:200])
        events: list[PaymentEvent] = []
        failed = False
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, lock=True)
            await self.leases.release(s, device_key=a.device_key, token=taken)
            if outcome is not None and outcome.kind is not OutcomeKind.APPROVED:
                _refund_answered(a, outcome)
                await record(
                    s,
                    venue_id=venue_id,
                    user_id=user_id,
                    action="payment.refund_failed",
                    entity="payment_attempt",
                    entity_id=a.id,
                    payload={"message": outcome.message[:200], "kind": outcome.kind.value},
                )
                failed = True
            else:
                decision = lc.decide(lc.AttemptView(state=a.state), lc.Event.REFUND_DONE)
                lc.apply(a, decision, self.clock.now())
                _detail(
                    a,
                    refund_offered=False,
                    refund_sent_at=None,
                    refunded_by=user_id,
                    refund_reason=reason[:200],
                    refund_manual=manual,
                    refund_note=note,
                )
                await self._resolve_incidents(s, a, ("double_charge_suspected",), user_id, "Cobro duplicado devuelto")
                await record(
                    s,
                    venue_id=venue_id,
                    user_id=user_id,
                    action="payment.refunded",
                    entity="payment_attempt",
                    entity_id=a.id,
                    payload={
                        "amount": a.amount,
                        "provider": a.provider_id,
                        "reason": reason[:200],
                        "by_hand": by_hand,
                        "note": note,
                    },
                )
                events.append(self._event("refunded", a, user_id=user_id, reason=reason, audited=True))
            sale_id = a.sale_id
        self._emit(events)
        if failed and outcome is not None and outcome.kind is OutcomeKind.UNKNOWN:
            raise Conflict(REFUND_UNANSWERED, code="payment.refund_unanswered")
        if failed:
            raise Conflict(
                f"El proveedor no confirmó la anulación: {outcome.message if outcome else ''}. Reintente, o "
                f"devuelva el dinero en el terminal y regístrelo.",
                code="payment.refund_failed",
            )
        return await self.poll(venue_id, sale_id)

    async def resolve_by_hand(
        self,
        venue_id: int,
        attempt_id: int,
        supervisor_id: int,
        *,
        charged: bool,
        voucher: str = "",
        terminal_totals: str = "",
        note: str = "",
    ) -> PaymentAttempt:
        """A supervisor decides an attempt caja cannot settle by itself, with evidence: charged (the voucher's
        number or authorization code) or not charged (the terminal's totals or a voucher showing otherwise),
        and a note. Audited; shown in the Z report; the session can close afterwards."""

        voucher, terminal_totals, note = _text(voucher, 40), _text(terminal_totals, 200), _text(note, 300)
        if len(note) < 10:
            raise ValidationFailed(
                "Explique qué revisó (al menos 10 caracteres).", code="payment.resolution_note", field="note"
            )
        if charged and not VOUCHER.fullmatch(voucher):
            raise ValidationFailed(
                "Para dar el cobro por hecho indique el número de comprobante o el código de autorización del "
                "voucher (3 a 20 letras, números o guiones).",
                code="payment.resolution_voucher",
                field="voucher",
            )
        if not charged and not (terminal_totals or voucher):
            raise ValidationFailed(
                "Para dar el cobro por no hecho indique los totales del terminal (o el comprobante que lo muestra).",
                code="payment.resolution_evidence",
                field="terminal_totals",
            )
        if voucher and not VOUCHER.fullmatch(voucher):
            raise ValidationFailed(
                "El comprobante debe tener de 3 a 20 letras, números o guiones.",
                code="payment.resolution_voucher",
                field="voucher",
            )
        events: list[PaymentEvent] = []
        post: list[tuple[str, int]] = []
        self._resolving.add(attempt_id)  # no new question to the device about it while the supervisor decides
        try:
            asking = self._reconciling.get(attempt_id)
            if asking is not None:  # a question already on its way to the device: wait for its answer
                with contextlib.suppress(TimeoutError):  # (who it is, then the ticket: two questions at most)
                    await asyncio.wait_for(asking.wait(), self.clock.timer(2 * self.status_timeout_s + 2))
            return await self._resolve(
                venue_id, attempt_id, supervisor_id, charged, voucher, terminal_totals, note, events, post
            )
        finally:
            self._resolving.discard(attempt_id)

    async def _resolve(
        self,
        venue_id: int,
        attempt_id: int,
        supervisor_id: int,
        charged: bool,
        voucher: str,
        terminal_totals: str,
        note: str,
        events: list[PaymentEvent],
        post: list[tuple[str, int]],
    ) -> PaymentAttempt:
        from ..audit.service import record

        async with self.db.session() as s:
            await _require_supervisor(s, venue_id, supervisor_id, "resolver un cobro en duda")
            a = await self._attempt(s, attempt_id, venue_id=venue_id, lock=True)
            if a.state not in (*lc.IN_FLIGHT, *lc.DOUBTFUL) or a.state == lc.CREATED:
                raise Conflict(
                    f"Este cobro no está en duda ({lc.label(a.state)}): no hay nada que resolver.",
                    code="payment.not_in_doubt",
                )
            lease = await lease_row(s, a.device_key)
            if (
                a.id in self._flights
                or a.id in self._reconciling
                or (lease is not None and lease.attempt_id == a.id and self.leases.alive(lease))
            ):
                raise Conflict(
                    "caja está hablando con el terminal por este cobro en este momento: espere unos segundos y "
                    "vuelva a intentarlo.",
                    code="payment.in_progress",
                )
            if not charged and self._through_agent(a) and not await _revoke_agent_commands(s, a.id):
                raise Conflict(
                    "El agente de la caja ya empezó este cobro en el terminal: todavía puede cobrarse. Espere su "
                    "resultado.",
                    code="payment.agent_started",
                )
            now = self.clock.now()
            if a.state in lc.IN_FLIGHT:
                lc.apply(a, lc.decide(await self._view(s, a), lc.Event.ORPHANED), now)
            view = await self._view(s, a)
            sale = await self._sale(s, venue_id, a.sale_id, lock=True)
            outcome = Outcome(
                kind=OutcomeKind.APPROVED if charged else OutcomeKind.UNAVAILABLE,
                ticket=a.ticket,
                amount=a.amount,
                message="Resuelto por supervisor: " + ("cobrado" if charged else "no cobrado"),
            )
            decision = lc.on_answer(view, lc.Answer(outcome=outcome, source="resolution"))
            lc.apply(a, decision, now)
            a.needs_decision = False
            a.resolved_by, a.resolved_at = supervisor_id, now
            a.response_message = outcome.message
            if charged and not a.authorization_code:
                a.authorization_code = voucher[:20]
            resolution = {
                "by": supervisor_id,
                "at": now.isoformat(),
                "charged": charged,
                "voucher": voucher,
                "terminal_totals": terminal_totals,
                "note": note,
            }
            _detail(a, resolution=resolution)
            post = await self._effects(s, a, sale, decision, outcome, "resolution", supervisor_id, events)
            await self._resolve_incidents(
                s,
                a,
                ("payment_needs_decision",),
                supervisor_id,
                f"Resuelto a mano: {'cobrado' if charged else 'no cobrado'}. {note}",
            )
            await record(
                s,
                venue_id=venue_id,
                user_id=supervisor_id,
                action="payment.resolved_by_hand",
                entity="payment_attempt",
                entity_id=a.id,
                payload={**resolution, "amount": a.amount, "ticket": a.ticket, "state": a.state},
            )
            if decision.notify:
                events.append(self._event(decision.notify, a, user_id=supervisor_id, audited=True, reason=note))
            self._due.pop(a.id, None)
        self._emit(events)
        self._after(post)
        return a

    # the devices as a whole ----------------------------------------------------------------------------
    async def check_terminals(
        self, venue_id: int, *, jornada_id: int | None = None, user_id: int | None = None, trigger: str = "admin"
    ) -> list[Any]:
        """Each device of the venue against caja (``terminal_ops.check_terminals``); an approval the device
        lists for an attempt given up as not charged is applied here like any late approval."""
        from . import terminal_ops

        return await terminal_ops.check_terminals(
            self.db,
            self.registry,
            venue_id,
            jornada_id=jornada_id,
            user_id=user_id,
            trigger=trigger,
            keeper=self.leases,
            clock=self.clock,
            agent_channel_factory=self.agent_channel_factory,
            apply_outcome=lambda attempt_id, outcome: self.apply_outcome(
                attempt_id, outcome, source="status", wait=True
            ),
        )

    async def close_batch(
        self, venue_id: int, register_id: int, user_id: int | None, *, provider_id: str | None = None
    ) -> Any:
        """The batch close of a register's device, refused while it has attempts in flight or in doubt."""
        from . import terminal_ops

        async with self.db.reader() as s:
            await _require_supervisor(s, venue_id, user_id, "hacer el cierre de lote de un terminal")
            ref = await terminal_ops.register_terminal(s, self.registry, venue_id, register_id, provider_id)
        return await terminal_ops.close_batch(
            self.db,
            self.registry,
            ref,
            keeper=self.leases,
            user_id=user_id,
            source="admin",
            clock=self.clock,
            agent_channel_factory=self.agent_channel_factory,
        )

    async def close_jornada(self, venue_id: int, jornada_id: int, user_id: int | None, notes: str = "") -> Any:
        """Close the night: every device is checked against caja first (differences become incidents of the
        jornada), then the jornada closes — unless a payment is still unresolved."""
        from ..jornadas import service as jornadas

        async with self.db.reader() as s:
            await jornadas.closable(s, venue_id=venue_id, jornada_id=jornada_id)
        await self.check_terminals(venue_id, jornada_id=jornada_id, user_id=user_id, trigger="jornada_close")
        async with self.db.session() as s:
            return await jornadas.close_jornada(
                s, venue_id=venue_id, jornada_id=jornada_id, user_id=user_id, notes=notes
            )

    # polling ---------------------------------------------------------------------------------------
    async def poll(
        self, venue_id: int, sale_id: int, *, session: AsyncSession | None = None, sale: SaleOut | None = None
    ) -> PaymentProgress:
        """How the sale's payment stands. With ``session`` it is read there (the caller's unit of work: a sale
        it created and has not committed yet is found), and ``sale``, the sale as the caller just read it in that
        same session, is not read again; else in a snapshot of its own."""
        if session is not None:
            if sale is None or sale.id != sale_id or sale.venue_id != venue_id:
                return await self._poll_in(session, venue_id, await self._sale(session, venue_id, sale_id))
            return await self._poll_in(session, venue_id, sale)
        # One snapshot: the sale and its attempts as of the same instant (never "approved but unpaid").
        async with self.db.reader(snapshot=True) as s:
            return await self._poll_in(s, venue_id, await self._sale(s, venue_id, sale_id))

    async def follow(self, venue_id: int, sale_id: int) -> tuple[SaleOut, PaymentProgress]:
        """The sale (without its lines) and how its payment stands, for the panel that follows a payment (every
        register's screen refreshes it every second while a card payment waits on its terminal): ONE statement
        (the sale joined with its register, its attempts and, per attempt, its device's breaker and lease and its
        backup phone) on a connection in autocommit. A statement is its own snapshot, so the sale and its attempts
        are seen as of one instant (never "approved but unpaid") with no transaction, no ORM session and no
        per-row objects."""
        from ..sales.service import sale_out

        flying = set(self._flights)  # the charges this instance runs, as of before the read (see ``_progress``)
        async with self.db.autocommit() as conn:
            rows = (await conn.execute(_follow_statement(), {"sale_id": sale_id, "venue_id": venue_id})).all()
        if not rows:
            raise NotFound("La venta no existe.", code="sale.not_found")
        first = rows[0]._mapping
        sale: Any = types.SimpleNamespace(**{c.name: first[f"s_{c.name}"] for c in Sale.__table__.columns})
        attempts, leases, breaker_rows, phones = [], {}, {}, {}
        for row in rows:
            m = row._mapping
            if m["a_id"] is None:  # a sale with no attempt yet: one row, the attempt's columns null
                continue
            a = types.SimpleNamespace(**{c.name: m[f"a_{c.name}"] for c in PaymentAttempt.__table__.columns})
            attempts.append(a)
            if m["l_device_key"] is not None:
                leases[a.device_key] = types.SimpleNamespace(
                    **{c.name: m[f"l_{c.name}"] for c in DeviceLease.__table__.columns}
                )
            if m["b_device_key"] is not None:
                breaker_rows[a.device_key] = types.SimpleNamespace(
                    **{c.name: m[f"b_{c.name}"] for c in BreakerState.__table__.columns}
                )
            if m["p_id"] is not None:
                phones[m["p_id"]] = types.SimpleNamespace(id=m["p_id"], name=m["p_name"], identifier=m["p_identifier"])
        policy = load_policy(first["r_fallback_policy"], first["r_register_type"])
        progress = self._progress(
            sale,
            attempts,
            policy,
            first["r_backup_provider"],
            flying=flying,
            lease=leases.get,
            breaker=breaker_rows.get,
            phone=phones.get,
        )
        return sale_out(sale), progress

    async def _poll_in(self, s: AsyncSession, venue_id: int, sale: Sale | SaleOut) -> PaymentProgress:
        flying = set(self._flights)
        attempts = list(
            (
                await s.execute(
                    select(PaymentAttempt).where(PaymentAttempt.sale_id == sale.id).order_by(PaymentAttempt.id)
                )
            ).scalars()
        )
        register = await self._register(s, venue_id, sale.register_id)
        focus, _, device = self._focus(attempts)
        # The devices' leases the progress needs: the focus's when it may be orphaned, the sent refunds' devices.
        keys = [focus.device_key] if focus is not None and self._may_be_orphaned(focus, flying) else []
        keys += [a.device_key for a in attempts if self._refund_due(a) and _refund_unanswered(a)]
        leases = {key: await lease_row(s, key) for key in dict.fromkeys(keys)}
        breaker_row = await breakers.row(s, device) if device else None
        phone = None
        if focus is not None and focus.state == lc.MANUAL_PENDING and focus.backup_phone_id:
            phone = await s.get(BackupPhone, focus.backup_phone_id)
        return self._progress(
            sale,
            attempts,
            register.policy,
            register.backup_provider,
            flying=flying,
            lease=leases.get,
            breaker=lambda _key: breaker_row,
            phone=lambda _id: phone,
        )

    @staticmethod
    def _focus(attempts: list[Any]) -> tuple[Any, Any, str | None]:
        """The attempt the POS follows (the active one, else the latest), the last primary attempt, and the device
        whose breaker the panel shows (the focus's when it is a primary one, else the last primary's)."""
        active = next((a for a in attempts if a.active), None)
        focus = active or (attempts[-1] if attempts else None)
        primaries = [a for a in attempts if a.role == "primary"]
        last_primary = primaries[-1] if primaries else None
        device = (
            focus.device_key
            if focus is not None and focus.role == "primary"
            else (last_primary.device_key if last_primary else None)
        )
        return focus, last_primary, device

    def _progress(
        self,
        sale: Any,
        attempts: list[Any],
        policy: FallbackPolicy,
        backup_provider: str | None,
        *,
        flying: set[int],
        lease: Callable[[str], Any],
        breaker: Callable[[str], Any],
        phone: Callable[[int], Any],
    ) -> PaymentProgress:
        """How the sale's payment stands, from what was read: the sale, its attempts in order, its register's
        policy and backup provider, and the rows of the devices' leases and breakers and of the backup phones
        (``lease``, ``breaker``, ``phone``: by device key or phone id). ``flying``: the attempts this instance
        was running when the reading began. A charge that ended meanwhile is judged by what was read (running
        then, so not orphaned), never by its missing lease."""
        active = next((a for a in attempts if a.active), None)
        focus, last_primary, device = self._focus(attempts)
        pending = sale.status == "pending_payment"
        now = self.clock.now()

        orphaned = False
        if focus is not None and self._may_be_orphaned(focus, flying):
            held = lease(focus.device_key)
            orphaned = held is None or held.attempt_id != focus.id or self.leases.gone(held)
        if orphaned:
            self._wake.set()  # the worker asks the device now rather than at its next pass
        seconds_left: int | None = None
        if focus is not None and focus.state in lc.IN_FLIGHT and focus.active and not orphaned:
            flight = self._flights.get(focus.id)
            if flight is not None:
                left = flight.deadline - self.clock.monotonic()
            else:
                max_wait = (focus.details or {}).get("max_wait_s", policy.max_wait_s)
                left = max_wait - (now - focus.created_at).total_seconds()
            seconds_left = max(0, math.ceil(left))

        backup_offered = bool(
            pending
            and active is None
            and last_primary is not None
            and last_primary.state in lc.NOT_CHARGED
            and last_primary.backup_offered_at is not None
            and backup_provider
            and policy.enabled
        )
        backup_reason = (last_primary.details or {}).get("backup_reason", "") if backup_offered and last_primary else ""
        in_doubt = orphaned or any(a.state in lc.DOUBTFUL for a in attempts)
        needs_decision = any(a.needs_decision and a.state in lc.UNRESOLVED for a in attempts)
        breaker_state = breakers.CLOSED
        if device:
            breaker_state = breakers.view_of(breaker(device), device, policy, self.breaker_times).state
        manual = None
        if focus is not None and focus.state == lc.MANUAL_PENDING:
            backup_phone = phone(focus.backup_phone_id) if focus.backup_phone_id else None
            provider_name = focus.provider_id
            if focus.provider_id in self.registry:
                provider_name = self.registry.get(focus.provider_id).name
            manual = ManualInstructions(
                attempt_id=focus.id,
                provider_id=focus.provider_id,
                provider_name=provider_name,
                amount=focus.amount,
                reference=focus.reference or "",
                phone_name=backup_phone.name if backup_phone else None,
                phone_identifier=backup_phone.identifier if backup_phone else None,
            )
        # The supervisor's "backup anyway" (possible double charge) only once the truth could not be learned: the
        # terminal was asked at least once without an answer, or caja cannot ask it; never while the first question
        # is still to come or under way (after a restart, the charge left behind is asked about at once).
        unanswered = 0
        if active is not None and active.state in lc.DOUBTFUL:
            unanswered = active.reconcile_tries - (1 if active.state == lc.RECONCILING else 0)
        can_override = bool(
            pending
            and active is not None
            and active.role == "primary"
            and backup_provider
            and policy.enabled
            and not orphaned
            and (
                (active.state in lc.DOUBTFUL and (unanswered > 0 or active.needs_decision))
                or (active.state in (lc.SENDING, lc.AWAITING) and seconds_left == 0)
            )
        )
        message = ""
        if focus is not None:
            message = focus.progress_message if focus.state in (*lc.IN_FLIGHT, lc.MANUAL_PENDING) else ""
            message = message or focus.response_message or lc.label(focus.state)
        # A refund sent and not answered yet: still running on the terminal while its lease lives, else unanswered.
        sent_refunds = [a for a in attempts if self._refund_due(a) and _refund_unanswered(a)]
        refunding = []
        for a in sent_refunds:
            held = lease(a.device_key)
            if held is not None and held.attempt_id == a.id and self.leases.alive(held):
                refunding.append(a.id)
        return PaymentProgress(
            sale_id=sale.id,
            sale_status=sale.status,
            paid=sale.status == "paid",
            paid_via=sale.paid_via,
            attempt_id=focus.id if focus else None,
            provider_id=focus.provider_id if focus else None,
            role=focus.role if focus else None,
            state=focus.state if focus else None,
            state_label=lc.label(focus.state) if focus else "Sin cobros",
            message=message,
            seconds_left=seconds_left,
            backup_offered=backup_offered,
            backup_reason=backup_reason,
            backup_provider=backup_provider,
            in_doubt=in_doubt,
            doubt_message=(
                (DECISION_MESSAGE if needs_decision else ORPHAN_MESSAGE if orphaned else DOUBT_MESSAGE)
                if in_doubt
                else ""
            ),
            can_cancel=bool(
                active is not None
                and active.state in (lc.CREATED, lc.SENDING, lc.AWAITING, lc.MANUAL_PENDING)
                and not orphaned
            ),
            can_override=can_override,
            breaker_state=breaker_state,
            manual=manual,
            refund_offered=[a.id for a in attempts if self._refund_due(a)],
            refund_unanswered=[a.id for a in sent_refunds if a.id not in refunding],
            refund_in_progress=refunding,
            attempts=[self._attempt_out(a) for a in attempts],
            needs_decision=needs_decision,
            orphaned=orphaned,
        )

    async def _orphaned(self, s: AsyncSession, a: PaymentAttempt | None) -> bool:
        """Whether ``a`` is a charge on its way to the device that nobody is running any more: its instance died
        (a restart, a kill) and left it behind. It is in doubt until its device is asked, which the worker does
        as soon as the device's lease is free (at once when the dead holder was a process of this machine)."""
        if a is None or not self._may_be_orphaned(a, self._flights):
            return False
        lease = await lease_row(s, a.device_key)
        return lease is None or lease.attempt_id != a.id or self.leases.gone(lease)

    @staticmethod
    def _may_be_orphaned(a: Any, flying: Iterable[int] | dict[int, Any]) -> bool:
        """Whether ``a`` is a charge on its way to the device that this instance is not running (not among
        ``flying``): only then does its device's lease say whether someone still is (``_orphaned``)."""
        return bool(
            a.active and a.state in (lc.SENDING, lc.AWAITING) and a.classification != "pending" and a.id not in flying
        )

    @staticmethod
    def _refund_due(a: PaymentAttempt) -> bool:
        return a.state == lc.REFUND_DUE or (
            a.state in (lc.APPROVED, lc.APPROVED_MANUAL) and bool((a.details or {}).get("refund_offered"))
        )

    @classmethod
    def _attempt_out(cls, a: PaymentAttempt) -> AttemptOut:
        return AttemptOut(
            id=a.id,
            sale_id=a.sale_id,
            provider_id=a.provider_id,
            role=a.role,
            state=a.state,
            state_label=lc.label(a.state),
            classification=a.classification,
            amount=a.amount,
            ticket=a.ticket,
            reference=a.reference,
            response_code=a.response_code,
            response_message=a.response_message or "",
            card_brand=a.card_brand,
            card_type=a.card_type,
            last4=a.last4,
            authorization_code=a.authorization_code,
            created_at=a.created_at,
            finished_at=a.finished_at,
            overridden=a.overridden_by is not None,
            refund_offered=cls._refund_due(a),
            active=a.active,
            needs_decision=bool(a.needs_decision),
            cancel_requested=bool((a.details or {}).get("cancel_requested")),
        )

    # the charge --------------------------------------------------------------------------------------
    async def _run_charge(self, flight: _Flight) -> None:
        attempt_id = flight.attempt_id
        release = True
        try:
            identity = await self._identity_before_first_send(attempt_id)
            async with self.db.session() as s:
                a = await self._attempt(s, attempt_id, lock=True)
                if a.state != lc.CREATED or a.fence != flight.token:
                    return
                call = await self._call(s, a)
                lc.apply(a, lc.decide(lc.AttemptView(state=a.state), lc.Event.SEND), self.clock.now())
                if a.device_identity is None and identity is not None:
                    a.device_identity = identity
                a.sent_at = self.clock.now()

            async def on_progress(p: Progress) -> None:
                flight.received = True
                try:
                    async with self.db.session() as s2:
                        a2 = await self._attempt(s2, attempt_id, lock=True)
                        if a2.fence != flight.token:
                            return  # another instance took this attempt over
                        if lc.apply(a2, lc.decide(lc.AttemptView(state=a2.state), lc.Event.RECEIPT), self.clock.now()):
                            a2.acknowledged_at = a2.acknowledged_at or self.clock.now()
                            a2.progress_message, a2.progress_code = (p.message or "")[:200], p.code
                except Exception:
                    log.warning("could not store progress of attempt %s", attempt_id, exc_info=True)

            charge = asyncio.create_task(
                ask_provider(
                    call.provider.id, "charge", call.provider.charge(call.request, call.settings, call.ctx, on_progress)
                )
            )
            flight.in_call = True
            stop_reason = await self._wait_charge(flight, charge)
            if stop_reason is None:
                outcome, reason, fault = self._charge_result(charge)
            else:
                outcome, reason, fault = await self._stop_charge(flight, call, charge, stop_reason)
            flight.in_call = False
            try:
                await self._record_breaker(call, fault, outcome, reason)
            except Exception:
                log.warning("could not record breaker state for %s", call.request.device_key, exc_info=True)
            state = await self._apply_durably(attempt_id, outcome, source="charge", reason=reason, token=flight.token)
            if state == lc.IN_DOUBT:
                await self._reconcile_now(attempt_id, token=flight.token)
            elif state in (lc.APPROVED, lc.DECLINED):
                await self._identify_if_stale(call)
        except asyncio.CancelledError:
            release = False  # the app is stopping: the restart's recovery takes over this attempt
            raise
        finally:
            self._flights.pop(attempt_id, None)
            if release:
                with contextlib.suppress(Exception):
                    async with self.db.session() as s:
                        await self.leases.release(s, device_key=flight.device_key, token=flight.token)

    async def _wait_charge(self, flight: _Flight, charge: asyncio.Task) -> str | None:
        """Wait for the provider's answer, the max wait (monotonic) or a cancel, whichever comes first: the
        task sleeps until one of them happens (no polling)."""
        cancelled = asyncio.ensure_future(flight.cancel.wait())
        try:
            while True:
                left = flight.deadline - self.clock.monotonic()
                if charge.done():
                    return None
                if flight.cancel.is_set():
                    return "cancelled"
                if left <= 0:
                    return "timeout"
                await asyncio.wait(
                    {charge, cancelled}, timeout=self.clock.timer(left), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            cancelled.cancel()

    @staticmethod
    def _charge_result(charge: asyncio.Task) -> tuple[Outcome, str, bool]:
        """(outcome, reason, transport fault?) of a finished charge."""
        exc = charge.exception()
        if exc is not None:
            return (
                Outcome(kind=OutcomeKind.UNKNOWN, message=f"Error de comunicación: {type(exc).__name__}"),
                "transport_error",
                True,
            )
        outcome: Outcome = charge.result()
        if outcome.kind is OutcomeKind.UNAVAILABLE:
            return outcome, "unavailable", True
        if outcome.kind is OutcomeKind.UNKNOWN:
            return outcome, "transport_error", True
        if outcome.kind is OutcomeKind.DECLINED:
            return outcome, "decline", False
        return outcome, "", False

    async def _stop_charge(
        self, flight: _Flight, call: _Call, charge: asyncio.Task, stop_reason: str
    ) -> tuple[Outcome, str, bool]:
        """Max wait reached or the cashier cancelled: CancelSale first, then whatever the terminal says; an
        unanswered charge ends in doubt (and is reconciled right after)."""
        try:
            async with self.db.session() as s:
                a = await self._attempt(s, flight.attempt_id, lock=True)
                if a.fence == flight.token:
                    if a.state in (lc.SENDING, lc.AWAITING):
                        a.progress_message = "Cancelando en el terminal…"
                    _detail(a, stop_reason=stop_reason, cancel_sent_at=self.clock.now().isoformat())
        except (OSError, DBAPIError):  # the cancel matters more than the note
            log.warning("could not note the cancel of attempt %s", flight.attempt_id)
        cancel_answered = False
        if Capability.CANCEL in capabilities_of(call.provider, call.settings):
            try:
                cancel_out = await asyncio.wait_for(
                    ask_provider(
                        call.provider.id, "cancel", call.provider.cancel(call.request, call.settings, call.ctx)
                    ),
                    self.clock.timer(self.cancel_timeout_s),
                )
                cancel_answered = cancel_out.kind is not OutcomeKind.UNKNOWN
            except Exception:  # noqa: BLE001 - a cancel that fails is just unanswered
                cancel_answered = False
        if not charge.done():
            await asyncio.wait({charge}, timeout=self.clock.timer(self.cancel_grace_s))
        if charge.done():
            outcome, reason, fault = self._charge_result(charge)
            if outcome.kind is not OutcomeKind.APPROVED:
                reason = stop_reason
            return outcome, reason, fault
        charge.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await charge
        fault = not flight.received or not cancel_answered
        return (Outcome(kind=OutcomeKind.UNKNOWN, message="Sin respuesta final del terminal"), stop_reason, fault)

    async def _record_breaker(self, call: _Call, fault: bool, outcome: Outcome, reason: str) -> None:
        events: list[PaymentEvent] = []
        now = self.clock.now()
        async with self.db.session() as s:
            a = await self._attempt(s, call.request.attempt_id)
            if fault:
                opened = await breakers.record_fault(
                    s,
                    device_key=call.request.device_key,
                    venue_id=call.request.venue_id,
                    register_id=call.request.register_id,
                    policy=call.policy,
                    now=now,
                    times=self.breaker_times,
                    description=f"{reason}: {outcome.message}",
                )
                if opened:
                    events.append(self._event("breaker_opened", a, reason=f"{reason}: {outcome.message}"))
            elif outcome.kind in (OutcomeKind.APPROVED, OutcomeKind.DECLINED) and await breakers.record_success(
                s, device_key=call.request.device_key, now=now, times=self.breaker_times
            ):
                events.append(self._event("breaker_closed", a))
        self._emit(events)

    # answers -----------------------------------------------------------------------------------------
    def _offer_backup(self, a: PaymentAttempt, register: Any, outcome: Outcome, reason: str, now: Any) -> None:
        if a.role != "primary" or not register.backup_provider:
            return
        rule = decide(self.rules, outcome, reason, register.policy)
        if rule is not None:
            a.backup_offered_at = now
            _detail(a, backup_reason=rule.description, backup_trigger=rule.name)

    async def apply_outcome(self, attempt_id: int, outcome: Outcome, *, source: str, wait: bool = False) -> str:
        """Apply an answer that arrives on its own (a register agent's late result, a provider notification):
        the same rules as any other answer, late approvals included. Returns the attempt's state. With
        ``wait``, a duplicate to return is refunded through its provider before returning (when it can be)."""
        return await self._apply_durably(attempt_id, outcome, source=source, reason=source, wait=wait)

    async def _not_proof(self, s: AsyncSession, a: PaymentAttempt, source: str) -> tuple[str | None, bool]:
        """Why a "not charged" answer for ``a`` is not proof this time: (reason, permanent?)."""
        if a.state in lc.IN_FLIGHT or a.state in lc.DOUBTFUL:
            sent = a.sent_at or a.created_at
            close = await devices.close_after(s, device_key=a.device_key, identity=a.device_identity, after=sent)
            if close is not None and source != "charge":
                return (
                    "El terminal hizo un cierre de lote después de enviar este cobro: su detalle ya no lo muestra, "
                    "y eso no prueba que no se cobró.",
                    True,
                )
            if self._through_agent(a) and not await _revoke_agent_commands(s, a.id):
                return ("El agente de la caja ya empezó este cobro en el terminal: todavía puede cobrarse.", False)
        return None, False

    @staticmethod
    def _through_agent(a: PaymentAttempt) -> bool:
        from ..agents.service import uses_agent

        return uses_agent({a.provider_id: a.device_settings or {}})

    async def _apply(
        self,
        attempt_id: int,
        outcome: Outcome,
        *,
        source: str,
        reason: str = "",
        token: str | None = None,
        not_proof: str | None = None,
        permanent: bool = False,
    ) -> tuple[str, list[tuple[str, int]]]:
        """Apply one answer to an attempt, once, with its effects, in one transaction. Returns the new state
        and the work to run after the commit."""
        events: list[PaymentEvent] = []
        post: list[tuple[str, int]] = []
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, lock=True)
            view = await self._view(s, a, token=token)
            if outcome.kind is OutcomeKind.UNAVAILABLE and not_proof is None and not view.fenced_out:
                not_proof, permanent = await self._not_proof(s, a, source)
            answer = lc.Answer(
                outcome=outcome, source=source, not_proof=not_proof, tolerance_s=await self._tolerance(s, a)
            )
            classified = lc.classify(view, answer)
            if classified.mismatch == "no_amount":
                log.warning(
                    "attempt %s: %s answered approved without a valid amount (%r): kept in doubt",
                    a.id,
                    a.provider_id,
                    outcome.amount,
                )
            decision = lc.decide(
                view, classified.event, source=source, reason=classified.reason, mismatch=classified.mismatch
            )
            if not decision.changed:
                if classified.event is lc.Event.NO_ANSWER and view.fenced_out:
                    log.info("attempt %s: answer from a superseded writer ignored (%s)", a.id, outcome.kind)
                return a.state, post
            now = self.clock.now()
            if source == "charge" and outcome.occurred_at is not None and a.device_key:
                await devices.note_clock(s, device_key=a.device_key, device_time=outcome.occurred_at, now=now)
            sale = await self._sale(s, a.venue_id, a.sale_id, lock=True)
            self._record_answer(a, outcome, decision, classified, source, reason)
            if classified.event is lc.Event.NO_ANSWER and not_proof and permanent:
                # Why caja cannot find out by itself (another terminal at its address, a batch close since):
                # what the supervisor who resolves it needs to know.
                _detail(a, not_proof=not_proof)
                a.response_message = not_proof[:300]
            lc.apply(a, decision, now)
            if classified.event is lc.Event.NO_ANSWER and (
                permanent or (source in lc.LATER_QUESTIONS and a.reconcile_tries >= DECISION_AFTER_TRIES)
            ):
                decision = lc.Decision(
                    old=decision.old,
                    state=decision.state,
                    event=decision.event,
                    effects=(*decision.effects, lc.Effect.INCIDENT_NEEDS_DECISION),
                    notify=decision.notify,
                    reason=decision.reason,
                )
            post = await self._effects(s, a, sale, decision, outcome, reason, None, events)
            if a.needs_decision and a.state not in lc.DOUBTFUL:
                a.needs_decision = False
                await self._resolve_incidents(
                    s, a, ("payment_needs_decision",), None, f"Resuelto: {lc.label(a.state).lower()} ({source})."
                )
            if decision.notify:
                events.append(
                    self._event(decision.notify, a, reason=classified.reason or reason or outcome.message or "")
                )
            state = a.state
        self._emit(events)
        return state, post

    def _record_answer(
        self,
        a: PaymentAttempt,
        outcome: Outcome,
        decision: lc.Decision,
        classified: lc.Classified,
        source: str,
        reason: str,
    ) -> None:
        """Keep what the provider said (code, message, card data) on the attempt."""
        event = decision.event
        if outcome.reference and not a.provider_reference:
            a.provider_reference = outcome.reference[:80]  # the provider's id for it (an order to ask about)
        if event in (
            lc.Event.CHARGED,
            lc.Event.CHARGED_TWICE,
            lc.Event.DECLINED,
            lc.Event.NOT_CHARGED,
            lc.Event.PENDING,
        ):
            a.response_code = (outcome.code or "")[:20] or None
            a.response_message = (outcome.message or "")[:300]
        if event in (lc.Event.CHARGED, lc.Event.CHARGED_TWICE):
            self._card(a, outcome)
            if decision.old in lc.NOT_CHARGED:
                a.response_message = "Aprobado por el terminal después de darse por no cobrado"
                _detail(a, late_approval_at=self.clock.now().isoformat(), late_approval_source=source)
            a.response_message = a.response_message or "Aprobado"
            if outcome.occurred_at is not None:
                _detail(a, device_time=outcome.occurred_at.isoformat())
        elif event is lc.Event.DECLINED:
            a.response_message = a.response_message or "Rechazado"
        elif event is lc.Event.NOT_CHARGED:
            if source in lc.LATER_QUESTIONS:
                a.response_message = "El terminal no tiene registro de la venta: no se cobró."
            a.response_message = a.response_message or "No se cobró"
        elif event is lc.Event.NO_ANSWER:
            a.progress_message = ""
            if classified.mismatch == "amount":
                a.reported_amount = outcome.amount
            if classified.mismatch == "ticket":
                _detail(a, foreign_ticket=outcome.ticket)
            if classified.reason and classified.reason != outcome.message:
                _detail(a, not_proof=classified.reason)
                a.response_message = classified.reason[:300]
            if not (a.details or {}).get("stop_reason"):
                _detail(a, stop_reason=reason or source)
        elif event is lc.Event.PENDING:
            a.acknowledged_at = a.acknowledged_at or self.clock.now()
            a.progress_message = (outcome.message or "Esperando la confirmación del proveedor")[:200]

    async def _effects(
        self,
        s: AsyncSession,
        a: PaymentAttempt,
        sale: Sale,
        decision: lc.Decision,
        outcome: Outcome,
        reason: str,
        user_id: int | None,
        events: list[PaymentEvent],
    ) -> list[tuple[str, int]]:
        """Run a decision's effects inside the transaction; returns the work for after the commit."""
        post: list[tuple[str, int]] = []
        now = self.clock.now()
        E = lc.Effect
        for effect in decision.effects:
            if effect is E.PAY_SALE:
                from ..sales.service import mark_paid

                await mark_paid(
                    s, sale_id=sale.id, provider_id=a.provider_id, method="card", paid_via=a.role, user_id=user_id
                )
                _detail(a, paid_sale=True)
            elif effect is E.CANCEL_WAITING_SIBLINGS:
                others = (
                    await s.execute(
                        select(PaymentAttempt).where(
                            PaymentAttempt.sale_id == sale.id,
                            PaymentAttempt.id != a.id,
                            PaymentAttempt.state.in_((lc.MANUAL_PENDING, lc.CREATED)),
                        )
                    )
                ).scalars()
                for other in list(others):
                    lc.apply(other, lc.decide(lc.AttemptView(state=other.state), lc.Event.SUPERSEDED), now)
                    other.response_message = f"Ya pagado por el intento #{a.id}: no cobre en este medio."
            elif effect is E.RETURN_DUPLICATE:
                _detail(a, refund_offered=True, paid_sale=False)
                post.append(("return", a.id))
            elif effect is E.OFFER_BACKUP:
                register = await self._register(s, a.venue_id, a.register_id)
                fallback_reason = (a.details or {}).get("stop_reason") or reason
                if decision.event is lc.Event.NOT_CHARGED:
                    offered = Outcome(kind=OutcomeKind.UNAVAILABLE)
                elif decision.event is lc.Event.BLOCKED:
                    offered, fallback_reason = Outcome(kind=OutcomeKind.UNAVAILABLE), "unavailable"
                else:
                    offered = outcome
                self._offer_backup(a, register, offered, fallback_reason, now)
            elif effect is E.RELEASE_DEVICE:
                await self.leases.release(s, device_key=a.device_key, token=a.fence)
            elif effect is E.RECONCILE_NOW:
                self._schedule(a, 0)
            elif effect is E.RECONCILE_LATER:
                self._schedule(a, self._backoff(max(1, a.reconcile_tries)))
            elif effect in _INCIDENTS:
                opens = _INCIDENTS[effect]
                if effect is E.INCIDENT_NEEDS_DECISION:
                    a.needs_decision = True
                if opens.once and (a.details or {}).get(opens.note):
                    continue
                description = _incident_text(effect, a, sale, decision, outcome)
                incident = await self._incident(s, a, sale, opens.kind, description, user_id if opens.by_user else None)
                _detail(a, **{opens.note: incident})
                events.append(self._event("incident", a, reason=opens.reason))
        return post

    def _after(self, post: list[tuple[str, int]]) -> None:
        """Work that follows a commit: return a duplicate through its provider."""
        for kind, attempt_id in post:
            if kind == "return":
                self._spawn(self._return_duplicate(attempt_id), name=f"caja-return-{attempt_id}")

    async def _apply_durably(
        self,
        attempt_id: int,
        outcome: Outcome,
        *,
        source: str,
        reason: str = "",
        token: str | None = None,
        not_proof: str | None = None,
        permanent: bool = False,
        wait: bool = False,
    ) -> str:
        """``_apply``, retried while the database is unavailable: the provider's answer is kept (in memory, and
        in the terminal's own memory for reconciliation if this process dies) and applied once it is back."""
        delay = 0.1
        while True:
            try:
                state, post = await self._apply(
                    attempt_id,
                    outcome,
                    source=source,
                    reason=reason,
                    token=token,
                    not_proof=not_proof,
                    permanent=permanent,
                )
            except (OSError, DBAPIError) as exc:
                if isinstance(exc, (IntegrityError, ProgrammingError, DataError)):
                    raise
                log.warning(
                    "database unavailable applying attempt %s (%s); retrying in %.1fs",
                    attempt_id,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if wait:
                for kind, post_id in post:
                    if kind == "return":
                        await self._return_duplicate(post_id)
            else:
                self._after(post)
            return state

    async def _return_duplicate(self, attempt_id: int) -> None:
        """A duplicate charge: refund it through its provider when the provider can (the device is free and the
        provider answers APPROVED); otherwise it stays a supervisor task ("devolver $X en el terminal")."""
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, lock=True)
            if a.state != lc.REFUND_DUE or _refund_unanswered(a):
                return  # nothing to return, or a refund already sent (its answer is the supervisor's to check)
            try:
                call = await self._call(s, a)
            except CannotAsk as exc:
                _detail(a, refund_error=str(exc)[:200])
                return
            caps = capabilities_of(call.provider, call.settings)
            if Capability.MANUAL in caps or Capability.REFUND not in caps:
                _detail(a, refund_error="El proveedor no permite anular desde caja: devuelva en el dispositivo.")
                return
            try:
                async with s.begin_nested():
                    token = (
                        await self.leases.acquire(s, device_key=a.device_key, attempt_id=a.id, purpose="refund")
                    ).token
            except Busy:
                _detail(a, refund_error="Terminal ocupado: la anulación queda para el supervisor.")
                return
            _detail(a, refund_sent_at=self.clock.now().isoformat())  # committed with the lease, before the send
        try:
            outcome = await asyncio.wait_for(
                ask_provider(call.provider.id, "refund", call.provider.refund(call.request, call.settings, call.ctx)),
                self.clock.timer(self.status_timeout_s),
            )
        except Exception as exc:  # noqa: BLE001
            outcome = Outcome(kind=OutcomeKind.UNKNOWN, message=f"Sin respuesta: {type(exc).__name__}")
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, lock=True)
            await self.leases.release(s, device_key=a.device_key, token=token)
            if outcome.kind is OutcomeKind.APPROVED and a.state == lc.REFUND_DUE:
                lc.apply(a, lc.decide(lc.AttemptView(state=a.state), lc.Event.REFUND_DONE), self.clock.now())
                _detail(a, refund_offered=False, refund_sent_at=None, refund_manual=False, refunded_automatically=True)
                await self._resolve_incidents(
                    s, a, ("double_charge_suspected",), None, "Devuelto automáticamente por el proveedor"
                )
                events.append(self._event("refunded", a, reason="Cobro duplicado devuelto por el proveedor"))
            elif a.state == lc.REFUND_DUE:
                _refund_answered(a, outcome)
        self._emit(events)

    @staticmethod
    def _card(a: PaymentAttempt, outcome: Outcome) -> None:
        card = outcome.card
        if card is None:
            return
        a.card_brand = (card.brand or None) and card.brand[:20]
        a.card_type = (card.card_type or None) and card.card_type[:20]
        a.last4 = card.last4[-4:] if card.last4 else None
        a.authorization_code = (card.authorization_code or None) and card.authorization_code[:20]
        a.operation_id = (card.operation_id or None) and card.operation_id[:40]
        a.terminal_id = (card.terminal_id or None) and card.terminal_id[:40]
        if outcome.reference:
            a.provider_reference = outcome.reference[:80]

    async def _incident(
        self, s: AsyncSession, a: PaymentAttempt, sale: Sale | None, kind: str, description: str, user_id: int | None
    ) -> int:
        from ..audit.service import open_incident

        if sale is None:
            sale = await self._sale(s, a.venue_id, a.sale_id)
        return await open_incident(
            s,
            venue_id=a.venue_id,
            kind=kind,
            description=description,
            jornada_id=sale.jornada_id,
            session_id=a.session_id,
            register_id=a.register_id,
            attempt_id=a.id,
            user_id=user_id,
        )

    async def _resolve_incidents(
        self, s: AsyncSession, a: PaymentAttempt, kinds: tuple[str, ...], user_id: int | None, how: str
    ) -> None:
        from ..audit.models import Incident

        rows = (
            await s.execute(
                select(Incident).where(
                    Incident.attempt_id == a.id, Incident.kind.in_(kinds), Incident.resolved.is_(False)
                )
            )
        ).scalars()
        for incident in list(rows):
            incident.resolved, incident.resolved_by, incident.resolved_at = True, user_id, self.clock.now()
            incident.resolution = how[:1000]

    # reconciliation --------------------------------------------------------------------------------
    async def reconcile(self, attempt_id: int) -> str:
        """Ask the provider what happened to this attempt's ticket (unless another instance is doing it)."""
        return await self._reconcile_now(attempt_id)

    async def _reconcile_now(self, attempt_id: int, *, token: str | None = None) -> str:
        if attempt_id in self._reconciling or attempt_id in self._resolving:
            return lc.RECONCILING
        if token is None and attempt_id in self._flights:
            return lc.AWAITING  # its charge is still running here
        self._reconciling[attempt_id] = asyncio.Event()
        acquired: str | None = None
        events: list[PaymentEvent] = []
        try:
            async with self.db.session() as s:
                a = await self._attempt(s, attempt_id, lock=True)
                if a.state not in (*lc.IN_FLIGHT, *lc.DOUBTFUL):
                    return a.state
                if token is None:
                    lease = await lease_row(s, a.device_key)
                    if lease is not None and lease.attempt_id == a.id and self.leases.alive(lease):
                        return a.state  # its charge (or another reconciliation) is running somewhere
                now = self.clock.now()
                if a.state == lc.CREATED:
                    # Never sent: nothing to ask.
                    lc.apply(a, lc.decide(await self._view(s, a), lc.Event.ORPHANED), now)
                    a.response_message = "No se envió (el proceso se detuvo antes)."
                    await self.leases.release(s, device_key=a.device_key, token=a.fence)
                    self._offer_backup(
                        a,
                        await self._register(s, a.venue_id, a.register_id),
                        Outcome(kind=OutcomeKind.UNAVAILABLE),
                        "unavailable",
                        now,
                    )
                    return a.state
                try:
                    call = await self._call(s, a)
                except CannotAsk as exc:
                    decision = lc.decide(await self._view(s, a), lc.Event.CANNOT_ASK, reason=str(exc))
                    if lc.apply(a, decision, now):
                        a.progress_message = ""
                        a.response_message = str(exc)[:300]
                        sale = await self._sale(s, a.venue_id, a.sale_id)
                        await self._effects(
                            s, a, sale, decision, Outcome(kind=OutcomeKind.UNKNOWN), str(exc), None, events
                        )
                    elif a.state in lc.IN_FLIGHT:
                        lc.apply(a, lc.decide(await self._view(s, a), lc.Event.ORPHANED), now)
                    self._schedule(a, self.blocked_backoff_s)
                    return a.state
                pending = a.state == lc.AWAITING and a.classification == "pending"
                if pending:
                    # Accepted by the provider (an order waiting for its webhook): asking about it does not occupy
                    # a device, and a new sale may go on meanwhile.
                    token = a.fence
                elif token is None or not self.leases.holds(a.device_key, token):
                    try:
                        async with s.begin_nested():
                            taken = await self.leases.acquire(
                                s, device_key=a.device_key, attempt_id=a.id, purpose="reconcile"
                            )
                        acquired = token = taken.token
                    except Busy:
                        self._schedule(a, self._backoff(1))
                        return a.state
                a.fence = token
                if a.state in lc.IN_FLIGHT and a.classification != "pending":
                    # Its instance died (or stopped) with the charge on the device: in doubt, then asked.
                    decision = lc.decide(await self._view(s, a), lc.Event.ORPHANED)
                    lc.apply(a, decision, now)
                    _detail(a, stop_reason=(a.details or {}).get("stop_reason") or "orphaned")
                    events.append(self._event("in_doubt", a, reason="La instancia que cobraba se detuvo"))
                lc.apply(a, lc.decide(await self._view(s, a), lc.Event.RECONCILE), now)
                a.reconcile_tries += 1
                a.progress_message = "Consultando al terminal si se cobró…"
                identity = a.device_identity
                subject = types.SimpleNamespace(
                    id=a.id,
                    device_key=a.device_key,
                    device_identity=a.device_identity,
                    venue_id=a.venue_id,
                    register_id=a.register_id,
                    provider_id=a.provider_id,
                )
            self._emit(events)
            events = []
            not_proof, permanent = await self._check_identity(call, identity)
            if Capability.STATUS in capabilities_of(call.provider, call.settings):
                try:
                    outcome = await asyncio.wait_for(
                        ask_provider(
                            call.provider.id, "status", call.provider.status(call.request, call.settings, call.ctx)
                        ),
                        self.clock.timer(self.status_timeout_s),
                    )
                except Exception as exc:  # noqa: BLE001 - an unanswered question keeps the attempt in doubt
                    outcome = Outcome(
                        kind=OutcomeKind.UNKNOWN, code=UNREACHABLE, message=f"Sin respuesta: {type(exc).__name__}"
                    )
            else:
                outcome = Outcome(kind=OutcomeKind.UNKNOWN, message="El proveedor no permite consultar el estado.")
            if outcome.kind is OutcomeKind.UNKNOWN and outcome.code == UNREACHABLE:
                # caja lost sight of the device after the send: a close on its keypad meanwhile would go unseen.
                async with self.db.session() as s:
                    a = await self._attempt(s, attempt_id)
                    if not (a.details or {}).get("unreached_at"):
                        _detail(a, unreached_at=self.clock.now().isoformat())
            if outcome.kind is OutcomeKind.UNAVAILABLE and not_proof is None:
                # "Not in the device's list" proves nothing if the list was cut by a close caja never ran.
                not_proof, permanent = await terminal_ops.close_by_the_device(
                    self.db,
                    call.provider,
                    call.settings,
                    call.ctx,
                    subject,
                    clock=self.clock,
                    timeout_s=self.status_timeout_s,
                )
            return await self._apply_durably(
                attempt_id,
                outcome,
                source="status",
                reason="reconcile",
                token=token,
                not_proof=not_proof,
                permanent=permanent,
            )
        finally:
            self._emit(events)
            # The device is free before anyone waiting for this question (a supervisor resolving the attempt)
            # is told the question is over.
            if acquired is not None:
                with contextlib.suppress(Exception):
                    async with self.db.session() as s:
                        a = await self._attempt(s, attempt_id)
                        await self.leases.release(s, device_key=a.device_key, token=acquired)
            done = self._reconciling.pop(attempt_id, None)
            if done is not None:
                done.set()

    async def _identity_before_first_send(self, attempt_id: int) -> str | None:
        """The identity of a device caja has never identified, asked before its first charge is sent: if that
        charge ends in doubt, reconciliation must be able to tell the device it went to from another one put
        at the same address (a spare, or a terminal swapped behind the register's agent: the question then goes
        through the agent as a fenced command like any other). None when the device is known, cannot say, or
        does not answer (then the charge goes on as before)."""
        async with self.db.reader() as s:
            a = await self._attempt(s, attempt_id)
            if a.state != lc.CREATED or a.device_identity is not None:
                return None
            call = await self._call(s, a)
        identify = getattr(call.provider, "identify", None)
        if Capability.IDENTIFY not in capabilities_of(call.provider, call.settings) or not callable(identify):
            return None
        try:
            found: DeviceIdentity = await asyncio.wait_for(
                identify(call.settings, call.ctx), self.clock.timer(self.status_timeout_s)
            )
        except Exception:  # noqa: BLE001 - the charge itself will meet the same device
            log.info("device %s did not say who it is before its first charge", call.request.device_key)
            return None
        async with self.db.session() as s:
            await devices.remember_identity(
                s,
                provider_id=call.provider.id,
                device_key=call.request.device_key,
                identity=found,
                now=self.clock.now(),
            )
        return found.identity

    async def _identify_if_stale(self, call: _Call) -> None:
        """After a sale the device answered (its lease still held), ask it who it is when caja never asked or
        asked long ago: later attempts on it record its identity, and its clock difference is measured."""
        identify = getattr(call.provider, "identify", None)
        if Capability.IDENTIFY not in capabilities_of(call.provider, call.settings) or not callable(identify):
            return
        key = call.request.device_key
        now = self.clock.now()
        async with self.db.reader() as s:
            known = await devices.known_device(s, key)
        if (
            known is not None
            and known.identified_at is not None
            and (now - known.identified_at).total_seconds() < self.identify_every_s
        ):
            return
        try:
            found: DeviceIdentity = await asyncio.wait_for(
                identify(call.settings, call.ctx), self.clock.timer(self.status_timeout_s)
            )
        except Exception:  # noqa: BLE001 - asked again after the next sale
            log.info("device %s did not say who it is", key)
            return
        async with self.db.session() as s:
            await devices.remember_identity(s, provider_id=call.provider.id, device_key=key, identity=found, now=now)

    async def _check_identity(self, call: _Call, expected: str | None) -> tuple[str | None, bool]:
        """Before trusting a device's "never seen that ticket", make sure it is the device the attempt was sent
        to (when the provider can tell): (why not proof, permanent?)."""
        caps = capabilities_of(call.provider, call.settings)
        identify = getattr(call.provider, "identify", None)
        if Capability.IDENTIFY not in caps or not callable(identify) or not expected:
            return None, False
        try:
            found: DeviceIdentity = await asyncio.wait_for(
                identify(call.settings, call.ctx), self.clock.timer(self.status_timeout_s)
            )
        except Exception as exc:  # noqa: BLE001
            return f"El terminal no dijo quién es ({type(exc).__name__}): su respuesta no es prueba.", False
        if found.identity != expected:
            return (
                f"En la dirección de este cobro responde otro terminal ({found.label or found.identity}): que no "
                f"conozca el ticket no prueba nada.",
                True,
            )
        return None, False

    async def run_once(self, *, recovery: bool = False) -> None:
        """One pass of the worker: orphaned attempts → in doubt, due reconciliations, breaker probes."""
        async with self.db.reader() as s:
            # Attempts first, then leases: an attempt committed with its lease is never seen without it.
            rows = list(
                (
                    await s.execute(
                        select(PaymentAttempt)
                        .where(PaymentAttempt.state.in_((*lc.IN_FLIGHT, *lc.DOUBTFUL)))
                        .order_by(PaymentAttempt.id)
                    )
                ).scalars()
            )
            lease_rows = await all_leases(s)
            self.leases.observe(lease_rows)
        leases = {row.device_key: row for row in lease_rows}
        open_ids = {a.id for a in rows}
        for attempt_id in [k for k in self._due if k not in open_ids]:
            del self._due[attempt_id]
        due: dict[str, list[int]] = {}
        for a in rows:
            if a.id in self._flights or a.id in self._reconciling:
                continue
            lease = leases.get(a.device_key)
            held_elsewhere = lease is not None and lease.attempt_id == a.id and self.leases.alive(lease)
            if a.state in lc.IN_FLIGHT:
                if held_elsewhere:
                    continue  # alive on some instance
                if a.classification == "pending" and not recovery and not self._is_due(a.id):
                    continue  # accepted by the provider: asked again at its time
            elif not (recovery or self._is_due(a.id)) or held_elsewhere:
                continue
            due.setdefault(a.device_key, []).append(a.id)

        async def run_device(ids: list[int]) -> None:
            for attempt_id in ids:
                try:
                    await self._reconcile_now(attempt_id)
                except Exception:
                    log.exception("reconciliation of attempt %s failed", attempt_id)

        await asyncio.gather(*(run_device(ids) for ids in due.values()))
        await self._probe_due()

    async def _worker_loop(self) -> None:
        backoff = DatabaseBackoff("reconciliation", base_s=self.worker_interval_s)
        while self._running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.clock.timer(backoff.delay_s or self.worker_interval_s))
            if not self._running:
                return
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not backoff.failed(exc):  # the database is down: one line per back-off step
                    log.exception("payments worker pass failed")
                WORKERS.beat(RECONCILIATION_WORKER, error=f"{type(exc).__name__}: {exc}"[:300])
            else:
                backoff.succeeded()
                WORKERS.beat(RECONCILIATION_WORKER)

    async def _heart_loop(self) -> None:
        """Renew this instance's leases every ``beat_s`` (one statement for all), and pass cancels that arrived
        on other instances to the charges running here."""
        outage = False
        while self._running:
            await asyncio.sleep(self.clock.timer(self.leases.beat_s))
            try:
                async with self.db.session() as s:
                    result = await self.leases.beat(s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not database_unavailable(exc):
                    log.warning("lease heartbeat failed", exc_info=True)
                elif not outage:  # the database is down: one line for the whole outage, not one per beat
                    log.warning(
                        "lease heartbeat: la base de datos no responde; se reintenta cada %.0f s", self.leases.beat_s
                    )
                outage = outage or database_unavailable(exc)
                continue
            if outage:
                log.info("lease heartbeat: la base de datos responde de nuevo")
                outage = False
            for flight in list(self._flights.values()):
                if flight.token in result.cancel_requested:
                    flight.cancel.set()
                if flight.token in result.lost:
                    log.warning("attempt %s: this instance lost the device's lease", flight.attempt_id)

    async def heartbeat(self) -> None:
        """One lease renewal now (tests and shutdown use it)."""
        async with self.db.session() as s:
            await self.leases.beat(s)

    # breaker -----------------------------------------------------------------------------------------
    async def _probe_due(self) -> None:
        async with self.db.reader() as s:
            rows = await breakers.open_rows(s)
            targets: list[tuple[str, str]] = []
            for row in rows:
                last = await self._last_attempt_on(s, row.device_key)
                if last is None:
                    continue
                register = await self._register(s, last.venue_id, last.register_id)
                if row.state == breakers.HALF_OPEN:
                    # A probe whose instance died: open again so a new probe can run.
                    if self.breaker_times.age(row.device_key, row.generation) > self.health_timeout_s * 3:
                        async with self.db.session() as w:
                            await breakers.probe_failed(
                                w,
                                device_key=row.device_key,
                                now=self.clock.now(),
                                times=self.breaker_times,
                                description="Prueba interrumpida",
                            )
                    continue
                view = breakers.view_of(row, row.device_key, register.policy, self.breaker_times)
                if view.probe_due:
                    targets.append((row.device_key, last.provider_id))
        for device_key, provider_id in targets:
            await self.probe(device_key, provider_id)

    @staticmethod
    async def _last_attempt_on(s: AsyncSession, device_key: str) -> PaymentAttempt | None:
        return (
            await s.execute(
                select(PaymentAttempt)
                .where(PaymentAttempt.device_key == device_key)
                .order_by(PaymentAttempt.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    async def probe(self, device_key: str, provider_id: str) -> str:
        """Half-open probe of an open breaker: the provider's ``health()`` (a Poll), never a sale."""
        now = self.clock.now()
        taken: str | None = None
        async with self.db.session() as s:
            last = await self._last_attempt_on(s, device_key)
            if last is None:
                return breakers.CLOSED
            register = await self._register(s, last.venue_id, last.register_id)
            row = await breakers.row(s, device_key)
            view = breakers.view_of(row, device_key, register.policy, self.breaker_times)
            if row is None or not view.probe_due:
                return view.state
            if not await breakers.claim_probe(
                s, device_key=device_key, generation=row.generation, now=now, times=self.breaker_times
            ):
                return view.state
            try:
                async with s.begin_nested():
                    taken = (
                        await self.leases.acquire(s, device_key=device_key, attempt_id=None, purpose="probe")
                    ).token
            except Busy:
                await breakers.probe_failed(
                    s, device_key=device_key, now=now, times=self.breaker_times, description="Terminal ocupado"
                )
                return breakers.OPEN
            try:
                provider, settings, raw = self._device_settings(last, register)
            except CannotAsk as exc:
                await self.leases.release(s, device_key=device_key, token=taken)
                await breakers.probe_failed(
                    s, device_key=device_key, now=now, times=self.breaker_times, description=str(exc)
                )
                return breakers.OPEN
            ctx = self._ctx(register, provider.id, raw)
        try:
            outcome = await asyncio.wait_for(
                ask_provider(provider.id, "health", provider.health(settings, ctx)),
                self.clock.timer(self.health_timeout_s),
            )
        except Exception as exc:  # noqa: BLE001
            outcome = Outcome(kind=OutcomeKind.UNKNOWN, message=f"Sin respuesta: {type(exc).__name__}")
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            await self.leases.release(s, device_key=device_key, token=taken)
            if outcome.kind is OutcomeKind.APPROVED:
                await breakers.record_success(s, device_key=device_key, now=self.clock.now(), times=self.breaker_times)
                state = breakers.CLOSED
                events.append(self._event("breaker_closed", last, reason="Prueba exitosa"))
            else:
                await breakers.probe_failed(
                    s,
                    device_key=device_key,
                    now=self.clock.now(),
                    times=self.breaker_times,
                    description=outcome.message or outcome.kind.value,
                )
                state = breakers.OPEN
        self._emit(events)
        return state

    async def breaker_states(self, venue_id: int) -> list[breakers.BreakerView]:
        """Every device's breaker for ``/health`` and the POS."""
        async with self.db.reader() as s:
            rows = await breakers.all_states(s, venue_id)
            return [
                breakers.BreakerView(
                    device_key=r.device_key,
                    state=r.state,
                    failure_count=r.failure_count,
                    opened_at=r.opened_at,
                    last_failure=r.last_failure,
                    probe_due=False,
                )
                for r in rows
            ]


__all__ = [
    "DECISION_MESSAGE",
    "DOUBT_MESSAGE",
    "ORPHAN_MESSAGE",
    "RECONCILIATION_WORKER",
    "CajaError",
    "CannotAsk",
    "PaymentOrchestrator",
    "capabilities_of",
    "describe",
    "supervisor_items",
    "unresolved_attempt_summaries",
    "unresolved_attempts",
]
