"""“Probar terminal”: ask a register's card provider whether its terminal answers. Never a sale.

The check goes through the provider's ``health`` (for a card terminal: its keep-alive message) with the same
context a payment gets, so a terminal behind the register's agent is reached through the agent channel. The
admin page calls ``probe_terminal(...)`` and shows ``message``; no transport error reaches the web layer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import ValidationFailed
from ..providers import OutcomeKind, ProviderContext, ProviderRegistry
from ..registers import service as registers

DEFAULT_TIMEOUT_S = 10.0


class TerminalProbe(msgspec.Struct, kw_only=True):
    ok: bool
    #: One line in Spanish for the admin (the terminal's own message when it gave one).
    message: str
    #: How long the provider took to answer, in milliseconds (None when it never answered).
    latency_ms: int | None
    provider_id: str | None
    via_agent: bool = False


async def probe_terminal(
    db: Any,
    registry: ProviderRegistry,
    venue_id: int,
    register_id: int,
    provider_id: str | None = None,
    *,
    agent_channel_factory: Callable[[Any], Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
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
    started = time.monotonic()
    try:
        outcome = await asyncio.wait_for(provider.health(settings, ctx), timeout_s)
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
    )
