"""``caja klap …``: check a KLAP sales report before uploading it, and run the fake KLAP API for rehearsals."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click


@click.group("klap")
def klap() -> None:
    """Respaldo KLAP: revisar reportes de ventas y ensayar el modo checkout."""


@klap.command("check-report")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_report(path: Path) -> None:
    """Revisa un reporte de ventas KLAP (CSV) sin aplicarlo: filas leídas, omitidas y con errores."""
    from caja_core.money import format_clp

    from .report import parse_report

    parsed = parse_report(path.read_bytes())
    click.echo(f"Columnas: {', '.join(f'{k}={v!r}' for k, v in parsed.columns.items()) or '—'}")
    click.echo(f"Ventas aprobadas: {len(parsed.rows)} por {format_clp(sum(r.amount for r in parsed.rows))}")
    for skipped in parsed.skipped:
        click.echo(f"  omitida fila {skipped.line}: {skipped.message}")
    for error in parsed.errors:
        click.echo(f"  ERROR fila {error.line}: {error.message}", err=True)
    if not parsed.ok:
        raise SystemExit(2)


@klap.command("fake-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", default="demo", show_default=True)
def fake_server(host: str, port: int, api_key: str) -> None:
    """API KLAP falsa para ensayos (órdenes, estado y webhooks firmados como KLAP)."""
    from .fake_server import FakeKlapServer

    async def serve() -> None:
        server = await FakeKlapServer(api_key=api_key, host=host, port=port).start()
        click.echo(f"KLAP falso en {server.api_base_url}; pague una orden con POST {server.url}/fake/pay/<orden>")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
