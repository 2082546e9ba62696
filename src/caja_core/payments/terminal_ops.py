"""Operations on a payment device as a whole: its batch close, and the nightly check against caja.

**Batch close** (``close_batch``). A device's batch close (the terminal's end-of-day Close) empties its list of sales: after it,
"not in the list" no longer means "never charged". So caja runs it only through here:

* it takes the device's lease (no charge can be in flight while it closes) and refuses while the device has an
  attempt in flight or in doubt, listing them (``terminal.close_refused``): those still need that list;
* it asks the device who it is (when the provider can): the address is not the device, and one terminal may
  be reached at another address than its attempts were sent to; attempts in doubt on it under any address, or
  at an address that cannot say which device answers there, refuse the close as well;
* it records the close with the device's totals (``TerminalClose``); reconciliation then never declares an
  attempt sent before a recorded close "not charged" from the device's list alone.

The admin page and a provider's close command call it. A close run on the device itself (its keypad, or its
automatic close) is not told to caja; reconciliation notices it before trusting the device's list
(``close_by_the_device``): when the list no longer has a charge caja approved there since its last recorded
close, that close is recorded then, and the attempt in doubt waits for a supervisor. (A close that leaves no
such trace — nothing approved on the device since the last close caja knows — cannot be seen.)

**Nightly check** (``check_terminals``): at jornada close, and on demand from the admin, each device of the
venue (the registers' providers that can report, and every device that charged in the jornada) is asked for
its own totals and sales since its last batch close (``terminal_report``) and compared with the attempts
caja approved on it since the last recorded close. Every difference — a charge caja does not know, an approval
the device does not have, another amount — is recorded (``TerminalCheck``) and opens an incident in the
jornada (Z report, ``/health``). An approval the device lists for one of caja's attempts that was given up as
not charged is applied as the late approval it is (the sale is paid, or the duplicate is returned).
At jornada close a device busy with a charge or with a question already asked is waited for (up to 30 s);
on demand from the admin a busy device is reported as not checked at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import open_incident, record
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import Busy, Conflict, ValidationFailed
from ..money import format_clp
from ..providers import (
    Capability,
    Outcome,
    OutcomeKind,
    PaymentProvider,
    ProviderContext,
    ProviderRegistry,
    TerminalReport,
    device_key_of,
    settings_to_json,
    validate_settings,
)
from . import devices
from . import lifecycle as lc
from .leases import LeaseKeeper
from .models import PaymentAttempt, TerminalCheck, TerminalClose

log = logging.getLogger("caja.payments.terminals")

DEFAULT_TIMEOUT_S = 90.0
#: How long the jornada close's check waits for a terminal busy with a charge or a question already asked, and how often it looks.
BUSY_WAIT_S = 30.0
BUSY_POLL_S = 0.25


class TerminalRef(msgspec.Struct, kw_only=True):
    """One physical device, as caja reaches it."""

    provider_id: str
    device_key: str
    identity: str | None
    label: str
    settings: dict[str, Any]
    register_id: int | None
    venue_id: int | None


class TerminalCloseOut(msgspec.Struct, kw_only=True):
    id: int
    provider_id: str
    device_key: str
    device_label: str
    closed_at: datetime
    count: int
    total: int
    source: str


class Difference(msgspec.Struct, kw_only=True):
    kind: str  # unknown_charge / missing_approval / voided / amount / totals / late_approval
    ticket: str | None = None
    amount: int | None = None
    caja_amount: int | None = None
    attempt_id: int | None = None
    text: str = ""


class TerminalCheckOut(msgspec.Struct, kw_only=True):
    id: int
    provider_id: str
    device_key: str
    device_label: str
    checked_at: datetime
    since: datetime | None
    reachable: bool
    ok: bool
    terminal_count: int | None
    terminal_total: int | None
    caja_count: int
    caja_total: int
    differences: list[Difference]
    message: str
    incident_id: int | None


def close_out(row: TerminalClose) -> TerminalCloseOut:
    return TerminalCloseOut(
        id=row.id,
        provider_id=row.provider_id,
        device_key=row.device_key,
        device_label=row.device_label or row.device_key,
        closed_at=row.closed_at,
        count=row.count,
        total=row.total,
        source=row.source,
    )


def check_out(row: TerminalCheck) -> TerminalCheckOut:
    return TerminalCheckOut(
        id=row.id,
        provider_id=row.provider_id,
        device_key=row.device_key,
        device_label=row.device_label or row.device_key,
        checked_at=row.checked_at,
        since=row.since,
        reachable=row.reachable,
        ok=row.ok,
        terminal_count=row.terminal_count,
        terminal_total=row.terminal_total,
        caja_count=row.caja_count,
        caja_total=row.caja_total,
        differences=msgspec.convert(row.differences or [], list[Difference]),
        message=row.message,
        incident_id=row.incident_id,
    )


def _caps(provider: PaymentProvider, settings: Any) -> frozenset[Capability]:
    per = getattr(provider, "capabilities_for", None)
    return frozenset(per(settings)) if callable(per) else frozenset(provider.capabilities)


def _ctx(ref: TerminalRef, agent_channel_factory: Callable[[Any], Any] | None) -> ProviderContext:
    import types

    agent = None
    if agent_channel_factory is not None and ref.register_id is not None:
        agent = agent_channel_factory(
            types.SimpleNamespace(
                id=ref.register_id, venue_id=ref.venue_id, code="", provider_settings={ref.provider_id: ref.settings}
            )
        )
    return ProviderContext(register_id=ref.register_id or 0, venue_id=ref.venue_id or 0, agent=agent)


@contextlib.asynccontextmanager
async def hold_device(
    db: Any,
    keeper: LeaseKeeper,
    device_key: str,
    *,
    purpose: str,
    check: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """Hold the device's lease for the block (renewed while it runs); ``check`` runs in the same transaction
    that takes it (raising refuses, and nothing is taken)."""
    token: str | None = None
    try:
        async with db.session() as s:
            token = (await keeper.acquire(s, device_key=device_key, attempt_id=None, purpose=purpose)).token
            if check is not None:
                await check(s)
    except BaseException:
        keeper.forget(device_key, token)
        raise
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), keeper.clock.timer(keeper.beat_s))
            if stop.is_set():
                return
            with contextlib.suppress(Exception):
                async with db.session() as s:
                    await keeper.beat(s)

    beater = asyncio.create_task(beat())
    try:
        yield token
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await beater
        async with db.session() as s:
            await keeper.release(s, device_key=device_key, token=token)


async def _unresolved_on(s: AsyncSession, device_key: str, identity: str | None) -> list[PaymentAttempt]:
    return list(
        (
            await s.execute(
                select(PaymentAttempt)
                .where(
                    devices.same_device(device_key, identity),
                    PaymentAttempt.state.in_((*lc.IN_FLIGHT, *lc.DOUBTFUL)),
                )
                .order_by(PaymentAttempt.id)
            )
        ).scalars()
    )


async def _venue_of_device(s: AsyncSession, device_key: str) -> tuple[int | None, int | None]:
    """(venue, register) of the latest attempt on the device, if any."""
    row = (
        await s.execute(
            select(PaymentAttempt.venue_id, PaymentAttempt.register_id)
            .where(PaymentAttempt.device_key == device_key)
            .order_by(PaymentAttempt.id.desc())
            .limit(1)
        )
    ).first()
    return (row.venue_id, row.register_id) if row else (None, None)


async def _open_jornada(s: AsyncSession, venue_id: int | None) -> int | None:
    if venue_id is None:
        return None
    from ..jornadas.models import Jornada

    return (
        await s.execute(select(Jornada.id).where(Jornada.venue_id == venue_id, Jornada.status == "open"))
    ).scalar_one_or_none()


async def register_terminal(
    s: AsyncSession, registry: ProviderRegistry, venue_id: int, register_id: int, provider_id: str | None = None
) -> TerminalRef:
    """The device a register's provider (its primary, or ``provider_id``) reaches with its current settings."""
    from ..registers.service import get_register

    register = await get_register(s, venue_id, register_id)
    chosen = provider_id or register.primary_provider
    if not chosen or chosen not in (register.primary_provider, register.backup_provider) or chosen not in registry:
        raise ValidationFailed("Ese proveedor no está configurado en esta caja.", code="terminal.unknown_provider")
    provider = registry.get(chosen)
    settings = validate_settings(provider, (register.provider_settings or {}).get(chosen))
    key = device_key_of(provider, settings, register.code)
    known = await devices.known_device(s, key)
    return TerminalRef(
        provider_id=chosen,
        device_key=key,
        identity=known.identity if known else None,
        label=(known.label if known and known.label else f"{provider.name} de {register.code}"),
        settings=settings_to_json(settings),
        register_id=register.id,
        venue_id=venue_id,
    )


async def device_terminal(s: AsyncSession, registry: ProviderRegistry, provider_id: str, raw: dict) -> TerminalRef:
    """A device given by its connection settings (a provider's close command), found in caja's records."""
    provider = registry.get(provider_id)
    settings = validate_settings(provider, raw)
    key = device_key_of(provider, settings, "")
    known = await devices.known_device(s, key)
    venue_id, register_id = await _venue_of_device(s, key)
    return TerminalRef(
        provider_id=provider_id,
        device_key=key,
        identity=known.identity if known else None,
        label=(known.label if known and known.label else key),
        settings=settings_to_json(settings),
        register_id=register_id,
        venue_id=venue_id,
    )


# --- batch close -------------------------------------------------------------------------------------------


async def close_batch(
    db: Any,
    registry: ProviderRegistry,
    ref: TerminalRef,
    *,
    keeper: LeaseKeeper | None = None,
    user_id: int | None = None,
    source: str = "admin",
    clock: Clock = SYSTEM_CLOCK,
    agent_channel_factory: Callable[[Any], Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TerminalCloseOut:
    """Run the device's batch close and record it, or refuse with the reason (see the module docstring)."""
    provider = registry.get(ref.provider_id)
    settings = validate_settings(provider, ref.settings)
    close = getattr(provider, "close_batch", None)
    if Capability.BATCH_CLOSE not in _caps(provider, settings) or not callable(close):
        raise Conflict(
            f"{provider.name} no permite hacer el cierre de lote desde caja.", code="terminal.close_unsupported"
        )
    keeper = keeper or LeaseKeeper(clock, f"close-{uuid.uuid4().hex[:8]}")

    elsewhere: list[PaymentAttempt] = []

    async def refuse_if_unresolved(s: AsyncSession) -> None:
        pending = await _unresolved_on(s, ref.device_key, ref.identity)
        pending += [a for a in elsewhere if a.id not in {p.id for p in pending}]
        if pending:
            from .service import describe

            raise Conflict(
                "No se hace el cierre de lote: el terminal tiene cobros sin resolver, y el cierre borraría la "
                "prueba de si se cobraron. Resuélvalos primero: " + "; ".join(describe(a) for a in pending),
                code="terminal.close_refused",
                details={"attempts": [a.id for a in pending]},
            )

    async with db.reader() as s:
        await refuse_if_unresolved(s)  # the reason that matters first, even while the device is busy
    try:
        async with hold_device(db, keeper, ref.device_key, purpose="close", check=refuse_if_unresolved):
            # The address is not the device: the one answering there may be a device caja knows under another
            # address (another port, a new IP) with a payment in doubt. Ask it who it is, and check again.
            ref = await _identified(db, provider, settings, ref, clock, agent_channel_factory, timeout_s)
            elsewhere = await _maybe_this_device(db, provider, ref, clock, timeout_s)
            async with db.reader() as s:
                await refuse_if_unresolved(s)
            try:
                report: TerminalReport = await asyncio.wait_for(
                    close(settings, _ctx(ref, agent_channel_factory)), clock.timer(timeout_s)
                )
            except Exception as exc:
                async with db.session() as s:
                    await record(
                        s,
                        venue_id=ref.venue_id,
                        user_id=user_id,
                        action="terminal.close_failed",
                        entity="terminal",
                        entity_id=ref.device_key[:40],
                        payload={"error": f"{type(exc).__name__}: {exc}"[:200], "source": source},
                    )
                detail = str(exc)[:200] or type(exc).__name__
                raise Conflict(
                    f"El terminal no confirmó el cierre de lote ({detail}). Revise el terminal antes de reintentar.",
                    code="terminal.close_failed",
                ) from exc
            async with db.session() as s:
                row = TerminalClose(
                    venue_id=ref.venue_id,
                    jornada_id=await _open_jornada(s, ref.venue_id),
                    register_id=ref.register_id,
                    provider_id=ref.provider_id,
                    device_key=ref.device_key,
                    device_identity=ref.identity,
                    device_label=ref.label[:200],
                    closed_at=clock.now(),
                    count=int(report.count),
                    total=int(report.total),
                    sales=msgspec.to_builtins(report.sales),
                    source=source[:20],
                    user_id=user_id,
                )
                s.add(row)
                await s.flush()
                await record(
                    s,
                    venue_id=ref.venue_id,
                    user_id=user_id,
                    action="terminal.batch_closed",
                    entity="terminal",
                    entity_id=row.id,
                    payload={"device": ref.label, "count": row.count, "total": row.total, "source": source},
                )
                return close_out(row)
    except Busy:
        raise Conflict(
            "El terminal está ocupado con un cobro: espere a que termine para hacer el cierre de lote.",
            code="terminal.busy",
        ) from None


async def _identified(
    db: Any,
    provider: PaymentProvider,
    settings: Any,
    ref: TerminalRef,
    clock: Clock,
    agent_channel_factory: Callable[[Any], Any] | None,
    timeout_s: float,
) -> TerminalRef:
    """``ref`` with the identity the device gives of itself (remembered for its key), when the provider can ask
    it; a device that cannot say who it is gets no close."""
    identify = getattr(provider, "identify", None)
    ctx = _ctx(ref, agent_channel_factory)
    if Capability.IDENTIFY not in _caps(provider, settings) or not callable(identify):
        return ref  # (a register's agent asks its device too: the device behind it may have been swapped)
    try:
        found = await asyncio.wait_for(identify(settings, ctx), clock.timer(timeout_s))
    except Exception as exc:
        detail = str(exc)[:200] or type(exc).__name__
        raise Conflict(
            f"No se hace el cierre de lote: el terminal no dijo quién es ({detail}), y caja no puede saber si tiene "
            "cobros sin resolver. Revise el terminal antes de reintentar.",
            code="terminal.close_failed",
        ) from exc
    async with db.session() as s:
        await devices.remember_identity(
            s, provider_id=ref.provider_id, device_key=ref.device_key, identity=found, now=clock.now()
        )
    return msgspec.structs.replace(ref, identity=found.identity, label=found.label or found.identity or ref.label)


async def _maybe_this_device(
    db: Any, provider: PaymentProvider, ref: TerminalRef, clock: Clock, timeout_s: float
) -> list[PaymentAttempt]:
    """Attempts in flight or in doubt that were sent to this device under another address before caja knew who
    it was: the devices at those addresses are asked who they are; one that says it is this device, or cannot
    say (it may be this one, moved), keeps its attempts in the way of the close."""
    identify = getattr(provider, "identify", None)
    if not ref.identity or not callable(identify):
        return []
    from ..agents.service import uses_agent

    async with db.reader() as s:
        rows = list(
            (
                await s.execute(
                    select(PaymentAttempt)
                    .where(
                        PaymentAttempt.provider_id == ref.provider_id,
                        PaymentAttempt.device_key != ref.device_key,
                        PaymentAttempt.device_identity.is_(None),
                        PaymentAttempt.state.in_((*lc.IN_FLIGHT, *lc.DOUBTFUL)),
                    )
                    .order_by(PaymentAttempt.id)
                )
            ).scalars()
        )
        known = {a.device_key: await devices.known_device(s, a.device_key) for a in rows}
    found: list[PaymentAttempt] = []
    said: dict[str, str | None] = {}
    for a in rows:
        if uses_agent({a.provider_id: a.device_settings or {}}):
            continue  # a register agent's own device: not reached over an address
        if a.device_key not in said:
            row = known.get(a.device_key)
            if row is not None and row.identity:
                said[a.device_key] = row.identity
            else:
                try:
                    settings = validate_settings(provider, a.device_settings or {})
                    ctx = ProviderContext(register_id=a.register_id or 0, venue_id=a.venue_id or 0, agent=None)
                    answer = await asyncio.wait_for(identify(settings, ctx), clock.timer(min(timeout_s, 15.0)))
                    said[a.device_key] = answer.identity
                except Exception:  # noqa: BLE001 - it cannot say: it may be this very device
                    said[a.device_key] = None
        if said[a.device_key] in (None, ref.identity):
            found.append(a)
    return found


async def close_device_batch(
    db: Any,
    registry: ProviderRegistry,
    provider_id: str,
    settings: dict[str, Any],
    *,
    user_id: int | None = None,
    source: str = "cli",
    clock: Clock = SYSTEM_CLOCK,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TerminalCloseOut:
    """The batch close of a device given by its connection settings (a provider's close command): refused,
    with the reason, while caja has attempts in flight or in doubt on it; recorded otherwise."""
    async with db.reader() as s:
        ref = await device_terminal(s, registry, provider_id, settings)
    return await close_batch(db, registry, ref, user_id=user_id, source=source, clock=clock, timeout_s=timeout_s)


# --- a close run on the device itself --------------------------------------------------------------------


def _sent(a: PaymentAttempt) -> datetime:
    return a.sent_at or a.created_at


def voids_and_erased(
    report: TerminalReport, approved: list[PaymentAttempt]
) -> tuple[list[PaymentAttempt], list[PaymentAttempt]]:
    """Of the charges caja approved on a device since its last recorded close, those its report no longer
    lists as charged, split in two: (voided on the device, erased by a batch close caja never ran).

    A close erases every sale before it, a void only the one sale. So a missing charge is a void when the
    device lists it as not approved, or when a charge caja approved there *before* it is still listed (a close
    after it would have erased that one too); the others are voids only when the device's own count of voids in
    this batch covers them (how many, and for how much), after the voids already told apart. Whatever is left
    was erased by a close."""
    listed = {t.ticket for t in report.sales if t.approved}
    listed_not_approved = {t.ticket for t in report.sales if not t.approved}
    if report.sales or report.count == 0:
        missing = [a for a in approved if a.ticket not in listed]
    else:  # totals without the list: fewer sales than caja approved there since the last close
        missing = approved if report.count < len(approved) else []
    still = [a for a in approved if a.ticket in listed]
    oldest_listed = min((_sent(a) for a in still), default=None)
    voided = [
        a
        for a in missing
        if a.ticket in listed_not_approved or (oldest_listed is not None and _sent(a) > oldest_listed)
    ]
    rest = [a for a in missing if a not in voided]
    if rest and report.voided_count is not None and report.voided_total is not None:
        room_count = report.voided_count - len(voided)
        room_total = report.voided_total - sum(a.amount for a in voided)
        if len(rest) <= room_count and sum(a.amount for a in rest) <= room_total:
            voided, rest = voided + rest, []
    return voided, rest


async def close_by_the_device(
    db: Any,
    provider: PaymentProvider,
    settings: Any,
    ctx: ProviderContext,
    attempt: Any,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[str | None, bool]:
    """Before a device's "that ticket is not in my list" is taken as proof that ``attempt`` was not charged: was
    the list cut by a batch close caja never ran (on the device's keypad, or its automatic close)? caja is not
    told of such a close, but the device's own report then lacks the charges caja approved on it since its
    last recorded close. When one is missing and no void on the device explains it (``voids_and_erased``), the
    close is recorded now (``source="terminal"``: nothing sent before it is declared not charged from that
    list) and the answer is no proof. A charge voided on the device is no close: it is a difference on that
    ticket (an incident; caja's sale is not changed).

    A close that leaves no such trace — nothing approved on the device since the last close caja knows — cannot
    be seen from the device's answers. So when caja lost sight of the device after this attempt was sent (a
    question about it went unanswered: the device was off, unplugged or unreachable, the moments a close on its
    keypad goes unseen) the list is proof only if a charge caja approved there before this one is still listed.

    Returns (why not proof, permanent?); (None, False) when the list can be trusted."""
    report_fn = getattr(provider, "terminal_report", None)
    if Capability.TERMINAL_REPORT not in _caps(provider, settings) or not callable(report_fn):
        return None, False
    async with db.reader() as s:
        this = await s.get(PaymentAttempt, attempt.id)
        last = await devices.last_close(s, device_key=attempt.device_key, identity=attempt.device_identity)
        q = select(PaymentAttempt).where(
            devices.same_device(attempt.device_key, attempt.device_identity),
            PaymentAttempt.id != attempt.id,
            PaymentAttempt.state.in_((lc.APPROVED, lc.REFUND_DUE)),
        )
        if last is not None:
            q = q.where(func.coalesce(PaymentAttempt.sent_at, PaymentAttempt.created_at) >= last.closed_at)
        approved = list((await s.execute(q.order_by(PaymentAttempt.id))).scalars())
    unseen = bool(this is not None and (this.details or {}).get("unreached_at"))
    sent = _sent(this) if this is not None else clock.now()
    unwatched = (
        "caja perdió contacto con el terminal después de enviar este cobro: un cierre de lote hecho en el terminal "
        "en ese rato borra su lista, así que no encontrarlo no prueba que no se cobró. Revise en el terminal si "
        "hubo un cierre de lote después del envío y busque el voucher de este monto."
    )
    if not approved:
        return (unwatched, True) if unseen else (None, False)
    try:
        report: TerminalReport = await asyncio.wait_for(report_fn(settings, ctx), clock.timer(timeout_s))
    except Exception as exc:  # noqa: BLE001 - unchecked: not proof this time, asked again later
        return (
            f"El terminal no entregó su reporte de ventas ({str(exc)[:100] or type(exc).__name__}): no se puede "
            "saber si hizo un cierre de lote.",
            False,
        )
    voided, missing = voids_and_erased(report, approved)
    if voided:
        await _voided_on_the_device(db, attempt, voided)
    if not missing:
        listed = {t.ticket for t in report.sales if t.approved}
        if unseen and not any(a.ticket in listed and _sent(a) < sent for a in approved):
            return unwatched, True
        return None, False
    async with db.session() as s:
        known = await devices.known_device(s, attempt.device_key)
        label = (known.label if known and known.label else attempt.device_key)[:200]
        row = TerminalClose(
            venue_id=attempt.venue_id,
            jornada_id=await _open_jornada(s, attempt.venue_id),
            register_id=attempt.register_id,
            provider_id=attempt.provider_id,
            device_key=attempt.device_key,
            device_identity=attempt.device_identity,
            device_label=label,
            closed_at=clock.now(),
            count=len(missing),
            total=sum(a.amount for a in missing),
            sales=[{"ticket": a.ticket, "amount": a.amount, "attempt_id": a.id} for a in missing],
            source="terminal",
        )
        s.add(row)
        await s.flush()
        await record(
            s,
            venue_id=attempt.venue_id,
            user_id=None,
            action="terminal.closed_by_itself",
            entity="terminal",
            entity_id=row.id,
            payload={
                "device": label,
                "missing": [a.ticket for a in missing][:20],
                "attempt_id": attempt.id,
            },
        )
    log.warning(
        "device %s no longer lists %d charge(s) caja approved on it: it closed its batch without caja",
        attempt.device_key,
        len(missing),
    )
    first = missing[0]
    return (
        f"El terminal hizo un cierre de lote sin caja (en el terminal mismo): ya no registra el ticket {first.ticket} "
        f"({format_clp(first.amount)}, intento #{first.id}) que aprobó antes, así que no encontrar este cobro no "
        "prueba que no se cobró.",
        True,
    )


def _voided_text(a: PaymentAttempt, label: str) -> str:
    return (
        f"El terminal {label} ya no registra como cobrado el ticket {a.ticket} ({format_clp(a.amount)}, intento "
        f"#{a.id}): fue anulado en el terminal mismo, sin caja. En caja la venta sigue pagada con tarjeta: revise "
        "con quien anuló si el dinero se devolvió al cliente y regístrelo (devolución o anulación de la venta)."
    )


async def _tell_void(s: AsyncSession, a: PaymentAttempt, label: str, *, seen_by: dict[str, Any]) -> int:
    """A charge caja approved, voided on the device itself: a difference on that ticket, one incident opened
    once whoever notices it first (a payment's reconciliation or the terminal check), never a close; caja's sale
    is not changed by it. Returns the incident's id."""
    from ..audit.models import Incident
    from ..sales.models import Sale

    told = (
        await s.execute(select(Incident.id).where(Incident.attempt_id == a.id, Incident.kind == "terminal_difference"))
    ).scalar()
    if told is not None:
        return int(told)  # told once (resolved or not): asking the terminal again does not reopen it
    jornada_id = (await s.execute(select(Sale.jornada_id).where(Sale.id == a.sale_id))).scalar_one_or_none()
    incident_id = await open_incident(
        s,
        venue_id=a.venue_id,
        kind="terminal_difference",
        description=_voided_text(a, label),
        jornada_id=jornada_id,
        register_id=a.register_id,
        attempt_id=a.id,
    )
    await record(
        s,
        venue_id=a.venue_id,
        user_id=None,
        action="terminal.voided_on_device",
        entity="payment_attempt",
        entity_id=a.id,
        payload={"device": label, "ticket": a.ticket, "amount": a.amount, **seen_by},
    )
    return incident_id


async def _voided_on_the_device(db: Any, attempt: Any, voided: list[PaymentAttempt]) -> None:
    """The voids a payment's reconciliation found on the device (``_tell_void``)."""
    async with db.session() as s:
        known = await devices.known_device(s, attempt.device_key)
        label = (known.label if known and known.label else attempt.device_key)[:200]
        for a in voided:
            await _tell_void(s, a, label, seen_by={"asked_for": attempt.id})
    log.warning(
        "device %s no longer lists %d charge(s) caja approved on it: voided on it", attempt.device_key, len(voided)
    )


async def list_closes(s: AsyncSession, venue_id: int, *, jornada_id: int | None = None) -> list[TerminalCloseOut]:
    q = select(TerminalClose).where(TerminalClose.venue_id == venue_id)
    if jornada_id is not None:
        q = q.where(TerminalClose.jornada_id == jornada_id)
    return [close_out(r) for r in (await s.execute(q.order_by(TerminalClose.closed_at))).scalars()]


# --- nightly check -----------------------------------------------------------------------------------------


async def venue_terminals(
    s: AsyncSession, registry: ProviderRegistry, venue_id: int, jornada_id: int | None
) -> list[TerminalRef]:
    """The devices to check: those the venue's registers reach now, and those that charged in the jornada."""
    from ..registers.models import CashRegister
    from ..sales.models import Sale

    found: dict[str, TerminalRef] = {}

    async def add(provider_id: str, raw: dict, register_id: int | None, code: str) -> None:
        if provider_id not in registry:
            return
        provider = registry.get(provider_id)
        try:
            settings = validate_settings(provider, raw)
        except ValidationFailed:
            return
        if Capability.TERMINAL_REPORT not in _caps(provider, settings) or not callable(
            getattr(provider, "terminal_report", None)
        ):
            return
        key = device_key_of(provider, settings, code)
        known = await devices.known_device(s, key)
        identity = known.identity if known else None
        group = identity or key
        if group in found or any(r.device_key == key for r in found.values()):
            return
        found[group] = TerminalRef(
            provider_id=provider_id,
            device_key=key,
            identity=identity,
            label=(known.label if known and known.label else f"{provider.name} {code}".strip()),
            settings=settings_to_json(settings),
            register_id=register_id,
            venue_id=venue_id,
        )

    registers = (
        await s.execute(select(CashRegister).where(CashRegister.venue_id == venue_id).order_by(CashRegister.code))
    ).scalars()
    for register in list(registers):
        for pid in (register.primary_provider, register.backup_provider):
            if pid:
                await add(pid, dict((register.provider_settings or {}).get(pid) or {}), register.id, register.code)
    if jornada_id is not None:
        rows = (
            await s.execute(
                select(PaymentAttempt)
                .join(Sale, Sale.id == PaymentAttempt.sale_id)
                .where(Sale.jornada_id == jornada_id, PaymentAttempt.device_settings.is_not(None))
                .order_by(PaymentAttempt.id.desc())
            )
        ).scalars()
        codes = {r.id: r.code for r in (await s.execute(select(CashRegister))).scalars()}
        for a in list(rows):
            await add(a.provider_id, dict(a.device_settings or {}), a.register_id, codes.get(a.register_id, ""))
    return list(found.values())


async def _caja_charges(s: AsyncSession, ref: TerminalRef, since: datetime | None) -> list[PaymentAttempt]:
    q = select(PaymentAttempt).where(devices.same_device(ref.device_key, ref.identity))
    if since is not None:
        q = q.where(func.coalesce(PaymentAttempt.sent_at, PaymentAttempt.created_at) >= since)
    return list((await s.execute(q.order_by(PaymentAttempt.id))).scalars())


def compare(
    report: TerminalReport,
    attempts: list[PaymentAttempt],
    *,
    since: datetime | None,
    from_close: bool,
    known: list[PaymentAttempt] | None = None,
) -> tuple[list[Difference], int, int]:
    """The differences between what the device says it charged and what caja approved on it; also caja's
    count and total. ``known``: caja's attempts the device may still list (when the last close is one caja only
    noticed later, the device lists what it charged between its real close and then)."""
    charged = [a for a in attempts if a.state in (lc.APPROVED, lc.REFUND_DUE)]
    caja_count, caja_total = len(charged), sum(a.amount for a in charged)
    diffs: list[Difference] = []
    by_ticket = {a.ticket: a for a in (known if known is not None else attempts)}
    sales = [t for t in report.sales if t.approved]
    if not from_close and since is not None:
        # The device may still list sales from before the jornada (no close since). Its clock reads whole
        # seconds, so a sale in the jornada's first second reads earlier than the opening: compare from the
        # opening's whole second, and never drop a ticket that is one of caja's own attempts of the jornada.
        start = since.replace(microsecond=0)
        sales = [t for t in sales if t.ticket in by_ticket or t.occurred_at is None or t.occurred_at >= start]
    if report.sales or report.count == 0:
        seen: set[str] = set()
        for sale in sales:
            seen.add(sale.ticket)
            a = by_ticket.get(sale.ticket)
            if a is None:
                diffs.append(
                    Difference(
                        kind="unknown_charge",
                        ticket=sale.ticket,
                        amount=sale.amount,
                        text=f"El terminal cobró {format_clp(sale.amount)} con el ticket {sale.ticket}, que caja no "
                        f"conoce.",
                    )
                )
            elif a.amount != sale.amount:
                diffs.append(
                    Difference(
                        kind="amount",
                        ticket=sale.ticket,
                        amount=sale.amount,
                        caja_amount=a.amount,
                        attempt_id=a.id,
                        text=f"Ticket {sale.ticket}: el terminal cobró {format_clp(sale.amount)} y caja registró "
                        f"{format_clp(a.amount)} (intento #{a.id}).",
                    )
                )
            elif a.state not in (lc.APPROVED, lc.REFUND_DUE):
                diffs.append(
                    Difference(
                        kind="late_approval",
                        ticket=sale.ticket,
                        amount=sale.amount,
                        attempt_id=a.id,
                        text=f"El terminal cobró el ticket {sale.ticket} ({format_clp(sale.amount)}) que caja tenía "
                        f"como «{lc.label(a.state).lower()}» (intento #{a.id}).",
                    )
                )
        voided = {a.id for a in voids_and_erased(report, charged)[0]}
        for a in charged:
            if a.ticket not in seen and a.id in voided:
                diffs.append(
                    Difference(
                        kind="voided",
                        ticket=a.ticket,
                        caja_amount=a.amount,
                        attempt_id=a.id,
                        text=f"Caja tiene aprobado el ticket {a.ticket} ({format_clp(a.amount)}, intento #{a.id}) y "
                        f"el terminal lo anuló: revise si se devolvió al cliente y regístrelo en caja.",
                    )
                )
            elif a.ticket not in seen:
                diffs.append(
                    Difference(
                        kind="missing_approval",
                        ticket=a.ticket,
                        caja_amount=a.amount,
                        attempt_id=a.id,
                        text=f"Caja tiene aprobado el ticket {a.ticket} ({format_clp(a.amount)}, intento #{a.id}) y "
                        f"el terminal no lo registra.",
                    )
                )
    elif (report.count, report.total) != (caja_count, caja_total):
        diffs.append(
            Difference(
                kind="totals",
                amount=report.total,
                caja_amount=caja_total,
                text=f"El terminal informa {report.count} ventas por {format_clp(report.total)}; caja tiene "
                f"{caja_count} por {format_clp(caja_total)}.",
            )
        )
    return diffs, caja_count, caja_total


async def check_terminals(
    db: Any,
    registry: ProviderRegistry,
    venue_id: int,
    *,
    jornada_id: int | None = None,
    user_id: int | None = None,
    trigger: str = "admin",
    keeper: LeaseKeeper | None = None,
    clock: Clock = SYSTEM_CLOCK,
    agent_channel_factory: Callable[[Any], Any] | None = None,
    apply_outcome: Callable[[int, Outcome], Awaitable[Any]] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[TerminalCheckOut]:
    """Check every device of the venue against caja (see the module docstring)."""
    from ..jornadas.models import Jornada

    keeper = keeper or LeaseKeeper(clock, f"check-{uuid.uuid4().hex[:8]}")
    async with db.reader() as s:
        if jornada_id is None:
            jornada_id = await _open_jornada(s, venue_id)
        jornada = await s.get(Jornada, jornada_id) if jornada_id else None
        refs = await venue_terminals(s, registry, venue_id, jornada_id)
    results: list[TerminalCheckOut] = []
    for ref in refs:
        results.append(
            await _check_one(
                db,
                registry,
                ref,
                venue_id=venue_id,
                jornada=jornada,
                user_id=user_id,
                trigger=trigger,
                keeper=keeper,
                clock=clock,
                agent_channel_factory=agent_channel_factory,
                apply_outcome=apply_outcome,
                timeout_s=timeout_s,
            )
        )
    return results


async def _check_one(
    db: Any,
    registry: ProviderRegistry,
    ref: TerminalRef,
    *,
    venue_id: int,
    jornada: Any,
    user_id: int | None,
    trigger: str,
    keeper: LeaseKeeper,
    clock: Clock,
    agent_channel_factory: Callable[[Any], Any] | None,
    apply_outcome: Callable[[int, Outcome], Awaitable[Any]] | None,
    timeout_s: float,
) -> TerminalCheckOut:
    provider = registry.get(ref.provider_id)
    settings = validate_settings(provider, ref.settings)
    report: TerminalReport | None = None
    message = ""
    waited_s = 0.0
    patience_s = BUSY_WAIT_S if trigger == "jornada_close" else 0.0
    while True:
        try:
            async with hold_device(db, keeper, ref.device_key, purpose="check"):
                report = await asyncio.wait_for(
                    provider.terminal_report(settings, _ctx(ref, agent_channel_factory)),  # type: ignore[attr-defined]
                    clock.timer(timeout_s),
                )
        except Busy:
            # A charge or a question already asked holds the terminal. At jornada close wait for it a while (the
            # reconciliation of a payment just resolved may still be waiting for its answer) before giving up.
            if waited_s < patience_s:
                await asyncio.sleep(clock.timer(BUSY_POLL_S))
                waited_s += BUSY_POLL_S
                continue
            message = "Terminal ocupado con un cobro: no se pudo revisar ahora."
        except Exception as exc:  # noqa: BLE001 - any failure: not checked, and said so
            message = f"El terminal no respondió ({str(exc)[:150] or type(exc).__name__})."
        break
    late: list[tuple[int, Outcome]] = []
    async with db.session() as s:
        last = await devices.last_close(s, device_key=ref.device_key, identity=ref.identity)
        since = last.closed_at if last else (jornada.opened_at if jornada else None)
        attempts = await _caja_charges(s, ref, since)
        known = attempts
        if last is not None and last.source == "terminal":
            # A close run on the device itself, which caja noticed only later (``close_by_the_device``): the
            # device still lists what it charged between that close and the moment caja noticed it.
            before = await devices.last_close(
                s, device_key=ref.device_key, identity=ref.identity, before=last.closed_at
            )
            known = await _caja_charges(
                s, ref, before.closed_at if before else (jornada.opened_at if jornada else None)
            )
        diffs: list[Difference] = []
        caja_count = caja_total = 0
        if report is not None:
            diffs, caja_count, caja_total = compare(
                report, attempts, since=since, from_close=last is not None, known=known
            )
            by_ticket = {a.ticket: a for a in known}
            for d in diffs:
                if d.kind == "late_approval" and d.attempt_id is not None and d.ticket is not None:
                    sale = next(t for t in report.sales if t.ticket == d.ticket)
                    a = by_ticket[d.ticket]
                    late.append(
                        (
                            a.id,
                            Outcome(
                                kind=OutcomeKind.APPROVED,
                                ticket=sale.ticket,
                                amount=sale.amount,
                                occurred_at=sale.occurred_at,
                                card=sale.card,
                                message="Aprobado según el reporte del terminal",
                            ),
                        )
                    )
        else:
            charged = [a for a in attempts if a.state in (lc.APPROVED, lc.REFUND_DUE)]
            caja_count, caja_total = len(charged), sum(a.amount for a in charged)
        ok = report is not None and not diffs
        row = TerminalCheck(
            venue_id=venue_id,
            jornada_id=jornada.id if jornada else None,
            provider_id=ref.provider_id,
            device_key=ref.device_key,
            device_identity=ref.identity,
            device_label=ref.label[:200],
            trigger=trigger[:20],
            checked_at=clock.now(),
            since=since,
            reachable=report is not None,
            ok=ok,
            terminal_count=report.count if report else None,
            terminal_total=report.total if report else None,
            caja_count=caja_count,
            caja_total=caja_total,
            differences=msgspec.to_builtins(diffs),
            message=(message or ("Coincide con caja." if ok else f"{len(diffs)} diferencia(s) con caja."))[:300],
            user_id=user_id,
        )
        s.add(row)
        await s.flush()
        # A void on the device is one incident on its ticket, the same one a payment's reconciliation opens
        # (``_tell_void``): every check while the void stays in the device's batch names it, none opens another.
        by_id = {a.id: a for a in known}
        void_incidents = [
            await _tell_void(s, by_id[d.attempt_id], ref.label[:200], seen_by={"check_id": row.id})
            for d in diffs
            if d.kind == "voided" and d.attempt_id in by_id
        ]
        others = [d for d in diffs if d.kind != "voided"]
        if not ok and not others and void_incidents:
            row.incident_id = void_incidents[0]
        elif not ok:
            what = "; ".join(d.text for d in others[:10]) or message
            row.incident_id = await open_incident(
                s,
                venue_id=venue_id,
                kind="terminal_difference" if report is not None else "terminal_unchecked",
                description=f"Revisión del terminal {ref.label}: {what}"[:1000],
                jornada_id=jornada.id if jornada else None,
                register_id=ref.register_id,
                user_id=user_id,
            )
        await record(
            s,
            venue_id=venue_id,
            user_id=user_id,
            action="terminal.checked",
            entity="terminal",
            entity_id=row.id,
            payload={"device": ref.label, "ok": ok, "differences": len(diffs), "trigger": trigger},
        )
        out = check_out(row)
    if apply_outcome is not None:
        for attempt_id, outcome in late:
            try:
                await apply_outcome(attempt_id, outcome)
            except Exception:
                log.exception("could not apply the device's approval of attempt %s", attempt_id)
    return out


async def list_checks(s: AsyncSession, venue_id: int, *, jornada_id: int | None = None) -> list[TerminalCheckOut]:
    q = select(TerminalCheck).where(TerminalCheck.venue_id == venue_id)
    if jornada_id is not None:
        q = q.where(TerminalCheck.jornada_id == jornada_id)
    return [check_out(r) for r in (await s.execute(q.order_by(TerminalCheck.checked_at))).scalars()]


class PaymentAlerts(msgspec.Struct, kw_only=True):
    """What needs a person, for ``/health``: attempts waiting for a supervisor's decision, duplicate charges
    still to return, and terminal differences not yet resolved."""

    needs_decision: int
    refunds_due: int
    terminal_differences: int


async def payment_alerts(s: AsyncSession) -> PaymentAlerts:
    from ..audit.models import Incident

    needs = (
        await s.execute(
            select(func.count())
            .select_from(PaymentAttempt)
            .where(PaymentAttempt.needs_decision.is_(True), PaymentAttempt.state.in_(lc.UNRESOLVED))
        )
    ).scalar_one()
    due = (
        await s.execute(select(func.count()).select_from(PaymentAttempt).where(PaymentAttempt.state == lc.REFUND_DUE))
    ).scalar_one()
    diffs = (
        await s.execute(
            select(func.count())
            .select_from(Incident)
            .where(Incident.kind.in_(("terminal_difference", "terminal_unchecked")), Incident.resolved.is_(False))
        )
    ).scalar_one()
    return PaymentAlerts(needs_decision=int(needs), refunds_due=int(due), terminal_differences=int(diffs))
