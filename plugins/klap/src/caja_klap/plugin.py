"""caja plugin registration for KLAP."""

from __future__ import annotations

from collections.abc import Callable

import click

from caja_core import PaymentProvider, ProviderDefault, hookimpl


@hookimpl
def register_providers(add_provider: Callable[[PaymentProvider], None]) -> None:
    from .provider import provider

    add_provider(provider)


@hookimpl
def provider_defaults(register_type: str, demo_url: str | None) -> list[ProviderDefault] | None:
    """Tap-on-phone is the backup of every register with a cashier or a totem; an online (VIRTUAL) register
    sells through KLAP Checkout. The demo's checkout points at ``caja klap fake-server`` (127.0.0.1:8089, API
    key ``demo``) with its webhooks sent back to the demo."""
    if register_type != "VIRTUAL":
        return [ProviderDefault(provider_id="klap", role="backup")]
    settings: dict[str, object] = {"mode": "checkout"}
    if demo_url:
        settings |= {
            "api_base_url": "http://127.0.0.1:8089",
            "api_key": "demo",
            "webhook_url": f"{demo_url.rstrip('/')}/webhooks/klap",
        }
    return [ProviderDefault(provider_id="klap", role="primary", settings=settings)]


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import klap

    cli.add_command(klap)
