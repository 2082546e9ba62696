"""caja plugin registration for GETNET."""

from __future__ import annotations

from collections.abc import Callable

import click

from caja_core import PaymentProvider, ProviderDefault, hookimpl

#: ``caja getnet simulate --tcp 127.0.0.1:9100``: where the demo's registers find their terminal.
DEMO_TERMINAL = {"connection": "tcp", "host": "127.0.0.1", "port": 9100}


@hookimpl
def register_providers(add_provider: Callable[[PaymentProvider], None]) -> None:
    from .provider import provider

    add_provider(provider)


@hookimpl
def provider_defaults(register_type: str, demo_url: str | None) -> list[ProviderDefault] | None:
    """The integrated terminal is the primary of every register that has a cashier or a totem."""
    if register_type == "VIRTUAL":
        return None
    return [ProviderDefault(provider_id="getnet", role="primary", settings=DEMO_TERMINAL if demo_url else {})]


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import agent_cmd, getnet

    cli.add_command(getnet)
    cli.add_command(agent_cmd)
