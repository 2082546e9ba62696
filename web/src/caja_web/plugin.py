"""caja plugin registration for the web package: adds ``caja serve`` and ``caja demo``."""

from __future__ import annotations

from caja_core import hookimpl


@hookimpl
def register_commands(cli):
    from .commands import demo, serve

    cli.add_command(serve)
    cli.add_command(demo)
