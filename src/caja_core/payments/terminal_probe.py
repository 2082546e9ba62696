"""“Probar terminal”: ask a register's card provider whether its terminal answers. Never a sale.

The check goes through the provider's ``health`` (for a card terminal: its keep-alive message) with the same
context a payment gets, so a terminal behind the register's agent is reached through the agent channel. The
admin page calls ``probe_terminal(...)`` and shows ``message``; no transport error reaches the web layer.

Given the app's ``LeaseKeeper``, the check holds the device's lease like any other command, so it never talks to
a terminal in the middle of a sale, a question or a batch close (from this server or another, under any spelling
of its address): it says the terminal is busy instead (``busy``) and sends nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import Busy, ValidationFailed
from ..providers import Capability, OutcomeKind, ProviderContext, ProviderRegistry, ask_provider, device_key_of
from ..registers import service as registers
from .leases import LeaseKeeper
from .terminal_ops import hold_device

DEFAULT_TIMEOUT_S = 10.0


class TerminalProbe(msgspec.Struct, kw_only=True):
    ok: bool
    #: One line in Spanish for the admin (the terminal's own message when it gave one).
    message: str
    #: How long the provider took to answer, in milliseconds (None when it never answered).
    latency_ms: int | None
    provider_id: str | None
    via_agent: bool = False
    #: The terminal was busy with a charge or another command: nothing was sent to it.
    busy: bool = False


async def probe_terminal(
    db: Any,
    registry: ProviderRegistry,
    venue_id: int,
    register_id: int,
    provider_id: str | None = None,
    *,
    agent_channel_factory: Callable[[Any], Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    leases: LeaseKeeper | None = None,
) -> TerminalProbe:
    """Check the terminal of ``register_id`` (its primary provider, or ``provider_id``: the primary or the
    backup). Raises ``NotFound`` for another venue's register and ``ValidationFailed`` for a provider the
    register does not use; everything the transport does wrong comes back as ``ok=False`` with a message."""
    async with db.reader() as s:
        register = await registers.get_register(s, venue_id, register_id)
    chosen = provider_id or register.primary_provider
    if not chosen:
        return TerminalProbe(
            ok=False, message="La caja no tiene proveedor de tarjeta.", latency_ms=None, provider_id=None
        )
    if chosen not in (register.primary_provider, register.backup_provider) or chosen not in registry:
        raise ValidationFailed(
            "Ese proveedor no está configurado en esta caja.",
            field="provider_id",
            code="terminal_probe.unknown_provider",
        )
    provider = registry.get(chosen)
    settings = registers.provider_settings(register, provider)
    agent = agent_channel_factory(register) if agent_channel_factory else None
    ctx = ProviderContext(register_id=register.id, venue_id=register.venue_id, agent=agent)
    device_key = None
    if leases is not None and Capability.MANUAL not in provider.capabilities:
        try:
            device_key = device_key_of(provider, settings, register.code)
        except Exception:  # noqa: BLE001 - settings that name no device: the check itself says what is wrong
            device_key = None
    started = time.monotonic()
    try:
        if device_key is None or leases is None:
            outcome = await asyncio.wait_for(
                ask_provider(provider.id, "health", provider.health(settings, ctx)), timeout_s
            )
        else:
            async with hold_device(db, leases, device_key, purpose="probe"):
                outcome = await asyncio.wait_for(
                    ask_provider(provider.id, "health", provider.health(settings, ctx)), timeout_s
                )
    except Busy:
        return TerminalProbe(
            ok=False,
            busy=True,
            message="está atendiendo un cobro u otra consulta; no se le envió nada para no interrumpirlo. "
            "Pruebe de nuevo en unos segundos.",
            latency_ms=None,
            provider_id=chosen,
            via_agent=agent is not None,
        )
    except TimeoutError:
        return TerminalProbe(
            ok=False,
            message=f"El terminal no respondió en {timeout_s:.0f} s.",
            latency_ms=None,
            provider_id=chosen,
            via_agent=agent is not None,
        )
    except Exception as exc:  # noqa: BLE001 - whatever the transport raised, the admin gets one line
        return TerminalProbe(
            ok=False,
            message=f"No se pudo conectar con el terminal ({type(exc).__name__}).",
            latency_ms=None,
            provider_id=chosen,
            via_agent=agent is not None,
        )
    latency_ms = round((time.monotonic() - started) * 1000)
    return TerminalProbe(
        ok=outcome.kind is OutcomeKind.APPROVED,
        message=outcome.message or outcome.kind.value,
        latency_ms=latency_ms,
        provider_id=chosen,
        via_agent=agent is not None,
    )


async def probe_terminal_with(
    orchestrator: Any,
    venue_id: int,
    register_id: int,
    provider_id: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TerminalProbe:
    """``probe_terminal`` with the database, providers and agent channels of a running PaymentOrchestrator."""
    return await probe_terminal(
        orchestrator.db,
        orchestrator.registry,
        venue_id,
        register_id,
        provider_id,
        agent_channel_factory=getattr(orchestrator, "agent_channel_factory", None),
        timeout_s=timeout_s,
        leases=getattr(orchestrator, "leases", None),
    )
