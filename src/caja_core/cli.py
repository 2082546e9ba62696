"""The ``caja`` command. Core commands live here; plugins add theirs through ``register_commands``.

Bad arguments print one clear line and exit with code 2.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .errors import CajaError


class CajaGroup(click.Group):
    """A click group whose usage errors and domain errors are one line and exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("standalone_mode", False)
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("caja: cancelado.", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            hint = f" (ver: caja {exc.ctx.command_path.partition(' ')[2]} --help)".replace("  ", " ") if exc.ctx else ""
            click.echo(f"caja: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"caja: {exc.format_message()}", err=True)
            sys.exit(2)
        except CajaError as exc:
            fields = "; ".join(f"{k}: {v}" for k, v in exc.fields.items() if v != exc.message)
            click.echo(f"caja: {exc.message}" + (f" ({fields})" if fields else ""), err=True)
            sys.exit(2)


@click.group(cls=CajaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="caja-core", prog_name="caja")
def cli() -> None:
    """caja: cajas registradoras y pagos con tarjeta para locales nocturnos."""


def _load_plugin_commands() -> None:
    from .plugins import make_plugin_manager

    pm = make_plugin_manager()
    pm.hook.register_commands(cli=cli)


def main(argv: list[str] | None = None) -> None:
    from . import commands  # noqa: F401  (registers the core commands on ``cli``)

    try:
        _load_plugin_commands()
    except CajaError as exc:
        click.echo(f"caja: {exc.message}", err=True)
        sys.exit(2)
    result = cli.main(args=argv, prog_name="caja")
    if isinstance(result, int) and result:
        sys.exit(result)
