"""asyncio client for one GETNET terminal: one command in flight, receipt handshake, deadlines, progress.

``exchange`` sends one command and returns the terminal's final response (a dict), or raises:

* ``TerminalUnavailable`` — the port/connection could not be opened: nothing was sent.
* ``NoReceipt`` — the command was written but the terminal never confirmed it (nor said anything else).
* ``InDoubt`` — the terminal confirmed (or started answering) but no acceptable final response arrived in
  time: silence, a close before the final response, only corrupt/badly signed answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .protocol import (
    RECEIVED,
    BadSign,
    Command,
    Deadlines,
    Intermediate,
    Receipt,
    Response,
    StreamReader,
    encode_envelope,
    mask_response,
    monotonic,
    parse_message,
    sale_command,
    simple_command,
)
from .transport import Connection, TerminalUnavailable, Transport

log = logging.getLogger("caja.getnet")

# Progress: (MessageCode, text) for each intermediate message, and once (None, RECEIPT_TEXT) when the terminal
# first confirms it has the command (the core moves the attempt from "sending" to "awaiting" on the first call).
ProgressFn = Callable[[int | None, str], Awaitable[None]]
RECEIPT_TEXT = "Venta enviada al terminal"
AcceptFn = Callable[[dict[str, Any]], bool]


class NoReceipt(Exception):
    """The command was written but the terminal never confirmed receiving it."""


class Refused(Exception):
    """The command's gate said no right before the first byte: nothing was sent (a fenced agent command that
    expired, was revoked, or whose start the server did not confirm)."""


class InDoubt(Exception):
    """The terminal received the command but no acceptable final response arrived."""

    def __init__(self, message: str, *, bad_signs: int = 0, ignored: int = 0) -> None:
        super().__init__(message)
        self.bad_signs = bad_signs
        self.ignored = ignored


__all__ = ["GateFn", "GetnetClient", "InDoubt", "NoReceipt", "Refused", "TerminalUnavailable"]

# Called with the terminal reserved, right before the command's first byte: False means "do not send it".
GateFn = Callable[[], Awaitable[bool]]


class _Active:
    def __init__(self, connection: Connection, command: int) -> None:
        self.connection = connection
        self.command = command
        # the terminal's answer to a CancelSale written on this connection (None: the exchange ended first)
        self.cancel_answer: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()


class GetnetClient:
    """Talks to one terminal. Commands are serialised by a lock; ``cancel_sale`` may interrupt a sale in
    flight by writing CancelSale on the sale's own connection (the serial port is exclusive)."""

    def __init__(
        self, transport: Transport, *, deadlines: Deadlines | None = None, max_message_bytes: int = 1 << 20
    ) -> None:
        self.transport = transport
        self.deadlines = deadlines or Deadlines()
        self.max_message_bytes = max_message_bytes
        self._lock = asyncio.Lock()
        self._active: _Active | None = None

    @property
    def busy(self) -> bool:
        """A command is in flight on this terminal."""
        return self._lock.locked()

    # --- the exchange ---------------------------------------------------------------------------------
    async def exchange(
        self,
        command: dict[str, Any],
        *,
        accept: AcceptFn | None = None,
        progress: ProgressFn | None = None,
        deadline_s: float | None = None,
        before_send: GateFn | None = None,
    ) -> dict[str, Any]:
        """``before_send`` runs once the terminal is reserved for this command (after any command ahead of it),
        right before anything is written; if it answers False the command is not sent (``Refused``)."""
        async with self._lock:
            if before_send is not None and not await before_send():
                raise Refused(f"El comando {command.get('Command')} no se envió al terminal.")
            return await self._exchange(command, accept=accept, progress=progress, deadline_s=deadline_s)

    async def _exchange(
        self, command: dict[str, Any], *, accept: AcceptFn | None, progress: ProgressFn | None, deadline_s: float | None
    ) -> dict[str, Any]:
        code = int(command["Command"])
        if accept is None:

            def accept(data: dict[str, Any]) -> bool:
                fc = Response(data).function_code
                return fc is None or fc == code

        deadline_s = self.deadlines.for_command(code) if deadline_s is None else deadline_s
        connection = await self.transport.open()
        active = self._active = _Active(connection, code)
        reader = StreamReader(self.max_message_bytes)
        started = monotonic()
        deadline = started + deadline_s
        receipt_deadline = started + min(self.deadlines.receipt_s, deadline_s)
        received = False
        bad_signs = ignored = 0
        try:
            try:
                await connection.write(encode_envelope(command))
            except (ConnectionError, OSError) as exc:
                raise NoReceipt(f"No se pudo enviar el comando {code} al terminal: {exc}") from exc
            log.info("getnet: comando %s enviado a %s", code, self.transport.description)
            while True:
                limit = deadline if received else receipt_deadline
                remaining = limit - monotonic()
                if remaining <= 0:
                    if not received:
                        raise NoReceipt(
                            f"El terminal no confirmó la recepción del comando {code} en "
                            f"{self.deadlines.receipt_s:g} s."
                        )
                    reason = "respuestas con firma inválida" if bad_signs else "sin respuesta final"
                    raise InDoubt(
                        f"Comando {code}: {reason} en {deadline_s:g} s.", bad_signs=bad_signs, ignored=ignored
                    )
                try:
                    chunk = await asyncio.wait_for(connection.read(), remaining)
                except TimeoutError:
                    continue
                if not chunk:
                    if received:
                        raise InDoubt(
                            f"El terminal cerró la conexión antes de la respuesta final del comando {code}.",
                            bad_signs=bad_signs,
                            ignored=ignored,
                        )
                    raise NoReceipt(f"El terminal cerró la conexión sin confirmar el comando {code}.")
                for raw in reader.feed(chunk):
                    message = parse_message(raw)
                    if (
                        not received
                        and isinstance(message, (Receipt, Intermediate, Response, BadSign))
                        and (not isinstance(message, Receipt) or message.ok)
                    ):
                        received = True
                        await self._report(progress, None, RECEIPT_TEXT)
                    if isinstance(message, Receipt):
                        received = received or message.ok
                    elif isinstance(message, Intermediate):
                        received = True
                        await self._ack(connection)
                        log.info("getnet: mensaje intermedio %s %s", message.code, message.text)
                        await self._report(progress, message.code, message.display)
                    elif isinstance(message, Response):
                        received = True
                        await self._ack(connection)
                        if accept(message.data):
                            log.info("getnet: respuesta final %s", mask_response(message.data))
                            return message.data
                        if message.function_code == Command.CANCEL_SALE and not active.cancel_answer.done():
                            active.cancel_answer.set_result(message.data)
                            continue
                        ignored += 1
                        log.warning(
                            "getnet: respuesta ignorada (no corresponde al comando %s): %s",
                            code,
                            mask_response(message.data),
                        )
                    elif isinstance(message, BadSign):
                        received = True
                        bad_signs += 1
                        log.warning("getnet: mensaje rechazado: %s", message.reason)
                if reader.dropped_bytes:
                    log.warning(
                        "getnet: %s bytes descartados (ruido o mensaje truncado/excesivo)", reader.dropped_bytes
                    )
                    reader.dropped_bytes = 0
        finally:
            self._active = None
            if not active.cancel_answer.done():
                active.cancel_answer.set_result(None)
            await connection.close()

    @staticmethod
    async def _report(progress: ProgressFn | None, code: int | None, text: str) -> None:
        if progress is None:
            return
        try:
            await progress(code, text)
        except Exception:
            log.warning("getnet: no se pudo informar el progreso", exc_info=True)

    @staticmethod
    async def _ack(connection: Connection) -> None:
        with contextlib.suppress(ConnectionError, OSError):  # the terminal may close right after its final response
            await connection.write(RECEIVED)

    # --- commands -------------------------------------------------------------------------------------
    async def sale(
        self,
        *,
        amount: int,
        ticket: str,
        employee_id: int | str = 0,
        print_on_pos: bool = True,
        send_message: bool = True,
        progress: ProgressFn | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        """A sale. Only a response for this ticket is accepted; responses for earlier tickets are ignored."""
        command = sale_command(
            amount=amount, ticket=ticket, employee_id=employee_id, print_on_pos=print_on_pos, send_message=send_message
        )

        def accept(data: dict[str, Any]) -> bool:
            resp = Response(data)
            return resp.function_code in (None, Command.SALE) and str(data.get("Ticket", "")) == str(ticket)

        return await self.exchange(command, accept=accept, progress=progress, deadline_s=deadline_s)

    async def last_voucher(self) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.LAST_VOUCHER))

    async def refund(self, operation_id: int | str) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.REFUND, OperationId=int(operation_id)))

    async def return_sale(self, *, authorization_code: str, amount: int, ticket: str = "") -> dict[str, Any]:
        return await self.exchange(
            simple_command(
                Command.RETURN, AuthorizationCode=str(authorization_code), Amount=int(amount), TicketNumber=str(ticket)
            )
        )

    async def close(self) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.CLOSE, PrintOnPos=False))

    async def totals(self) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.TOTALS))

    async def details(self) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.DETAILS, PrintOnPos=False))

    async def poll(self) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.POLL))

    async def parameter_report(self) -> dict[str, Any]:
        return await self.exchange(simple_command(Command.PARAMETER_REPORT))

    async def cancel_sale(self, *, before_send: GateFn | None = None) -> dict[str, Any]:
        """CancelSale. If a sale is in flight on this client, the command goes on the sale's own connection (a
        serial port has only one) and this returns the terminal's answer to it, read by the sale's exchange; the
        sale's own final response (usually a decline) still tells what happened to the sale."""
        active = self._active
        if active is not None and active.command == Command.SALE:
            if before_send is not None and not await before_send():
                raise Refused("CancelSale no se envió al terminal.")
            try:
                await active.connection.write(encode_envelope(simple_command(Command.CANCEL_SALE)))
            except (ConnectionError, OSError) as exc:
                raise NoReceipt(f"No se pudo enviar CancelSale: {exc}") from exc
            log.info("getnet: CancelSale enviado sobre la venta en curso")
            try:
                answer = await asyncio.wait_for(asyncio.shield(active.cancel_answer), self.deadlines.short_s)
            except TimeoutError as exc:
                raise InDoubt("El terminal no respondió a CancelSale.") from exc
            if answer is None:  # the sale ended first: nothing left to cancel
                return {
                    "FunctionCode": int(Command.CANCEL_SALE),
                    "ResponseCode": 0,
                    "ResponseMessage": "La venta terminó antes de cancelar",
                }
            return answer
        return await self.exchange(simple_command(Command.CANCEL_SALE), before_send=before_send)
