"""Payment orchestration: take a sale from "pending payment" to "paid" through the register's primary provider,
fall back to the backup only when it is safe, and never charge twice, whatever fails.

The web layer calls one method per user action (``start_payment``, ``poll``, ``cancel``, ``start_backup``,
``confirm_manual``, ``override_to_backup``, ``refund_attempt``). Provider calls run in background tasks owned by
the orchestrator; the browser only polls. The rules are those of PAYMENTS.md §1:

* write-ahead: the attempt (with its durable ticket) is committed before the provider is called;
* one command in flight per device (``DeviceLease``), "Terminal ocupado" at once otherwise;
* max wait (monotonic clock): cancel, then reconcile; the backup is offered only once the primary attempt is
  provably not charged (declined / failed_not_sent) and a policy trigger matches;
* a supervisor override keeps the primary in doubt and reconciled; a late approval raises an incident and
  offers the refund;
* crash recovery at start-up and a reconciliation worker with back-off;
* a circuit breaker per device, persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Self

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import SYSTEM_CLOCK, Clock
from ..db import models as _all_models  # noqa: F401 - every mapped table, for foreign keys
from ..errors import Busy, Conflict, Forbidden, NotFound, ValidationFailed
from ..fallback.engine import collect_rules, decide
from ..fallback.policy import FallbackPolicy
from ..money import format_clp, parse_amount
from ..ops.workers import WORKERS
from ..plugins import call_event
from ..providers import (
    Capability,
    CardData,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    PaymentProvider,
    Progress,
    ProviderContext,
    ProviderRegistry,
    validate_settings,
)
from ..registers.models import BackupPhone
from ..sales.models import Sale
from ..users.models import User
from . import breaker as breakers
from . import states as st
from .events import EventKind, PaymentEvent
from .leases import acquire_lease, extend_lease, live_lease, release_lease
from .models import BreakerState, PaymentAttempt
from .schemas import AttemptOut, ManualInstructions, PaymentProgress
from .tickets import allocate_ticket

log = logging.getLogger("caja.payments")

#: The name under which the reconciliation worker reports its liveness to /health.
RECONCILIATION_WORKER = "reconciliation"

DOUBT_MESSAGE = (
    "No sabemos aún si se cobró: se está consultando al terminal. No cobre de nuevo ni cambie de "
    "medio de pago sin autorización de supervisor."
)
AUTH_CODE = re.compile(r"[A-Z0-9]{6}")
LAST4 = re.compile(r"[0-9]{4}")
BRAND = re.compile(r"[A-Za-zÁÉÍÓÚáéíóúñÑ ]{2,20}")
CARD_TYPES = {
    "debito": "debito",
    "débito": "debito",
    "db": "debito",
    "credito": "credito",
    "crédito": "credito",
    "cr": "credito",
    "prepago": "prepago",
}


@dataclass
class _Flight:
    """A provider charge this instance is running."""

    attempt_id: int
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


def _detail(a: PaymentAttempt, **values: Any) -> None:
    a.details = {**(a.details or {}), **values}


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


async def unresolved_attempt_summaries(s: AsyncSession, session_id: int) -> list[str]:
    """One line per attempt of the session that is not resolved yet (the session cannot close while any)."""
    rows = (
        await s.execute(
            select(PaymentAttempt)
            .where(PaymentAttempt.session_id == session_id, PaymentAttempt.state.in_(st.UNRESOLVED))
            .order_by(PaymentAttempt.id)
        )
    ).scalars()
    return [
        f"Intento #{a.id} de la venta #{a.sale_id} ({a.provider_id}, {format_clp(a.amount)}): "
        f"{st.LABELS.get(a.state, a.state).lower()}"
        for a in rows
    ]


async def unresolved_attempts(s: AsyncSession, session_id: int) -> list[PaymentAttempt]:
    return list(
        (
            await s.execute(
                select(PaymentAttempt)
                .where(PaymentAttempt.session_id == session_id, PaymentAttempt.state.in_(st.UNRESOLVED))
                .order_by(PaymentAttempt.id)
            )
        ).scalars()
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
        tick_s: float = 0.05,
        worker_interval_s: float = 1.0,
        cancel_timeout_s: float = 10.0,
        cancel_grace_s: float = 0.5,
        status_timeout_s: float = 10.0,
        health_timeout_s: float = 10.0,
        reconcile_backoff_s: tuple[float, float] = (1.0, 60.0),
        lease_margin_s: float = 90.0,
        remote_cancel_check_s: float = 1.0,
        stop_grace_s: float = 2.0,
        audit_listener: bool = True,
    ) -> None:
        self.db = db
        self.registry = registry
        self.pm = pm
        self.clock = clock
        self.instance_id = instance_id
        self.agent_channel_factory = agent_channel_factory
        self.tick_s = tick_s
        self.worker_interval_s = worker_interval_s
        self.cancel_timeout_s = cancel_timeout_s
        self.cancel_grace_s = cancel_grace_s
        self.status_timeout_s = status_timeout_s
        self.health_timeout_s = health_timeout_s
        self.reconcile_backoff_s = reconcile_backoff_s
        self.lease_margin_s = lease_margin_s
        self.remote_cancel_check_s = remote_cancel_check_s
        self.stop_grace_s = stop_grace_s
        self.rules = collect_rules(pm)
        self._flights: dict[int, _Flight] = {}
        self._tasks: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        self._running = False
        self._wake = asyncio.Event()
        self._audit_listener_enabled = audit_listener
        self._audit: Any = None
        self._reconciling: set[int] = set()

    # life cycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Crash recovery, then the reconciliation worker. Every attempt left in sending/awaiting/in_doubt goes
        through the provider's ``status()`` before its device takes a new sale."""
        if self._audit_listener_enabled:
            from .audit_listener import PaymentAuditListener

            self._audit = PaymentAuditListener.install(self.pm, self.db)
        async with self.db.session() as s:
            # Leases of this instance's previous life: whatever it was doing died with it.
            from .models import DeviceLease

            owned = (await s.execute(select(DeviceLease).where(DeviceLease.owner == self.instance_id))).scalars()
            for lease in list(owned):
                await s.delete(lease)
        self._running = True
        WORKERS.register(RECONCILIATION_WORKER, interval_s=self.worker_interval_s)
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
        tasks = [t for t in [self._worker, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._flights.clear()
        self._worker = None
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

    def _ctx(self, register: Any) -> ProviderContext:
        agent = self.agent_channel_factory(register) if self.agent_channel_factory else None
        return ProviderContext(register_id=register.id, venue_id=register.venue_id, agent=agent)

    async def _call(self, s: AsyncSession, a: PaymentAttempt) -> _Call:
        register = await self._register(s, a.venue_id, a.register_id)
        provider = self.registry.get(a.provider_id)
        settings = self._settings(register, provider)
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
            ctx=self._ctx(register),
            policy=register.policy,
            register=register,
        )

    async def _sale(self, s: AsyncSession, venue_id: int, sale_id: int, *, lock: bool = False) -> Sale:
        stmt = select(Sale).where(Sale.id == sale_id, Sale.venue_id == venue_id)
        if lock:
            stmt = stmt.with_for_update()
        sale = (await s.execute(stmt)).scalar_one_or_none()
        if sale is None:
            raise NotFound("La venta no existe.", code="sale.not_found")
        return sale

    async def _attempt(
        self, s: AsyncSession, attempt_id: int, *, venue_id: int | None = None, lock: bool = False
    ) -> PaymentAttempt:
        stmt = select(PaymentAttempt).where(PaymentAttempt.id == attempt_id)
        if venue_id is not None:
            stmt = stmt.where(PaymentAttempt.venue_id == venue_id)
        if lock:
            stmt = stmt.with_for_update()
        attempt = (await s.execute(stmt)).scalar_one_or_none()
        if attempt is None:
            raise NotFound("El intento de pago no existe.", code="payment.attempt_not_found")
        return attempt

    async def _active_attempt(self, s: AsyncSession, sale_id: int) -> PaymentAttempt | None:
        return (
            await s.execute(
                select(PaymentAttempt).where(PaymentAttempt.sale_id == sale_id, PaymentAttempt.active.is_(True))
            )
        ).scalar_one_or_none()

    def _lease_ttl(self, policy: FallbackPolicy) -> float:
        return (
            policy.max_wait_s
            + self.cancel_timeout_s
            + self.cancel_grace_s
            + self.status_timeout_s
            + self.lease_margin_s
        )

    def _backoff(self, tries: int) -> float:
        base, cap = self.reconcile_backoff_s
        return min(cap, base * (2 ** max(0, tries - 1)))

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
        events: list[PaymentEvent] = []
        flight: _Flight | None = None
        probe_device: tuple[str, str] | None = None
        reconcile_ids: list[int] = []
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
                amount = self._check_amount(sale.total, provider)
                device_key = provider.device_key(settings, register.code)
                now = self.clock.now()
                blocked_reason, blocked_message = None, ""
                pending_on_device = await self._unresolved_on_device(s, device_key, now, exclude_sale=sale.id)
                breaker_view = await breakers.view(s, device_key, register.policy, now)
                if pending_on_device:
                    blocked_reason = "unavailable"
                    blocked_message = "El terminal tiene un cobro sin resolver (se está consultando): no se envió nada."
                    reconcile_ids = [a.id for a in pending_on_device]
                elif breaker_view.blocks_sales:
                    blocked_reason = "unavailable"
                    blocked_message = "Terminal fuera de servicio (corte de protección abierto): no se envió nada."
                    if breaker_view.probe_due:
                        probe_device = (device_key, provider.id)
                ticket = await allocate_ticket(s, device_key)
                attempt = PaymentAttempt(
                    venue_id=venue_id,
                    sale_id=sale.id,
                    session_id=sale.session_id,
                    register_id=sale.register_id,
                    provider_id=provider.id,
                    device_key=device_key,
                    role="primary",
                    amount=amount,
                    ticket=ticket,
                    state=st.CREATED,
                    active=blocked_reason is None,
                    started_by=user_id,
                    created_at=now,
                    progress_message="",
                    response_message="",
                    verification_note="",
                    reconcile_tries=0,
                    details={"max_wait_s": register.policy.max_wait_s},
                )
                try:
                    async with s.begin_nested():
                        s.add(attempt)
                        await s.flush()
                except IntegrityError:
                    existing = await self._active_attempt(s, sale.id)
                    if existing is None:
                        raise
                else:
                    if blocked_reason:
                        attempt.state, attempt.classification = st.FAILED_NOT_SENT, "not_sent"
                        attempt.response_message, attempt.finished_at = blocked_message, now
                        self._offer_backup(
                            attempt, register, Outcome(kind=OutcomeKind.UNAVAILABLE), blocked_reason, now
                        )
                        events += [
                            self._event("attempt_started", attempt, user_id=user_id),
                            self._event("not_sent", attempt, reason=blocked_message, user_id=user_id),
                        ]
                    else:
                        await acquire_lease(
                            s,
                            device_key=device_key,
                            owner=self.instance_id,
                            attempt_id=attempt.id,
                            now=now,
                            ttl_s=self._lease_ttl(register.policy),
                        )
                        mono = self.clock.monotonic()
                        flight = _Flight(
                            attempt_id=attempt.id, started=mono, deadline=mono + register.policy.max_wait_s
                        )
                        events.append(self._event("attempt_started", attempt, user_id=user_id))
        self._emit(events)
        if flight is not None:
            self._flights[flight.attempt_id] = flight
            flight.task = self._spawn(self._run_charge(flight), name=f"caja-charge-{flight.attempt_id}")
        for attempt_id in reconcile_ids:
            self._spawn(self.reconcile(attempt_id), name=f"caja-reconcile-{attempt_id}")
        if probe_device is not None:
            self._spawn(self.probe(probe_device[0], probe_device[1]), name="caja-breaker-probe")
        return await self.poll(venue_id, sale_id)

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
        self, s: AsyncSession, device_key: str, now: Any, *, exclude_sale: int
    ) -> list[PaymentAttempt]:
        """Attempts of other sales on this device whose outcome nobody knows (in doubt, or in flight with no live
        lease: their instance died). A device with any of them takes no new sale until they are reconciled."""
        rows = list(
            (
                await s.execute(
                    select(PaymentAttempt).where(
                        PaymentAttempt.device_key == device_key,
                        PaymentAttempt.sale_id != exclude_sale,
                        PaymentAttempt.state.in_((*st.IN_FLIGHT, *st.DOUBTFUL)),
                    )
                )
            ).scalars()
        )
        if not rows:
            return []
        lease = await live_lease(s, device_key, now)
        return [
            a
            for a in rows
            if a.classification != "pending" and (a.state in st.DOUBTFUL or lease is None or lease.attempt_id != a.id)
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
            if a.state in (st.CREATED, st.MANUAL_PENDING):
                a.state, a.active, a.classification, a.finished_at = st.CANCELLED, False, "cancelled", now
                a.response_message = "Cancelado por el cajero"
                _detail(a, cancelled_by=user_id)
                if a.role == "primary":
                    await release_lease(s, device_key=a.device_key, attempt_id=a.id)
                events.append(self._event("cancelled", a, user_id=user_id))
            elif a.state == st.AWAITING and a.classification == "pending":
                raise Conflict(
                    "El pago está pendiente en el proveedor (la respuesta llega después): espere su "
                    "confirmación o pida autorización de supervisor para usar el respaldo.",
                    code="payment.pending_at_provider",
                )
            elif a.state in (st.SENDING, st.AWAITING):
                _detail(a, cancel_requested=True, cancelled_by=user_id)
                a.progress_message = "Cancelando en el terminal…"
                flight = self._flights.get(a.id)
                if flight is not None:
                    flight.cancel.set()
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
            if last.state not in st.NOT_CHARGED:
                raise Conflict(
                    "El cobro con el terminal principal no está resuelto como no cobrado: no se puede "
                    "usar el respaldo sin autorización de supervisor.",
                    code="payment.primary_unresolved",
                )
            if last.backup_offered_at is None:
                raise Conflict(
                    f"La política de la caja no ofrece el respaldo por este motivo "
                    f"({last.response_message or st.LABELS[last.state]}). Reintente con el terminal o "
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
        amount = self._check_amount(sale.total, provider)
        device_key = provider.device_key(settings, register.code)
        now = self.clock.now()
        ticket = await allocate_ticket(s, device_key)
        manual = Capability.MANUAL in capabilities_of(provider, settings)
        attempt = PaymentAttempt(
            venue_id=sale.venue_id,
            sale_id=sale.id,
            session_id=sale.session_id,
            register_id=sale.register_id,
            provider_id=provider.id,
            device_key=device_key,
            role="backup",
            amount=amount,
            ticket=ticket,
            state=st.MANUAL_PENDING if manual else st.CREATED,
            active=True,
            started_by=user_id,
            created_at=now,
            progress_message="",
            response_message="",
            verification_note="",
            reconcile_tries=0,
            details={"max_wait_s": register.policy.max_wait_s},
        )
        if manual:
            attempt.reference = f"{register.code}-{ticket}"[:40]
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
            await acquire_lease(
                s,
                device_key=device_key,
                owner=self.instance_id,
                attempt_id=attempt.id,
                now=now,
                ttl_s=self._lease_ttl(register.policy),
            )
            mono = self.clock.monotonic()
            flight = _Flight(attempt_id=attempt.id, started=mono, deadline=mono + register.policy.max_wait_s)
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
    ) -> PaymentProgress:
        """The cashier charged on the backup phone and types what the phone shows. The amount cannot change."""
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
            if a.state == st.APPROVED_MANUAL and a.authorization_code == code and a.last4 == digits:
                sale = await self._sale(s, venue_id, a.sale_id)
                return await self._poll_in(s, venue_id, sale)  # the same confirmation twice: applied once
            if a.state != st.MANUAL_PENDING:
                raise Conflict(
                    f"Este intento no espera confirmación manual ({st.LABELS.get(a.state, a.state)}).",
                    code="payment.not_manual_pending",
                )
            sale = await self._sale(s, venue_id, a.sale_id, lock=True)
            now = self.clock.now()
            a.state, a.active, a.finished_at, a.confirmed_by = st.APPROVED_MANUAL, False, now, user_id
            a.classification = "manual"
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
                        PaymentAttempt.state.in_(st.PAID),
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
            events += await self._paid_or_double(s, a, sale, user_id)
            events.append(self._event("approved", a, user_id=user_id))
        self._emit(events)
        return await self.poll(venue_id, a.sale_id)

    async def override_to_backup(self, venue_id: int, sale_id: int, supervisor_id: int, note: str) -> PaymentProgress:
        """A supervisor switches to the backup while the primary is still in flight or in doubt. Audited as
        "posible doble cobro"; the primary keeps being reconciled, and a late approval raises an incident."""
        note = (note or "").strip()
        if len(note) < 3:
            raise ValidationFailed("Escriba el motivo de la autorización.", code="payment.override_note", field="note")
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
                or active.state not in (st.SENDING, st.AWAITING, *st.DOUBTFUL)
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
            if primary.next_reconcile_at is None:
                primary.next_reconcile_at = now
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
        self, venue_id: int, attempt_id: int, user_id: int, reason: str = "Cobro duplicado"
    ) -> PaymentProgress:
        """Refund (void) an attempt that charged a sale another attempt already paid (a double charge)."""
        from ..audit.service import record

        async with self.db.session() as s:
            await _require_supervisor(s, venue_id, user_id, "anular un cobro duplicado")
            a = await self._attempt(s, attempt_id, venue_id=venue_id, lock=True)
            if a.state not in (st.APPROVED, st.APPROVED_MANUAL) or not (a.details or {}).get("refund_offered"):
                raise Conflict(
                    "Solo se anulan aquí los cobros duplicados; para anular una venta pagada use la "
                    "anulación de venta.",
                    code="payment.refund_not_offered",
                )
            call = await self._call(s, a)
            manual = Capability.MANUAL in capabilities_of(call.provider, call.settings)
            if not manual:
                await acquire_lease(
                    s,
                    device_key=a.device_key,
                    owner=self.instance_id,
                    attempt_id=a.id,
                    now=self.clock.now(),
                    ttl_s=self.status_timeout_s + self.lease_margin_s,
                )
        outcome: Outcome | None = None
        if not manual:
            try:
                outcome = await asyncio.wait_for(
                    call.provider.refund(call.request, call.settings, call.ctx), self.status_timeout_s
                )
            except Exception as exc:  # noqa: BLE001 - any failure means "not refunded yet"
                outcome = Outcome(kind=OutcomeKind.UNKNOWN, message=str(exc)[:200])
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, lock=True)
            if not manual:
                await release_lease(s, device_key=a.device_key, attempt_id=a.id)
            if outcome is not None and outcome.kind is not OutcomeKind.APPROVED:
                _detail(a, refund_error=outcome.message or outcome.kind.value)
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
                a.state = st.REFUNDED
                _detail(a, refund_offered=False, refunded_by=user_id, refund_reason=reason[:200], refund_manual=manual)
                await record(
                    s,
                    venue_id=venue_id,
                    user_id=user_id,
                    action="payment.refunded",
                    entity="payment_attempt",
                    entity_id=a.id,
                    payload={"amount": a.amount, "provider": a.provider_id, "reason": reason[:200]},
                )
                events.append(self._event("refunded", a, user_id=user_id, reason=reason, audited=True))
                failed = False
            sale_id = a.sale_id
        self._emit(events)
        if failed:
            raise Conflict(
                f"El proveedor no confirmó la anulación: {outcome.message if outcome else ''}. Reintente más tarde.",
                code="payment.refund_failed",
            )
        return await self.poll(venue_id, sale_id)

    # polling ---------------------------------------------------------------------------------------
    async def poll(self, venue_id: int, sale_id: int) -> PaymentProgress:
        async with self.db.reader() as s:
            if self.db.dialect == "postgresql":
                # One snapshot: the sale and its attempts as of the same instant (never "approved but unpaid").
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            sale = await self._sale(s, venue_id, sale_id)
            return await self._poll_in(s, venue_id, sale)

    async def _poll_in(self, s: AsyncSession, venue_id: int, sale: Sale) -> PaymentProgress:
        attempts = list(
            (
                await s.execute(
                    select(PaymentAttempt).where(PaymentAttempt.sale_id == sale.id).order_by(PaymentAttempt.id)
                )
            ).scalars()
        )
        register = await self._register(s, venue_id, sale.register_id)
        policy: FallbackPolicy = register.policy
        active = next((a for a in attempts if a.active), None)
        focus = active or (attempts[-1] if attempts else None)
        primaries = [a for a in attempts if a.role == "primary"]
        last_primary = primaries[-1] if primaries else None
        pending = sale.status == "pending_payment"
        now = self.clock.now()

        seconds_left: int | None = None
        if focus is not None and focus.state in st.IN_FLIGHT and focus.active:
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
            and last_primary.state in st.NOT_CHARGED
            and last_primary.backup_offered_at is not None
            and register.backup_provider
            and policy.enabled
        )
        backup_reason = (last_primary.details or {}).get("backup_reason", "") if backup_offered and last_primary else ""
        in_doubt = any(a.state in st.DOUBTFUL for a in attempts)
        breaker_state = breakers.CLOSED
        device = (
            focus.device_key
            if focus is not None and focus.role == "primary"
            else (last_primary.device_key if last_primary else None)
        )
        if device:
            breaker_state = (await breakers.view(s, device, policy, now)).state
        manual = None
        if focus is not None and focus.state == st.MANUAL_PENDING:
            phone = await s.get(BackupPhone, focus.backup_phone_id) if focus.backup_phone_id else None
            provider_name = focus.provider_id
            if focus.provider_id in self.registry:
                provider_name = self.registry.get(focus.provider_id).name
            manual = ManualInstructions(
                attempt_id=focus.id,
                provider_id=focus.provider_id,
                provider_name=provider_name,
                amount=focus.amount,
                reference=focus.reference or "",
                phone_name=phone.name if phone else None,
                phone_identifier=phone.identifier if phone else None,
            )
        can_override = bool(
            pending
            and active is not None
            and active.role == "primary"
            and register.backup_provider
            and policy.enabled
            and (active.state in st.DOUBTFUL or (active.state in (st.SENDING, st.AWAITING) and seconds_left == 0))
        )
        message = ""
        if focus is not None:
            message = focus.progress_message if focus.state in (*st.IN_FLIGHT, st.MANUAL_PENDING) else ""
            message = message or focus.response_message or st.LABELS.get(focus.state, focus.state)
        return PaymentProgress(
            sale_id=sale.id,
            sale_status=sale.status,
            paid=sale.status == "paid",
            paid_via=sale.paid_via,
            attempt_id=focus.id if focus else None,
            provider_id=focus.provider_id if focus else None,
            role=focus.role if focus else None,
            state=focus.state if focus else None,
            state_label=st.LABELS.get(focus.state, focus.state) if focus else "Sin cobros",
            message=message,
            seconds_left=seconds_left,
            backup_offered=backup_offered,
            backup_reason=backup_reason,
            backup_provider=register.backup_provider,
            in_doubt=in_doubt,
            doubt_message=DOUBT_MESSAGE if in_doubt else "",
            can_cancel=bool(
                active is not None and active.state in (st.CREATED, st.SENDING, st.AWAITING, st.MANUAL_PENDING)
            ),
            can_override=can_override,
            breaker_state=breaker_state,
            manual=manual,
            refund_offered=[
                a.id
                for a in attempts
                if a.state in (st.APPROVED, st.APPROVED_MANUAL) and (a.details or {}).get("refund_offered")
            ],
            attempts=[self._attempt_out(a) for a in attempts],
        )

    @staticmethod
    def _attempt_out(a: PaymentAttempt) -> AttemptOut:
        return AttemptOut(
            id=a.id,
            sale_id=a.sale_id,
            provider_id=a.provider_id,
            role=a.role,
            state=a.state,
            state_label=st.LABELS.get(a.state, a.state),
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
            refund_offered=bool((a.details or {}).get("refund_offered")),
            active=a.active,
        )

    # the charge --------------------------------------------------------------------------------------
    async def _run_charge(self, flight: _Flight) -> None:
        attempt_id = flight.attempt_id
        release = True
        try:
            async with self.db.session() as s:
                a = await self._attempt(s, attempt_id, lock=True)
                if a.state != st.CREATED:
                    return
                call = await self._call(s, a)
                a.state, a.sent_at = st.SENDING, self.clock.now()

            async def on_progress(p: Progress) -> None:
                flight.received = True
                try:
                    async with self.db.session() as s2:
                        a2 = await self._attempt(s2, attempt_id, lock=True)
                        if a2.state == st.SENDING:
                            a2.state, a2.acknowledged_at = st.AWAITING, self.clock.now()
                        if a2.state in (st.SENDING, st.AWAITING):
                            a2.progress_message, a2.progress_code = (p.message or "")[:200], p.code
                except Exception:
                    log.warning("could not store progress of attempt %s", attempt_id, exc_info=True)

            charge = asyncio.create_task(call.provider.charge(call.request, call.settings, call.ctx, on_progress))
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
            state = await self._finish_durably(attempt_id, outcome, reason=reason, source="charge")
            if state == st.IN_DOUBT:
                state = await self._reconcile_now(attempt_id, lease_held=True)
        except asyncio.CancelledError:
            release = False  # the app is stopping: the restart's recovery takes over this attempt
            raise
        finally:
            self._flights.pop(attempt_id, None)
            if release:
                with contextlib.suppress(Exception):
                    async with self.db.session() as s:
                        a = await self._attempt(s, attempt_id)
                        await release_lease(s, device_key=a.device_key, attempt_id=attempt_id)

    async def _wait_charge(self, flight: _Flight, charge: asyncio.Task) -> str | None:
        """Wait for the provider's answer until the max wait (monotonic) or a cancel request."""
        last_remote_check = self.clock.monotonic()
        while True:
            if charge.done():
                return None
            if flight.cancel.is_set():
                return "cancelled"
            now = self.clock.monotonic()
            if now >= flight.deadline:
                return "timeout"
            if now - last_remote_check >= self.remote_cancel_check_s:
                last_remote_check = now
                try:
                    async with self.db.reader() as s:
                        a = await self._attempt(s, flight.attempt_id)
                        if (a.details or {}).get("cancel_requested"):
                            return "cancelled"
                except (OSError, DBAPIError):  # the database is away: keep waiting for the terminal
                    log.warning("could not check cancel requests of attempt %s", flight.attempt_id)
            await asyncio.wait({charge}, timeout=min(self.tick_s, max(0.001, flight.deadline - now)))

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
                if a.state in (st.SENDING, st.AWAITING):
                    a.progress_message = "Cancelando en el terminal…"
                _detail(a, stop_reason=stop_reason, cancel_sent_at=self.clock.now().isoformat())
        except (OSError, DBAPIError):  # the cancel matters more than the note
            log.warning("could not note the cancel of attempt %s", flight.attempt_id)
        cancel_answered = False
        if Capability.CANCEL in capabilities_of(call.provider, call.settings):
            try:
                cancel_out = await asyncio.wait_for(
                    call.provider.cancel(call.request, call.settings, call.ctx), self.cancel_timeout_s
                )
                cancel_answered = cancel_out.kind is not OutcomeKind.UNKNOWN
            except Exception:  # noqa: BLE001 - a cancel that fails is just unanswered
                cancel_answered = False
        if not charge.done():
            await asyncio.wait({charge}, timeout=self.cancel_grace_s)
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
                    description=f"{reason}: {outcome.message}",
                )
                if opened:
                    events.append(self._event("breaker_opened", a, reason=f"{reason}: {outcome.message}"))
            elif outcome.kind in (OutcomeKind.APPROVED, OutcomeKind.DECLINED) and await breakers.record_success(
                s, device_key=call.request.device_key, now=now
            ):
                events.append(self._event("breaker_closed", a))
        self._emit(events)

    # results -----------------------------------------------------------------------------------------
    def _offer_backup(self, a: PaymentAttempt, register: Any, outcome: Outcome, reason: str, now: Any) -> None:
        if a.role != "primary" or not register.backup_provider:
            return
        rule = decide(self.rules, outcome, reason, register.policy)
        if rule is not None:
            a.backup_offered_at = now
            _detail(a, backup_reason=rule.description, backup_trigger=rule.name)

    async def _finish(self, attempt_id: int, outcome: Outcome, *, reason: str, source: str) -> str:
        """Apply a provider answer (charge, status or webhook) to an attempt, once. Returns the new state."""
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            a = await self._attempt(s, attempt_id, lock=True)
            if a.state in st.FINAL or a.state in (st.MANUAL_PENDING, st.CANCELLED):
                if outcome.kind is OutcomeKind.APPROVED and a.state in st.NOT_CHARGED and self._matches(a, outcome):
                    incident = await self._incident(
                        s,
                        a,
                        None,
                        "late_approval",
                        f"El proveedor informa aprobado el ticket {a.ticket} ({format_clp(a.amount)}) que se dio por "
                        f"no cobrado: revise y anule si corresponde.",
                        None,
                    )
                    _detail(a, late_approval_incident=incident)
                    events.append(self._event("incident", a, reason="Aprobación tardía"))
                state = a.state
            else:
                register = await self._register(s, a.venue_id, a.register_id)
                now = self.clock.now()
                from_status = source == "status"
                kind = outcome.kind
                if kind is OutcomeKind.APPROVED and outcome.ticket and outcome.ticket != a.ticket:
                    # A late answer for another ticket is never applied to this sale.
                    _detail(a, foreign_ticket=outcome.ticket)
                    kind = OutcomeKind.UNKNOWN
                if kind is OutcomeKind.APPROVED and outcome.amount is not None and outcome.amount != a.amount:
                    a.reported_amount = outcome.amount
                    if not (a.details or {}).get("amount_mismatch_incident"):
                        sale = await self._sale(s, a.venue_id, a.sale_id)
                        incident = await self._incident(
                            s,
                            a,
                            sale,
                            "amount_mismatch",
                            f"El terminal aprobó {format_clp(outcome.amount)} pero se pidió {format_clp(a.amount)} "
                            f"(intento #{a.id}, ticket {a.ticket}): no se da por pagado.",
                            None,
                        )
                        _detail(a, amount_mismatch_incident=incident)
                        events.append(self._event("incident", a, reason="Monto distinto"))
                    kind = OutcomeKind.UNKNOWN
                a.response_code = outcome.code
                a.response_message = (outcome.message or "")[:300]
                if outcome.reference and not a.provider_reference:
                    a.provider_reference = outcome.reference[:80]
                if kind is OutcomeKind.APPROVED:
                    sale = await self._sale(s, a.venue_id, a.sale_id, lock=True)
                    a.state, a.active, a.finished_at = st.APPROVED, False, now
                    if a.classification != "overridden":
                        a.classification = "reconciled" if from_status else "approved"
                    self._card(a, outcome)
                    a.response_message = a.response_message or "Aprobado"
                    events += await self._paid_or_double(s, a, sale, None)
                    events.append(self._event("reconciled" if from_status else "approved", a, reason=reason))
                elif kind is OutcomeKind.DECLINED:
                    a.state, a.active, a.finished_at = st.DECLINED, False, now
                    if a.classification != "overridden":
                        a.classification = "declined"
                    a.response_message = a.response_message or "Rechazado"
                    self._offer_backup(a, register, outcome, reason, now)
                    events.append(self._event("reconciled" if from_status else "declined", a, reason=reason))
                elif kind is OutcomeKind.UNAVAILABLE:
                    a.state, a.active, a.finished_at = st.FAILED_NOT_SENT, False, now
                    if a.classification != "overridden":
                        a.classification = "reconciled" if from_status else "not_sent"
                    if from_status:
                        a.response_message = "El terminal no tiene registro de la venta: no se cobró."
                    a.response_message = a.response_message or "No se cobró"
                    fallback_reason = (a.details or {}).get("stop_reason") or reason
                    self._offer_backup(a, register, Outcome(kind=OutcomeKind.UNAVAILABLE), fallback_reason, now)
                    events.append(self._event("reconciled" if from_status else "not_sent", a, reason=reason))
                elif kind is OutcomeKind.PENDING:
                    # Accepted by the provider; the final answer comes later (webhook, status): not in doubt.
                    a.state = st.AWAITING
                    if a.classification != "overridden":
                        a.classification = "pending"
                    a.acknowledged_at = a.acknowledged_at or now
                    a.progress_message = (outcome.message or "Esperando la confirmación del proveedor")[:200]
                    a.next_reconcile_at = now + timedelta(seconds=self._backoff(max(1, a.reconcile_tries)))
                    await release_lease(s, device_key=a.device_key, attempt_id=a.id)
                else:
                    was = a.state
                    a.state = st.IN_DOUBT
                    if a.classification != "overridden":
                        a.classification = "in_doubt"
                    a.progress_message = ""
                    if not (a.details or {}).get("stop_reason"):
                        _detail(a, stop_reason=reason)
                    if from_status:
                        a.next_reconcile_at = now + timedelta(seconds=self._backoff(a.reconcile_tries))
                    else:
                        a.next_reconcile_at = now
                    if was != st.RECONCILING:
                        events.append(self._event("in_doubt", a, reason=outcome.message or reason))
                state = a.state
                if state in st.FINAL:
                    # The device is free the moment the answer is committed.
                    await release_lease(s, device_key=a.device_key, attempt_id=a.id)
        self._emit(events)
        return state

    async def _finish_durably(self, attempt_id: int, outcome: Outcome, *, reason: str, source: str) -> str:
        """``_finish``, retried while the database is unavailable: the provider's answer is kept (in memory, and
        in the terminal's own memory for reconciliation if this process dies) and applied once it is back."""
        delay = 0.1
        while True:
            try:
                return await self._finish(attempt_id, outcome, reason=reason, source=source)
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

    @staticmethod
    def _matches(a: PaymentAttempt, outcome: Outcome) -> bool:
        return (not outcome.ticket or outcome.ticket == a.ticket) and (outcome.amount in (None, a.amount))

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

    async def _paid_or_double(
        self, s: AsyncSession, a: PaymentAttempt, sale: Sale, user_id: int | None
    ) -> list[PaymentEvent]:
        """An attempt was approved: it pays the sale, or — if the sale is no longer pending — it is a double
        charge: an incident, and the refund is offered."""
        events: list[PaymentEvent] = []
        if sale.status == "pending_payment":
            from ..sales.service import mark_paid

            await mark_paid(
                s, sale_id=sale.id, provider_id=a.provider_id, method="card", paid_via=a.role, user_id=user_id
            )
            _detail(a, paid_sale=True)
            others = list(
                (
                    await s.execute(
                        select(PaymentAttempt).where(
                            PaymentAttempt.sale_id == sale.id,
                            PaymentAttempt.id != a.id,
                            PaymentAttempt.state.in_((st.MANUAL_PENDING, st.CREATED)),
                        )
                    )
                ).scalars()
            )
            for other in others:
                other.state, other.active, other.finished_at = st.CANCELLED, False, self.clock.now()
                other.classification = "cancelled"
                other.response_message = f"Ya pagado por el intento #{a.id}: no cobre en este medio."
            if a.overridden_by is not None:
                incident = await self._incident(
                    s,
                    a,
                    sale,
                    "double_charge_suspected",
                    f"Posible doble cobro: el terminal aprobó tarde el intento #{a.id} ({format_clp(a.amount)}) "
                    f"después de la autorización para usar el respaldo en la venta #{sale.id}. Verifique si el "
                    f"cliente pagó también en el respaldo.",
                    user_id,
                )
                _detail(a, double_charge_incident=incident)
                events.append(self._event("incident", a, reason="Posible doble cobro"))
        else:
            incident = await self._incident(
                s,
                a,
                sale,
                "double_charge_suspected",
                f"Posible doble cobro: el intento #{a.id} ({a.provider_id}, {format_clp(a.amount)}) fue aprobado "
                f"pero la venta #{sale.id} ya estaba {'pagada' if sale.status == 'paid' else 'anulada'}. Ofrezca la "
                f"anulación del cobro duplicado.",
                user_id,
            )
            _detail(a, refund_offered=True, double_charge_incident=incident, paid_sale=False)
            events.append(self._event("incident", a, reason="Posible doble cobro: anulación ofrecida"))
        return events

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

    # reconciliation --------------------------------------------------------------------------------
    async def reconcile(self, attempt_id: int) -> str:
        """Ask the provider what happened to this attempt's ticket (unless another instance is doing it)."""
        return await self._reconcile_now(attempt_id, lease_held=False)

    async def _reconcile_now(self, attempt_id: int, *, lease_held: bool) -> str:
        if attempt_id in self._reconciling:
            return st.RECONCILING
        self._reconciling.add(attempt_id)
        acquired = False
        try:
            async with self.db.session() as s:
                a = await self._attempt(s, attempt_id, lock=True)
                if a.state not in (*st.IN_FLIGHT, *st.DOUBTFUL):
                    return a.state
                if a.state == st.CREATED:
                    # Never sent: nothing to ask.
                    a.state, a.active, a.finished_at, a.classification = (
                        st.FAILED_NOT_SENT,
                        False,
                        self.clock.now(),
                        "not_sent",
                    )
                    a.response_message = "No se envió (el proceso se detuvo antes)."
                    await release_lease(s, device_key=a.device_key, attempt_id=a.id)
                    return a.state
                call = await self._call(s, a)
                now = self.clock.now()
                if not lease_held:
                    try:
                        async with s.begin_nested():
                            await acquire_lease(
                                s,
                                device_key=a.device_key,
                                owner=self.instance_id,
                                attempt_id=a.id,
                                now=now,
                                ttl_s=self.status_timeout_s + self.lease_margin_s,
                            )
                        acquired = True
                    except Busy:
                        lease = await live_lease(s, a.device_key, now)
                        if lease is not None and lease.attempt_id == a.id and lease.owner == self.instance_id:
                            acquired = False  # this instance already holds it for this attempt
                        else:
                            a.next_reconcile_at = now + timedelta(seconds=self._backoff(1))
                            return a.state
                else:
                    await extend_lease(
                        s,
                        device_key=a.device_key,
                        attempt_id=a.id,
                        now=now,
                        ttl_s=self.status_timeout_s + self.lease_margin_s,
                    )
                if a.state != st.RECONCILING:
                    a.state = st.RECONCILING
                a.reconcile_tries += 1
                a.progress_message = "Consultando al terminal si se cobró…"
            if Capability.STATUS in capabilities_of(call.provider, call.settings):
                try:
                    outcome = await asyncio.wait_for(
                        call.provider.status(call.request, call.settings, call.ctx), self.status_timeout_s
                    )
                except Exception as exc:  # noqa: BLE001 - an unanswered question keeps the attempt in doubt
                    outcome = Outcome(kind=OutcomeKind.UNKNOWN, message=f"Sin respuesta: {type(exc).__name__}")
            else:
                outcome = Outcome(kind=OutcomeKind.UNKNOWN, message="El proveedor no permite consultar el estado.")
            return await self._finish_durably(attempt_id, outcome, reason="reconcile", source="status")
        finally:
            self._reconciling.discard(attempt_id)
            if acquired:
                with contextlib.suppress(Exception):
                    async with self.db.session() as s:
                        a = await self._attempt(s, attempt_id)
                        await release_lease(s, device_key=a.device_key, attempt_id=attempt_id)

    async def run_once(self, *, recovery: bool = False) -> None:
        """One pass of the worker: orphaned attempts → in doubt, due reconciliations, breaker probes."""
        now = self.clock.now()
        async with self.db.session() as s:
            rows = list(
                (
                    await s.execute(
                        select(PaymentAttempt)
                        .where(PaymentAttempt.state.in_((*st.IN_FLIGHT, *st.DOUBTFUL)))
                        .order_by(PaymentAttempt.id)
                    )
                ).scalars()
            )
            due: list[int] = []
            for a in rows:
                if a.id in self._flights or a.id in self._reconciling:
                    continue
                if a.state in st.IN_FLIGHT:
                    lease = await live_lease(s, a.device_key, now)
                    if lease is not None and lease.attempt_id == a.id:
                        continue  # alive on some instance
                    if (
                        a.classification == "pending"
                        and not recovery
                        and a.next_reconcile_at is not None
                        and a.next_reconcile_at > now
                    ):
                        continue  # accepted by the provider: asked again at its time
                    due.append(a.id)  # its instance died (or a pending answer is due): ask the provider
                elif recovery or a.next_reconcile_at is None or a.next_reconcile_at <= now:
                    lease = await live_lease(s, a.device_key, now)
                    if lease is not None and lease.attempt_id == a.id and lease.owner != self.instance_id:
                        continue  # another instance is on it
                    due.append(a.id)
        by_device: dict[str, list[int]] = {}
        for attempt_id in due:
            async with self.db.reader() as s:
                a = await self._attempt(s, attempt_id)
                by_device.setdefault(a.device_key, []).append(attempt_id)

        async def run_device(ids: list[int]) -> None:
            for attempt_id in ids:
                try:
                    await self._reconcile_now(attempt_id, lease_held=False)
                except Exception:
                    log.exception("reconciliation of attempt %s failed", attempt_id)

        await asyncio.gather(*(run_device(ids) for ids in by_device.values()))
        await self._probe_due()

    async def _worker_loop(self) -> None:
        while self._running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.worker_interval_s)
            if not self._running:
                return
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("payments worker pass failed")
                WORKERS.beat(RECONCILIATION_WORKER, error=f"{type(exc).__name__}: {exc}")
            else:
                WORKERS.beat(RECONCILIATION_WORKER)

    # breaker -----------------------------------------------------------------------------------------
    async def _probe_due(self) -> None:
        now = self.clock.now()
        async with self.db.reader() as s:
            rows = list(
                (
                    await s.execute(
                        select(BreakerState).where(BreakerState.state.in_((breakers.OPEN, breakers.HALF_OPEN)))
                    )
                ).scalars()
            )
            targets: list[tuple[str, str]] = []
            for row in rows:
                last = (
                    await s.execute(
                        select(PaymentAttempt.provider_id, PaymentAttempt.venue_id, PaymentAttempt.register_id)
                        .where(PaymentAttempt.device_key == row.device_key)
                        .order_by(PaymentAttempt.id.desc())
                        .limit(1)
                    )
                ).first()
                if last is None:
                    continue
                register = await self._register(s, last.venue_id, last.register_id)
                if row.state == breakers.HALF_OPEN:
                    # A probe whose instance died: open again so a new probe can run.
                    if now - row.updated_at > timedelta(seconds=self.health_timeout_s * 3):
                        async with self.db.session() as w:
                            await breakers.probe_failed(
                                w, device_key=row.device_key, now=now, description="Prueba interrumpida"
                            )
                    continue
                view = await breakers.view(s, row.device_key, register.policy, now)
                if view.probe_due:
                    targets.append((row.device_key, last.provider_id))
        for device_key, provider_id in targets:
            await self.probe(device_key, provider_id)

    async def probe(self, device_key: str, provider_id: str) -> str:
        """Half-open probe of an open breaker: the provider's ``health()`` (a Poll), never a sale."""
        now = self.clock.now()
        async with self.db.session() as s:
            last = (
                await s.execute(
                    select(PaymentAttempt)
                    .where(PaymentAttempt.device_key == device_key)
                    .order_by(PaymentAttempt.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if last is None:
                return breakers.CLOSED
            register = await self._register(s, last.venue_id, last.register_id)
            view = await breakers.view(s, device_key, register.policy, now)
            if not view.probe_due or not await breakers.claim_probe(s, device_key=device_key, now=now):
                return view.state
            try:
                async with s.begin_nested():
                    await acquire_lease(
                        s,
                        device_key=device_key,
                        owner=self.instance_id,
                        attempt_id=None,
                        now=now,
                        ttl_s=self.health_timeout_s + self.lease_margin_s,
                    )
            except Busy:
                await breakers.probe_failed(s, device_key=device_key, now=now, description="Terminal ocupado")
                return breakers.OPEN
            provider = self.registry.get(provider_id)
            settings = self._settings(register, provider)
            ctx = self._ctx(register)
        try:
            outcome = await asyncio.wait_for(provider.health(settings, ctx), self.health_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a provider's health check failing in any way is "no answer"
            outcome = Outcome(kind=OutcomeKind.UNKNOWN, message=f"Sin respuesta: {type(exc).__name__}")
        events: list[PaymentEvent] = []
        async with self.db.session() as s:
            await release_lease(s, device_key=device_key, owner=self.instance_id)
            if outcome.kind is OutcomeKind.APPROVED:
                await breakers.record_success(s, device_key=device_key, now=self.clock.now())
                state = breakers.CLOSED
                events.append(self._event("breaker_closed", last, reason="Prueba exitosa"))
            else:
                await breakers.probe_failed(
                    s, device_key=device_key, now=self.clock.now(), description=outcome.message or outcome.kind.value
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
