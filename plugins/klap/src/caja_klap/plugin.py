"""caja plugin registration for KLAP."""

from __future__ import annotations

from caja_core import hookimpl


@hookimpl
def register_providers(add_provider):
    from .provider import provider

    add_provider(provider)


@hookimpl
def register_commands(cli):
    from .cli import klap

    cli.add_command(klap)
