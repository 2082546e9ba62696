"""Hook specifications of caja (pluggy project "caja"). Each is documented in plugins/README.md.

The annotations are the types the core passes and expects; the types live in the core modules named below
(imported only for type checkers, so loading the specs stays cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from .fallback.policy import FallbackPolicy, FallbackRule
    from .payments.events import PaymentEvent
    from .printing.drivers import Printer
    from .providers import PaymentProvider, ProviderDefault
    from .sales.models import Sale

PROJECT = "caja"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(add_provider: Callable[[PaymentProvider], None]) -> None:
    """Register payment providers by calling ``add_provider(provider)`` once for each."""


@hookspec
def provider_defaults(register_type: str, demo_url: str | None) -> list[ProviderDefault] | None:
    """Propose this plugin's providers for a new register of ``register_type`` (primary or backup, with
    starting settings); with ``demo_url`` (the demo's public address), settings that reach the plugin's demo
    device or fake server instead."""


@hookspec
def register_fallback_rules(add_rule: Callable[[FallbackRule], None]) -> None:
    """Register fallback trigger rules by calling ``add_rule(rule)``; a rule decides whether an attempt's
    outcome is a reason to offer the backup provider."""


@hookspec(firstresult=True)
def select_provider(intent: Sale, candidates: list[str], policy: FallbackPolicy) -> str | None:
    """Choose which provider id, of ``candidates``, takes a new payment for ``intent``; return None to let
    the next implementation decide."""


@hookspec
def on_payment_event(event: PaymentEvent) -> None:
    """React to a payment event (attempt started, approved, declined, in doubt, fell back, overridden,
    reconciled). Must be fast; an exception is logged and counted, and the other listeners still run. A plugin's
    listener never holds the payment: ``async def`` ones are cancelled after a bound, synchronous ones run in
    the plugin's own thread (``caja_core.plugins.call_event``)."""


@hookspec
def template_dirs() -> list[str] | None:
    """Return extra template directories for the web app (searched before the built-in ones)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``caja`` command-line group ``cli`` (a click Group)."""


@hookspec
def register_printers(add_printer: Callable[[Printer], None]) -> None:
    """Register receipt printers (ways to reach a printer) by calling ``add_printer(printer)`` once for each."""
