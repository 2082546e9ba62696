"""caja plugin registration for GETNET."""

from __future__ import annotations

from caja_core import hookimpl


@hookimpl
def register_providers(add_provider):
    from .provider import provider

    add_provider(provider)


@hookimpl
def register_commands(cli):
    from .cli import agent_cmd, getnet

    cli.add_command(getnet)
    cli.add_command(agent_cmd)
