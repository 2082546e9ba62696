"""``caja getnet …``: installer diagnostics against a real terminal, and the terminal simulator.

Diagnostics print the terminal's answer as JSON (card data masked) and exit with:
0 approved / answered OK, 1 declined (non-zero ResponseCode), 3 transport problem or in doubt,
2 bad arguments (one line). ``close`` is not a bare diagnostic: it goes through caja's batch-close service (it
needs the database), which records the close and refuses it while caja has attempts in doubt on the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from datetime import datetime
from typing import Any

import click

from .client import GetnetClient, InDoubt, NoReceipt
from .protocol import Command, Deadlines, Response, mask_response
from .transport import TerminalUnavailable, make_transport

EXIT_OK, EXIT_DECLINED, EXIT_TRANSPORT = 0, 1, 3

_TICKET = re.compile(r"^[A-Za-z0-9-]{1,20}$")


def _host_port(value: str | None, option: str, *, allow_any_port: bool = False) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    lowest = 0 if allow_any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise click.BadParameter(f"se espera HOST:PUERTO, no {value!r}", param_hint=option)
    return host, int(port)


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


def _run_diagnostic(
    tcp: str | None, serial_path: str | None, receipt_timeout: float, timeout: float | None, action
) -> int:
    address = _host_port(tcp, "--tcp")
    if (address is None) == (serial_path is None):
        raise click.UsageError("indique el terminal con --tcp HOST:PUERTO o con --serial RUTA (uno de los dos).")
    transport = make_transport(
        host=address[0] if address else None,
        port=address[1] if address else None,
        serial_path=serial_path,
        connect_timeout_s=receipt_timeout,
    )
    deadlines = Deadlines(receipt_s=receipt_timeout)
    if timeout is not None:
        deadlines = Deadlines(receipt_s=receipt_timeout, sale_s=timeout, short_s=timeout, other_s=timeout)
    client = GetnetClient(transport, deadlines=deadlines)

    async def go() -> int:
        try:
            data = await action(client)
        except TerminalUnavailable as exc:
            _emit({"error": "unavailable", "message": str(exc)})
            return EXIT_TRANSPORT
        except NoReceipt as exc:
            _emit({"error": "no_receipt", "message": str(exc)})
            return EXIT_TRANSPORT
        except InDoubt as exc:
            _emit({"error": "in_doubt", "message": str(exc)})
            return EXIT_TRANSPORT
        if isinstance(data, tuple):  # (response, problem)
            data, problem = data
            _emit({"error": "in_doubt", "message": problem, "response": mask_response(data)})
            return EXIT_TRANSPORT
        _emit(mask_response(data))
        return EXIT_OK if Response(data).response_code == 0 else EXIT_DECLINED

    return asyncio.run(go())


def _terminal_options(func):
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1, max=600),
        default=None,
        help="Plazo de respuesta en segundos (por defecto el del terminal).",
    )(func)
    func = click.option(
        "--receipt-timeout",
        type=click.FloatRange(min=0.1, max=60),
        default=3.0,
        show_default=True,
        help="Espera del acuse de recibo en segundos.",
    )(func)
    func = click.option("--serial", "serial_path", metavar="RUTA", help="Puerto serie (p. ej. /dev/ttyACM0).")(func)
    func = click.option("--tcp", metavar="HOST:PUERTO", help="Terminal por red.")(func)
    return func


@click.group("getnet")
def getnet() -> None:
    """Terminal GETNET: diagnóstico de instalación y simulador."""


@getnet.command("poll")
@_terminal_options
def poll_cmd(tcp, serial_path, receipt_timeout, timeout) -> int:
    """¿Responde el terminal? (Poll, 106)."""
    return _run_diagnostic(tcp, serial_path, receipt_timeout, timeout, lambda c: c.poll())


@getnet.command("sale")
@_terminal_options
@click.option("--amount", type=click.IntRange(min=1, max=99_999_999), required=True, help="Monto en pesos enteros.")
@click.option("--ticket", default=None, help="Número de ticket (letras, dígitos y guiones; hasta 20).")
@click.option("--no-messages", is_flag=True, help="No pedir mensajes intermedios (SendMessage=false).")
def sale_cmd(tcp, serial_path, receipt_timeout, timeout, amount, ticket, no_messages) -> int:
    """Una venta de prueba (Sale, 100)."""
    ticket = ticket or "D" + datetime.now().strftime("%m%d%H%M%S")
    if not _TICKET.match(ticket):
        raise click.BadParameter("solo letras, dígitos y guiones, hasta 20 caracteres", param_hint="--ticket")

    async def progress(code: int | None, text: str) -> None:
        click.echo(f"[{code}] {text}" if code is not None else text, err=True)

    async def action(client: GetnetClient):
        data = await client.sale(amount=amount, ticket=ticket, send_message=not no_messages, progress=progress)
        if Response(data).response_code == 0 and data.get("Amount") != amount:
            return data, f"aprobación por un monto distinto ({data.get('Amount')} en vez de {amount})"
        return data

    return _run_diagnostic(tcp, serial_path, receipt_timeout, timeout, action)


@getnet.command("last-sale")
@_terminal_options
def last_sale_cmd(tcp, serial_path, receipt_timeout, timeout) -> int:
    """La última venta del terminal (LastVoucher, 101)."""
    return _run_diagnostic(tcp, serial_path, receipt_timeout, timeout, lambda c: c.last_voucher())


@getnet.command("details")
@_terminal_options
def details_cmd(tcp, serial_path, receipt_timeout, timeout) -> int:
    """Las ventas desde el último cierre (Details, 105)."""
    return _run_diagnostic(tcp, serial_path, receipt_timeout, timeout, lambda c: c.details())


@getnet.command("totals")
@_terminal_options
def totals_cmd(tcp, serial_path, receipt_timeout, timeout) -> int:
    """Totales desde el último cierre (Totals, 104)."""
    return _run_diagnostic(tcp, serial_path, receipt_timeout, timeout, lambda c: c.totals())


@getnet.command("close")
@_terminal_options
def close_cmd(tcp, serial_path, receipt_timeout, timeout) -> int:
    """Cierre de lote del terminal (Close, 103), registrado en caja (CAJA_DATABASE_URL). caja lo niega, con el
    motivo, mientras tenga cobros sin resolver en ese terminal: el cierre borraría la prueba de si se cobraron."""
    address = _host_port(tcp, "--tcp")
    if (address is None) == (serial_path is None):
        raise click.UsageError("indique el terminal con --tcp HOST:PUERTO o con --serial RUTA (uno de los dos).")
    raw: dict[str, Any] = (
        {"connection": "tcp", "host": address[0], "port": address[1]}
        if address
        else {"connection": "serial", "serial_path": serial_path}
    )
    raw["receipt_timeout_s"] = receipt_timeout
    if timeout is not None:
        raw.update(short_timeout_s=timeout, other_timeout_s=timeout)
    return asyncio.run(_close_through_caja(raw))


async def _close_through_caja(raw: dict[str, Any]) -> int:
    """The batch close through caja's own service: recorded with the terminal's totals, refused while caja has
    attempts in flight or in doubt on that terminal. Exit 0 closed, 1 refused by caja (one line: why), 3 the
    terminal or the database did not answer."""
    from sqlalchemy.exc import DBAPIError

    from caja_core.db import models  # noqa: F401  (every table known to the ORM before the first query)
    from caja_core.db.engine import Database
    from caja_core.errors import CajaError
    from caja_core.payments import terminal_ops
    from caja_core.plugins import make_plugin_manager
    from caja_core.providers import ProviderRegistry
    from caja_core.settings import settings_or_exit

    settings = settings_or_exit()
    registry = ProviderRegistry.from_plugin_manager(make_plugin_manager())
    database = Database(settings.database_url)
    try:
        closed = await terminal_ops.close_device_batch(database, registry, "getnet", raw, source="cli")
    except CajaError as exc:
        click.echo(f"caja: {exc.message}", err=True)
        return EXIT_TRANSPORT if exc.code == "terminal.close_failed" else EXIT_DECLINED
    except (DBAPIError, OSError) as exc:
        click.echo(
            f"caja: no se pudo consultar la base de datos de caja ({type(exc).__name__}): sin ella no se sabe si el "
            "terminal tiene cobros sin resolver, y no se cierra el lote. Revise CAJA_DATABASE_URL.",
            err=True,
        )
        return EXIT_TRANSPORT
    finally:
        await database.dispose()
    _emit(
        {
            "closed": True,
            "terminal": closed.device_label,
            "count": closed.count,
            "total": closed.total,
            "closed_at": closed.closed_at.isoformat(),
            "close_id": closed.id,
        }
    )
    return EXIT_OK


@getnet.command("cancel")
@_terminal_options
def cancel_cmd(tcp, serial_path, receipt_timeout, timeout) -> int:
    """Cancela la venta en curso en el terminal (CancelSale, 116)."""
    return _run_diagnostic(tcp, serial_path, receipt_timeout, timeout, lambda c: c.cancel_sale())


@getnet.command("simulate")
@click.option("--tcp", metavar="HOST:PUERTO", help="Escuchar por TCP (p. ej. 127.0.0.1:9100).")
@click.option("--pty", "use_pty", is_flag=True, help="Crear un puerto serie virtual e imprimir su ruta.")
@click.option("--control", metavar="HOST:PUERTO", help="Canal de control HTTP (fallas, libro de ventas).")
@click.option("--keep-open", is_flag=True, help="TCP: no cerrar la conexión tras cada respuesta final.")
@click.option(
    "--numbers-as-text", is_flag=True, help='Enviar los números como texto ("Amount": "1000"), como algunos firmwares.'
)
@click.option(
    "--step-delay",
    type=click.FloatRange(min=0, max=60),
    default=1.0,
    show_default=True,
    help="Segundos entre los pasos de una venta (lectura de tarjeta, PIN…).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="TIPO",
    help="Falla para todas las ventas de la sesión (repetible; ver README).",
)
@click.option("--seed", type=int, default=None, help="Semilla para la falla 'random'.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, max=1),
    default=0.3,
    show_default=True,
    help="Proporción de ventas con falla en modo 'random'.",
)
def simulate_cmd(tcp, use_pty, control, keep_open, numbers_as_text, step_delay, faults, seed, rate) -> None:
    """Un terminal GETNET simulado, para ensayar una noche sin hardware."""
    from .simulator import FAULT_KINDS, Fault, Simulator

    address = _host_port(tcp, "--tcp", allow_any_port=True)  # port 0: any free port (printed)
    control_address = _host_port(control, "--control", allow_any_port=True)
    if control_address and control_address[0] not in ("127.0.0.1", "localhost", "::1"):
        raise click.BadParameter("el canal de control no tiene clave: solo en 127.0.0.1", param_hint="--control")
    if (address is None) == (not use_pty):
        raise click.UsageError("elija --tcp HOST:PUERTO o --pty (uno de los dos).")
    for kind in faults:
        if kind not in FAULT_KINDS:
            raise click.BadParameter(
                f"falla desconocida {kind!r} (válidas: {', '.join(FAULT_KINDS)})", param_hint="--fault"
            )

    async def serve() -> None:
        sim = Simulator(keep_open=keep_open, step_delay_s=step_delay, seed=seed, numbers_as_text=numbers_as_text)
        for kind in faults:
            sim.add_fault(Fault(kind=kind, scope="run", seed=seed, rate=rate))
        if address:
            host, port = await sim.start_tcp(*address)
            click.echo(f"Simulador GETNET escuchando en {host}:{port}", err=True)
            click.echo(f"{host}:{port}")
        else:
            path = await sim.start_pty()
            click.echo("Simulador GETNET en el puerto serie (abrir con --serial):", err=True)
            click.echo(path)
        if control_address:
            chost, cport = await sim.start_control(*control_address)
            click.echo(f"Canal de control en http://{chost}:{cport}/faults y /ledger", err=True)
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl+C ends the process instead
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sim.stop()
        click.echo("Simulador detenido.", err=True)

    try:
        asyncio.run(serve())
    except OSError as exc:
        raise click.ClickException(f"no se pudo iniciar el simulador: {exc.strerror or exc}") from exc


@click.command("agent")
@click.option("--server", required=True, metavar="URL", help="Dirección del servidor caja (https://…).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Archivo con el token de la caja (o variable CAJA_AGENT_TOKEN).",
)
@click.option("--serial", "serial_path", metavar="RUTA", help="Puerto serie del terminal (p. ej. /dev/ttyACM0).")
@click.option("--tcp", metavar="HOST:PUERTO", help="Terminal por red.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Carpeta de resultados pendientes (por defecto ~/.local/state/caja-agent).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.2, max=300),
    default=5.0,
    show_default=True,
    help="Segundos entre latidos al servidor.",
)
@click.option(
    "--poll-every",
    type=click.FloatRange(min=0.2, max=3600),
    default=30.0,
    show_default=True,
    help="Segundos entre consultas (Poll) al terminal cuando está libre.",
)
@click.option(
    "--wait",
    type=click.IntRange(min=1, max=120),
    default=25,
    show_default=True,
    help="Espera larga (long poll) pedida al servidor, en segundos.",
)
@click.option("--receipt-timeout", type=click.FloatRange(min=0.1, max=60), default=3.0, show_default=True)
def agent_cmd(server, token_file, serial_path, tcp, state_dir, heartbeat, poll_every, wait, receipt_timeout) -> None:
    """Agente del PC de la caja: atiende el terminal GETNET local por encargo del servidor."""
    import logging
    import os
    from pathlib import Path

    from .agent import AgentConfig, run_agent

    if not server.startswith(("http://", "https://")):
        raise click.BadParameter("se espera una URL http:// o https://", param_hint="--server")
    address = _host_port(tcp, "--tcp")
    if (address is None) == (serial_path is None):
        raise click.UsageError("indique el terminal con --serial RUTA o con --tcp HOST:PUERTO (uno de los dos).")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.BadParameter(f"no se pudo leer: {exc.strerror}", param_hint="--token-file") from exc
    else:
        token = os.environ.get("CAJA_AGENT_TOKEN", "").strip()
    if not token:
        raise click.UsageError("falta el token de la caja (--token-file o CAJA_AGENT_TOKEN).")
    state = state_dir or str(Path.home() / ".local" / "state" / "caja-agent")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    transport = make_transport(
        host=address[0] if address else None,
        port=address[1] if address else None,
        serial_path=serial_path,
        connect_timeout_s=receipt_timeout,
    )
    config = AgentConfig(
        server_url=server,
        token=token,
        token_file=str(token_file) if token_file else None,
        state_dir=state,
        wait_s=wait,
        heartbeat_s=heartbeat,
        poll_terminal_every_s=poll_every,
        receipt_timeout_s=receipt_timeout,
    )
    click.echo(f"Agente caja: terminal {transport.description}, servidor {server}", err=True)
    from urllib.parse import urlsplit

    if server.startswith("http://") and urlsplit(server).hostname not in ("127.0.0.1", "localhost", "::1"):
        click.echo("Advertencia: el token viaja sin cifrar; use https:// fuera de este equipo.", err=True)
    run_agent(config, transport)


__all__ = ["Command", "agent_cmd", "getnet"]
