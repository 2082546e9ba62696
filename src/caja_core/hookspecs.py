"""Hook specifications of caja (pluggy project "caja"). Each is documented in plugins/README.md."""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "caja"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_providers(add_provider: Any) -> None:
    """Register payment providers by calling ``add_provider(provider)`` once for each."""


@hookspec
def register_fallback_rules(add_rule: Any) -> None:
    """Register fallback trigger rules by calling ``add_rule(rule)``; a rule decides whether an attempt's
    outcome is a reason to offer the backup provider."""


@hookspec(firstresult=True)
def select_provider(intent: Any, candidates: list[str], policy: Any) -> str | None:
    """Choose which provider id, of ``candidates``, takes a new payment for ``intent``; return None to let
    the next implementation decide."""


@hookspec
def on_payment_event(event: Any) -> None:
    """React to a payment event (attempt started, approved, declined, in doubt, fell back, overridden,
    reconciled). Must be fast and must not raise: the money path does not wait on it."""


@hookspec
def template_dirs() -> list[str] | None:
    """Return extra template directories for the web app (searched before the built-in ones)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``caja`` command-line group ``cli`` (a click Group)."""


@hookspec
def register_printers(add_printer: Any) -> None:
    """Register receipt printers (ways to reach a printer) by calling ``add_printer(printer)`` once for each."""
