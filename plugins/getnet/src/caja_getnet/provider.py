"""The GETNET payment provider: maps the terminal's answers (or their absence) to the core's ``Outcome``.

* ResponseCode 0 for our ticket and amount → APPROVED.
* Non-zero final ResponseCode → DECLINED (code and message kept; see ``protocol.DECLINE_CODES``).
* Port missing/busy, connection refused, or no receipt and the terminal answers that it does not know the
  ticket → UNAVAILABLE (safe to fall back).
* Anything else (receipt then silence, bad Sign, amount mismatch, close before the final answer) → UNKNOWN:
  the core reconciles with ``status()``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from caja_core.errors import ValidationFailed
from caja_core.providers import (
    Capability,
    CardData,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressCallback,
    ProviderContext,
    WebhookNotice,
)

from .client import GetnetClient, InDoubt, NoReceipt
from .protocol import Command, Deadlines, Response, decline_text, mask_response, sale_command, simple_command
from .transport import TerminalUnavailable, make_transport

log = logging.getLogger("caja.getnet")

TICKET_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,20}$")
EMPLOYEE_PATTERN = re.compile(r"^[0-9A-Za-z_-]{1,20}$")
MAX_AMOUNT = 99_999_999

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=600)]


class GetnetSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A register's GETNET settings. ``connection``: ``tcp`` (host + port of the terminal), ``serial`` (a
    serial port on the server itself) or ``agent`` (the terminal hangs off the register PC, reached through
    ``caja agent``)."""

    connection: Literal["tcp", "serial", "agent"] = "tcp"
    host: str = ""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    serial_path: str = ""
    receipt_timeout_s: PositiveSeconds = 3.0
    sale_timeout_s: PositiveSeconds = 120.0
    short_timeout_s: PositiveSeconds = 10.0
    other_timeout_s: PositiveSeconds = 60.0
    employee_id: Annotated[str, msgspec.Meta(max_length=20, pattern=r"^[0-9A-Za-z_-]*$")] = ""
    print_on_pos: bool = True
    send_messages: bool = True
    max_message_bytes: Annotated[int, msgspec.Meta(ge=4096, le=16 << 20)] = 1 << 20

    def __post_init__(self) -> None:
        if self.connection == "tcp" and (not self.host.strip() or not self.port):
            raise ValueError("la conexión TCP necesita host y puerto del terminal")
        if self.connection == "serial" and not self.serial_path.strip():
            raise ValueError("la conexión serie necesita la ruta del puerto (p. ej. /dev/ttyACM0)")

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(
            receipt_s=self.receipt_timeout_s,
            sale_s=self.sale_timeout_s,
            short_s=self.short_timeout_s,
            other_s=self.other_timeout_s,
        )


class AgentResultError(Exception):
    """What an agent reported instead of a terminal response (see README: ``AgentError``)."""


def card_from_response(data: Mapping[str, Any]) -> CardData:
    last4 = "".join(ch for ch in str(data.get("Last4Digits") or "") if ch.isdigit())[-4:] or None
    op = data.get("OperationId")
    shares = data.get("SharesNumber")
    return CardData(
        brand=_text(data.get("CardBrand")),
        card_type=_text(data.get("CardType")),
        last4=last4,
        authorization_code=_text(data.get("AuthorizationCode")),
        operation_id=None if op is None else str(op),
        terminal_id=_text(data.get("TerminalId")),
        installments=shares if isinstance(shares, int) and not isinstance(shares, bool) else None,
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _amount(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def map_sale_response(data: Mapping[str, Any], request: ChargeRequest) -> Outcome:
    """A final sale (or LastVoucher/Details entry) response for ``request`` → Outcome."""
    resp = Response(dict(data))
    code = resp.response_code
    ticket = _text(data.get("Ticket"))
    amount = _amount(data.get("Amount"))
    message = str(data.get("ResponseMessage") or "")
    if ticket != str(request.ticket):
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            code=_text(code),
            ticket=ticket,
            amount=amount,
            message=f"La respuesta es del ticket {ticket}, no del {request.ticket}.",
        )
    if code is None:
        return Outcome(
            kind=OutcomeKind.UNKNOWN, ticket=ticket, amount=amount, message="Respuesta sin código de resultado."
        )
    if code != 0:
        return Outcome(
            kind=OutcomeKind.DECLINED, code=str(code), message=decline_text(code, message), ticket=ticket, amount=amount
        )
    card = card_from_response(data)
    if amount != request.amount:
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            code="0",
            ticket=ticket,
            amount=amount,
            card=card,
            reference=card.operation_id,
            message=f"Aprobación por un monto distinto ({amount} en vez de {request.amount}): "
            f"posible cobro incorrecto, revisar.",
        )
    wanted_auth = request.card.authorization_code if request.card else None
    if wanted_auth and card.authorization_code and wanted_auth != card.authorization_code:
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            code="0",
            ticket=ticket,
            amount=amount,
            card=card,
            message="Código de autorización distinto al registrado.",
        )
    return Outcome(
        kind=OutcomeKind.APPROVED,
        code="0",
        message=message or "Aprobado",
        ticket=ticket,
        amount=amount,
        card=card,
        reference=card.operation_id,
    )


def find_sales_list(data: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The list of sales in a Details response (the first list of objects that carry a Ticket)."""
    for value in data.values():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            if not value or any("Ticket" in v for v in value):
                return value
    return None


class GetnetProvider:
    id = "getnet"
    name = "GETNET"
    Settings = GetnetSettings
    capabilities = frozenset({Capability.INTEGRATED, Capability.CANCEL, Capability.REFUND, Capability.STATUS})
    min_amount = 1

    def __init__(self) -> None:
        self._clients: dict[str, tuple[Any, GetnetSettings, GetnetClient]] = {}

    def device_key(self, settings: GetnetSettings, register_code: str) -> str:
        if settings.connection == "tcp":
            return f"getnet:tcp:{settings.host}:{settings.port}"
        if settings.connection == "serial":
            return f"getnet:serial:{settings.serial_path}"
        return f"getnet:agent:{register_code}"

    def client_for(self, settings: GetnetSettings) -> GetnetClient:
        """One client per terminal, so that CancelSale can reach a sale in flight on the same connection."""
        key = self.device_key(settings, "")
        loop = asyncio.get_running_loop()
        cached = self._clients.get(key)
        if cached is not None and cached[0] is loop and cached[1] == settings:
            return cached[2]
        transport = make_transport(
            host=settings.host,
            port=settings.port,
            serial_path=settings.serial_path if settings.connection == "serial" else None,
            connect_timeout_s=settings.receipt_timeout_s,
        )
        client = GetnetClient(transport, deadlines=settings.deadlines, max_message_bytes=settings.max_message_bytes)
        self._clients[key] = (loop, settings, client)
        return client

    # --- running a command directly or through the register's agent --------------------------------------
    async def _run(
        self,
        command: dict[str, Any],
        settings: GetnetSettings,
        ctx: ProviderContext,
        *,
        accept=None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        code = int(command["Command"])
        deadline_s = settings.deadlines.for_command(code)

        async def on_message(message_code: int | None, text: str) -> None:
            if progress is not None:
                await progress(Progress(message=text, code=message_code))

        if settings.connection != "agent":
            return await self.client_for(settings).exchange(
                command, accept=accept, progress=on_message, deadline_s=deadline_s
            )
        if ctx.agent is None:
            raise TerminalUnavailable("La caja está configurada con agente, pero no hay agente conectado.")
        try:
            result = await ctx.agent.exchange(command, deadline_s=deadline_s, progress=progress)
        except TerminalUnavailable:
            raise
        except Exception as exc:
            if getattr(exc, "not_sent", False):
                raise TerminalUnavailable(f"El agente no pudo entregar el comando: {exc}") from exc
            raise InDoubt(f"Sin respuesta del agente: {exc}") from exc
        if not isinstance(result, dict):
            raise InDoubt("El agente devolvió una respuesta mal formada.")
        error = result.get("AgentError")
        if error is not None:
            detail = str(result.get("Detail") or error)
            if error == "unavailable":
                raise TerminalUnavailable(detail)
            if error == "no_receipt":
                raise NoReceipt(detail)
            raise InDoubt(detail)
        if accept is not None and not accept(result):
            raise InDoubt("El agente devolvió una respuesta que no corresponde al comando.")
        return result

    # --- PaymentProvider ---------------------------------------------------------------------------------
    async def charge(
        self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext, progress: ProgressCallback
    ) -> Outcome:
        # Nothing malformed ever reaches the terminal (it prints the ticket on the voucher).
        if not TICKET_PATTERN.match(request.ticket):
            raise ValidationFailed(
                "Número de ticket inválido para GETNET (letras, dígitos y guiones, hasta 20).",
                code="getnet.ticket_invalid",
            )
        if (
            isinstance(request.amount, bool)
            or not isinstance(request.amount, int)
            or not (self.min_amount <= request.amount <= MAX_AMOUNT)
        ):
            raise ValidationFailed("Monto inválido para GETNET.", code="getnet.amount_invalid")
        employee = (
            request.employee_id
            if request.employee_id and EMPLOYEE_PATTERN.match(request.employee_id)
            else settings.employee_id
        )
        command = sale_command(
            amount=request.amount,
            ticket=request.ticket,
            employee_id=employee,
            print_on_pos=settings.print_on_pos,
            send_message=settings.send_messages,
        )

        def accept(data: dict[str, Any]) -> bool:
            fc = Response(data).function_code
            return fc in (None, Command.SALE) and str(data.get("Ticket", "")) == str(request.ticket)

        try:
            data = await self._run(command, settings, ctx, accept=accept, progress=progress)
        except TerminalUnavailable as exc:
            log.warning("getnet: venta %s no enviada: %s", request.ticket, exc)
            return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message=str(exc))
        except NoReceipt as exc:
            log.warning("getnet: venta %s sin acuse de recibo: %s; se concilia", request.ticket, exc)
            return await self._after_no_receipt(request, settings, ctx, str(exc))
        except InDoubt as exc:
            log.warning("getnet: venta %s en duda: %s", request.ticket, exc)
            return Outcome(kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message=str(exc))
        outcome = map_sale_response(data, request)
        log.info("getnet: venta %s → %s %s", request.ticket, outcome.kind, mask_response(data))
        return outcome

    async def _after_no_receipt(
        self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext, reason: str
    ) -> Outcome:
        """The terminal did not confirm the sale: ask it. Only a terminal that answers and does not know the
        ticket proves nothing was charged; a terminal that answers nothing at all leaves the sale in doubt."""
        try:
            outcome = await self._reconcile(request, settings, ctx)
        except (TerminalUnavailable, NoReceipt, InDoubt) as exc:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                ticket=request.ticket,
                message=f"{reason} El terminal tampoco responde a la consulta: {exc}",
            )
        if outcome.kind is OutcomeKind.UNAVAILABLE:
            return Outcome(
                kind=OutcomeKind.UNAVAILABLE,
                ticket=request.ticket,
                message=f"{reason} El terminal no registra la venta: no se cobró.",
            )
        return outcome

    async def _reconcile(self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext) -> Outcome:
        """LastVoucher, then Details, looking for our ticket (+ amount, + authorization code)."""
        last = await self._run(simple_command(Command.LAST_VOUCHER), settings, ctx)
        if str(last.get("Ticket", "")) == str(request.ticket) and Response(last).response_code == 0:
            return map_sale_response(last, request)
        details = await self._run(simple_command(Command.DETAILS, PrintOnPos=False), settings, ctx)
        sales = find_sales_list(details)
        if Response(details).response_code != 0 or sales is None:
            return Outcome(
                kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message="El terminal no entregó el detalle de ventas."
            )
        ours = [s for s in sales if str(s.get("Ticket", "")) == str(request.ticket)]
        if not ours:
            return Outcome(
                kind=OutcomeKind.UNAVAILABLE,
                ticket=request.ticket,
                message="El terminal no registra este ticket desde el último cierre.",
            )
        return map_sale_response(ours[-1], request)

    async def status(self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext) -> Outcome:
        try:
            outcome = await self._reconcile(request, settings, ctx)
        except (TerminalUnavailable, NoReceipt, InDoubt) as exc:
            return Outcome(
                kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message=f"No se pudo consultar el terminal: {exc}"
            )
        log.info("getnet: conciliación de %s → %s", request.ticket, outcome.kind)
        return outcome

    async def cancel(self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext) -> Outcome:
        try:
            if settings.connection == "agent":
                data = await self._run(simple_command(Command.CANCEL_SALE), settings, ctx)
            else:
                data = await self.client_for(settings).cancel_sale()
        except TerminalUnavailable as exc:
            return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message=str(exc))
        except (NoReceipt, InDoubt) as exc:
            return Outcome(kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message=str(exc))
        return self._simple_outcome(data, request, ok_message="Venta cancelada en el terminal")

    async def refund(self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext) -> Outcome:
        card = request.card
        try:
            if card is None or not (card.authorization_code or card.operation_id):
                found = await self._reconcile(request, settings, ctx)
                if found.kind is not OutcomeKind.APPROVED:
                    return Outcome(
                        kind=OutcomeKind.DECLINED,
                        ticket=request.ticket,
                        code="12",
                        message="No se encontró la venta aprobada para anular.",
                    )
                card = found.card
            if card.operation_id and card.operation_id != "0":
                command = simple_command(Command.REFUND, OperationId=int(card.operation_id))
            else:
                command = simple_command(
                    Command.RETURN,
                    AuthorizationCode=card.authorization_code,
                    Amount=request.amount,
                    TicketNumber=request.ticket,
                )
            data = await self._run(command, settings, ctx)
        except TerminalUnavailable as exc:
            return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message=str(exc))
        except (NoReceipt, InDoubt) as exc:
            return Outcome(kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message=str(exc))
        return self._simple_outcome(data, request, ok_message="Anulación aprobada")

    async def health(self, settings: GetnetSettings, ctx: ProviderContext) -> Outcome:
        if settings.connection != "agent" and self.client_for(settings).busy:
            return Outcome(kind=OutcomeKind.APPROVED, message="Terminal conectado (venta en curso)")
        try:
            data = await self._run(simple_command(Command.POLL), settings, ctx)
        except (TerminalUnavailable, NoReceipt) as exc:
            return Outcome(kind=OutcomeKind.UNAVAILABLE, message=str(exc))
        except InDoubt as exc:
            return Outcome(kind=OutcomeKind.UNKNOWN, message=str(exc))
        code = Response(data).response_code
        if code == 0:
            return Outcome(kind=OutcomeKind.APPROVED, code="0", message="Terminal conectado")
        return Outcome(
            kind=OutcomeKind.DECLINED,
            code=_text(code),
            message=decline_text(code if code is not None else -1, str(data.get("ResponseMessage") or "")),
        )

    @staticmethod
    def _simple_outcome(data: Mapping[str, Any], request: ChargeRequest, *, ok_message: str) -> Outcome:
        code = Response(dict(data)).response_code
        if code == 0:
            return Outcome(
                kind=OutcomeKind.APPROVED,
                code="0",
                ticket=request.ticket,
                amount=_amount(data.get("Amount")) or request.amount,
                message=str(data.get("ResponseMessage") or ok_message),
            )
        if code is None:
            return Outcome(kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message="Respuesta sin código.")
        return Outcome(
            kind=OutcomeKind.DECLINED,
            code=str(code),
            ticket=request.ticket,
            message=decline_text(code, str(data.get("ResponseMessage") or "")),
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        raise ValidationFailed("GETNET no envía webhooks.", code="webhook.unsupported")

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: GetnetSettings) -> bool:
        return False


provider = GetnetProvider()
