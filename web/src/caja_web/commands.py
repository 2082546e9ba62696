"""``caja serve`` and ``caja demo``."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default=None, help="Dirección (por defecto CAJA_HOST o 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Puerto (por defecto CAJA_PORT o 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Sirve la aplicación web."""
    raise click.ClickException("aún no disponible")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, type=int, show_default=True)
def demo(host: str, port: int) -> None:
    """Crea (o reutiliza) una base SQLite de demostración con datos de ejemplo y la sirve."""
    raise click.ClickException("aún no disponible")
