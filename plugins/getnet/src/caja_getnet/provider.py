"""The GETNET payment provider: maps the terminal's answers (or their absence) to the core's ``Outcome``.

* ResponseCode 0 for our ticket and amount → APPROVED.
* Non-zero final ResponseCode → DECLINED (code and message kept; see ``protocol.DECLINE_CODES``).
* Port missing/busy, connection refused, or no receipt and the terminal answers that it does not know the
  ticket → UNAVAILABLE (safe to fall back).
* Anything else (receipt then silence, bad Sign, amount mismatch, close before the final answer, a terminal
  still busy with the acquirer) → UNKNOWN: the core reconciles with ``status()``.

Every APPROVED or DECLINED answer carries ``occurred_at``: the terminal's own RealDate (its local clock, read
in ``Settings.terminal_timezone``) in UTC.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from caja_core.errors import CajaError, ValidationFailed
from caja_core.providers import (
    UNREACHABLE,
    Capability,
    CardData,
    ChargeRequest,
    DeviceIdentity,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressCallback,
    ProviderContext,
    TerminalReport,
    TerminalSale,
    WebhookNotice,
)
from caja_core.targets import check_target

from .client import GetnetClient, InDoubt, NoReceipt
from .protocol import (
    BUSY_CODE,
    VOID_PAIRS,
    Command,
    Deadlines,
    Response,
    as_int,
    as_text,
    decline_text,
    last4,
    mask_response,
    sale_command,
    simple_command,
)
from .transport import TerminalUnavailable, make_transport

log = logging.getLogger("caja.getnet")

TICKET_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,20}$")
EMPLOYEE_PATTERN = re.compile(r"^[0-9]{1,9}$")  # the SDK's EmployeeId is an int
MAX_AMOUNT = 99_999_999
#: How long the provider remembers having sent a sale itself (see ``_still_working``).
SENT_MEMORY_S = 3600.0

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=600)]


def _t(title: str, description: str = "") -> msgspec.Meta:
    """A settings field's label and help in the admin's form (Spanish)."""
    return msgspec.Meta(title=title, description=description) if description else msgspec.Meta(title=title)


class GetnetSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A register's GETNET settings. ``connection``: ``tcp`` (host + port of the terminal), ``serial`` (a
    serial port on the server itself) or ``agent`` (the terminal hangs off the register PC, reached through
    ``caja agent``)."""

    connection: Annotated[
        Literal["tcp", "serial", "agent"],
        _t(
            "Conexión", "tcp: el terminal en la red; serial: un puerto serie de este servidor; agent: el PC de la caja."
        ),
    ] = "tcp"
    host: Annotated[str, _t("Host del terminal", "Dirección IP o nombre del terminal (conexión tcp).")] = ""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535), _t("Puerto", "Puerto TCP del terminal.")] = 0
    serial_path: Annotated[str, _t("Puerto serie", "Ruta del puerto (conexión serial), p. ej. /dev/ttyACM0.")] = ""
    receipt_timeout_s: Annotated[PositiveSeconds, _t("Espera del acuse de recibo (s)")] = 3.0
    sale_timeout_s: Annotated[PositiveSeconds, _t("Espera de la venta (s)")] = 120.0
    short_timeout_s: Annotated[PositiveSeconds, _t("Espera de comandos cortos (s)")] = 10.0
    other_timeout_s: Annotated[PositiveSeconds, _t("Espera de otros comandos (s)")] = 60.0
    employee_id: Annotated[str, msgspec.Meta(max_length=9, pattern=r"^[0-9]*$"), _t("Id. de empleado")] = ""
    print_on_pos: Annotated[bool, _t("Imprimir en el terminal")] = True
    send_messages: Annotated[bool, _t("Mostrar mensajes del terminal")] = True
    tips: Annotated[
        bool,
        _t(
            "Propina en el terminal",
            "El terminal tiene la propina habilitada: caja le envía la propina de la venta en su campo Tip "
            "(el monto cobrado la incluye siempre).",
        ),
    ] = False
    max_message_bytes: Annotated[int, msgspec.Meta(ge=4096, le=16 << 20), _t("Tamaño máximo de mensaje (bytes)")] = (
        1 << 20
    )
    # The terminal's clock runs in local time: its RealDate is read in this zone (the venue's).
    terminal_timezone: Annotated[
        str,
        msgspec.Meta(max_length=64),
        _t("Zona horaria del terminal", "La hora del terminal se lee en esta zona (la del local)."),
    ] = "America/Santiago"

    def __post_init__(self) -> None:
        if self.connection == "tcp" and (not self.host.strip() or not self.port):
            raise ValueError("la conexión TCP necesita host y puerto del terminal")
        if self.connection == "tcp":
            check_target(self.host, self.port)
        if self.connection == "serial" and not self.serial_path.strip():
            raise ValueError("la conexión serie necesita la ruta del puerto (p. ej. /dev/ttyACM0)")
        try:
            ZoneInfo(self.terminal_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"zona horaria desconocida: {self.terminal_timezone!r}") from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.terminal_timezone)

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
    op = as_int(data.get("OperationId"))
    return CardData(
        brand=as_text(data.get("CardBrand")),
        card_type=as_text(data.get("CardType")),
        last4=last4(data.get("Last4Digits")),
        authorization_code=as_text(data.get("AuthorizationCode")),
        operation_id=None if op is None else str(op),
        terminal_id=as_text(data.get("TerminalId")),
        installments=as_int(data.get("SharesNumber")),
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _amount(value: Any) -> int | None:
    return as_int(value)


# How terminals write their date and time (RealDate); the first that parses wins.
_DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%d/%m/%Y %H:%M:%S",
    "%d-%m-%Y %H:%M:%S",
    "%Y%m%d%H%M%S",
    "%d%m%Y%H%M%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%d/%m/%Y %H:%M",
)


def terminal_time(value: Any, zone: ZoneInfo) -> datetime | None:
    """The terminal's date and time as aware UTC. A naive value is the terminal's local time in ``zone``; in
    the repeated hour at the end of daylight saving time the earlier instant is taken (an older time can only
    make the core refuse a match, never accept one). Date-only values and anything unreadable are None."""
    text = as_text(value)
    if text is None:
        return None
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
        if len(text) <= 10:  # a bare date says nothing about the time of day
            return None
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone, fold=0)
    return parsed.astimezone(UTC)


def occurred_at(data: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    """When the terminal says the operation happened: RealDate, else AccountingDate when it carries a time."""
    return terminal_time(data.get("RealDate"), zone) or terminal_time(data.get("AccountingDate"), zone)


def map_sale_response(data: Mapping[str, Any], request: ChargeRequest, zone: ZoneInfo | None = None) -> Outcome:
    """A final sale (or LastVoucher/Details entry) response for ``request`` → Outcome."""
    zone = zone or ZoneInfo("America/Santiago")
    resp = Response(dict(data))
    code = resp.response_code
    ticket = as_text(data.get("Ticket"))
    amount = as_int(data.get("Amount"))
    message = str(data.get("ResponseMessage") or "")
    when = occurred_at(data, zone)
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
    if code == BUSY_CODE and resp.function_code != Command.SALE:
        return Outcome(kind=OutcomeKind.UNKNOWN, ticket=ticket, amount=amount, message=decline_text(code, message))
    if code != 0:
        return Outcome(
            kind=OutcomeKind.DECLINED,
            code=str(code),
            message=decline_text(code, message),
            ticket=ticket,
            amount=amount,
            occurred_at=when,
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
            occurred_at=when,
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
            occurred_at=when,
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
        occurred_at=when,
    )


def find_sales_list(data: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The list of sales of a Details answer: ``SaleDetails`` as the vendor's SDK names it (or, from a terminal
    that names it otherwise, the one list of objects carrying a Ticket). None when there is no complete list:
    missing, not a list, or an entry that is not a sale with a ticket."""
    value = data.get("SaleDetails")
    if value is None:
        lists = [
            v
            for v in data.values()
            if isinstance(v, list) and v and all(isinstance(x, dict) and "Ticket" in x for x in v)
        ]
        value = lists[0] if len(lists) == 1 else None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, dict) and as_text(v.get("Ticket")) is not None for v in value):
        return None
    return value


class GetnetError(CajaError):
    """The terminal could not answer a report, identification or batch close."""

    code = "getnet.unavailable"
    status = 503


def _one_ip(address: str) -> str:
    """An IP literal in one spelling: an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is its IPv4 address,
    which it reaches."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _loopback_or_ip(host: str) -> str:
    """One spelling per address: an IP literal normalised, a name resolved (lower-case, no trailing dot)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    try:
        return _one_ip(name)
    except ValueError:
        pass
    cached = _RESOLVED.get(name)
    now = time.monotonic()
    if cached is not None and now - cached[1] < _RESOLVE_TTL_S:
        return cached[0]
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        addresses = sorted({_one_ip(str(info[4][0])) for info in infos}, key=lambda a: (":" in a, a))
        resolved = addresses[0] if addresses else name
    except (OSError, ValueError, UnicodeError):
        resolved = cached[0] if cached is not None else name
    _RESOLVED[name] = (resolved, now)
    return resolved


_RESOLVED: dict[str, tuple[str, float]] = {}
_RESOLVE_TTL_S = 300.0
_SERIAL_SEEN: dict[str, str] = {}


def _serial_device(path: str) -> str:
    """A serial port by the device it is, not by how it is spelled: symlinks (``/dev/serial/by-id/…``) resolved
    while the device exists (and remembered while it is unplugged); Windows COM names in upper case."""
    path = path.strip()
    if re.fullmatch(r"(?i)com\d+", path):
        return path.upper()
    if not path.startswith("/"):
        return path
    if os.path.exists(path):
        resolved = os.path.realpath(path)
        _SERIAL_SEEN[path] = resolved
        return resolved
    return _SERIAL_SEEN.get(path, os.path.normpath(path))


class GetnetProvider:
    id = "getnet"
    name = "GETNET"
    Settings = GetnetSettings
    capabilities = frozenset(
        {
            Capability.INTEGRATED,
            Capability.CANCEL,
            Capability.REFUND,
            Capability.STATUS,
            Capability.IDENTIFY,
            Capability.TERMINAL_REPORT,
            Capability.BATCH_CLOSE,
        }
    )
    min_amount = 1

    def __init__(self) -> None:
        self._clients: dict[str, tuple[Any, GetnetSettings, GetnetClient]] = {}
        # Sales the terminal confirmed without a final answer: (device, ticket) → monotonic time until which the
        # terminal may still be working on them (its own sale deadline). Meanwhile "not found" is not proof.
        self._unfinished: dict[tuple[str, str], float] = {}
        # Sales this process sent: (device, ticket) → monotonic time of the send. A sale asked about here that
        # this process never sent (another instance sent it and died, or this process restarted since) may still
        # be with the acquirer for all this process knows: it gets the terminal's whole sale deadline.
        self._sent: dict[tuple[str, str], float] = {}

    def device_key(self, settings: GetnetSettings, register_code: str) -> str:
        """The same terminal gives the same key however its address is spelled: host names resolved and
        lower-cased, IP literals normalised, serial-port symlinks resolved. (The terminal's own serial number,
        from ``identify``, is the identity that survives even a new address.)"""
        if settings.connection == "tcp":
            address = _loopback_or_ip(settings.host)
            host = f"[{address}]" if ":" in address else address
            return f"getnet:tcp:{host}:{settings.port}"
        if settings.connection == "serial":
            return f"getnet:serial:{_serial_device(settings.serial_path)}"
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
            if error in ("unavailable", "refused"):
                raise TerminalUnavailable(detail)  # "refused": the agent never touched the terminal (fenced)
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
            tip=request.tip if settings.tips else 0,
        )

        def accept(data: dict[str, Any]) -> bool:
            fc = Response(data).function_code
            return fc in (None, Command.SALE) and as_text(data.get("Ticket")) == str(request.ticket)

        sent_at = time.monotonic()
        self._remember_sent(settings, ctx, request, sent_at)
        confirmed = False

        async def watch(p: Progress) -> None:
            nonlocal confirmed
            confirmed = True
            await progress(p)

        try:
            data = await self._run(command, settings, ctx, accept=accept, progress=watch)
        except TerminalUnavailable as exc:
            log.warning("getnet: venta %s no enviada: %s", request.ticket, exc)
            return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message=str(exc))
        except NoReceipt as exc:
            log.warning("getnet: venta %s sin acuse de recibo: %s; se concilia", request.ticket, exc)
            if confirmed:  # through an agent the receipt may have come as progress
                self._remember_unfinished(settings, ctx, request, sent_at)
            return await self._after_no_receipt(request, settings, ctx, str(exc))
        except InDoubt as exc:
            log.warning("getnet: venta %s en duda: %s", request.ticket, exc)
            self._remember_unfinished(settings, ctx, request, sent_at)
            return Outcome(kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message=str(exc))
        outcome = map_sale_response(data, request, settings.zone)
        if outcome.kind is OutcomeKind.UNKNOWN:
            self._remember_unfinished(settings, ctx, request, sent_at)
        log.info("getnet: venta %s → %s %s", request.ticket, outcome.kind, mask_response(data))
        return outcome

    def _unfinished_key(self, settings: GetnetSettings, ctx: ProviderContext, request: ChargeRequest):
        return (request.device_key or self.device_key(settings, str(ctx.register_id)), request.ticket)

    def _remember_unfinished(
        self, settings: GetnetSettings, ctx: ProviderContext, request: ChargeRequest, sent_at: float
    ) -> None:
        """The terminal took the sale and gave no final answer: until its own sale deadline has passed (counted
        from the send) it may still be talking to the acquirer, so its lists are not proof yet."""
        now = time.monotonic()
        for key, until in list(self._unfinished.items()):
            if until <= now:
                del self._unfinished[key]
        self._unfinished[self._unfinished_key(settings, ctx, request)] = sent_at + settings.sale_timeout_s

    def _remember_sent(
        self, settings: GetnetSettings, ctx: ProviderContext, request: ChargeRequest, sent_at: float
    ) -> None:
        for key, at in list(self._sent.items()):
            if at <= sent_at - SENT_MEMORY_S:
                del self._sent[key]
        self._sent[self._unfinished_key(settings, ctx, request)] = sent_at

    def _still_working(self, settings: GetnetSettings, ctx: ProviderContext, request: ChargeRequest) -> float:
        """Seconds the terminal may still be working on this sale (0: its deadline has passed). A sale this
        process never sent (its instance died with the sale on the terminal, or this process restarted) may be
        with the acquirer still: its whole sale deadline is counted from the first time this process asks, on
        this process's monotonic clock (no other instance's clock is trusted)."""
        key = self._unfinished_key(settings, ctx, request)
        now = time.monotonic()
        until = self._unfinished.get(key)
        if until is None and key not in self._sent:
            until = self._unfinished[key] = now + settings.sale_timeout_s
            self._sent[key] = now
        return max(0.0, until - now) if until is not None else 0.0

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
        """LastVoucher, then Details, looking for our ticket (+ amount, + authorization code).

        "Not found" is proof (UNAVAILABLE) only when the terminal answered Details completely (ResponseCode 0
        and a list of sales), is not busy, is not still within the deadline of a sale it confirmed, and (through
        an agent) no run of the sale's command is still unaccounted for. Everything else is UNKNOWN."""
        last = await self._run(simple_command(Command.LAST_VOUCHER), settings, ctx)
        last_code = Response(last).response_code
        if last_code == BUSY_CODE:
            return self._not_yet(request, "El terminal está ocupado (una venta sigue con el adquirente).")
        if as_text(last.get("Ticket")) == str(request.ticket) and last_code == 0:
            return map_sale_response(last, request, settings.zone)
        details = await self._run(simple_command(Command.DETAILS, PrintOnPos=False), settings, ctx)
        details_code = Response(details).response_code
        if details_code == BUSY_CODE:
            return self._not_yet(request, "El terminal está ocupado (una venta sigue con el adquirente).")
        sales = find_sales_list(details)
        if details_code != 0 or sales is None:
            return self._not_yet(request, "El terminal no entregó el detalle completo de ventas.")
        ours = [sale for sale in sales if as_text(sale.get("Ticket")) == str(request.ticket)]
        if ours:
            return map_sale_response(ours[-1], request, settings.zone)
        waiting = self._still_working(settings, ctx, request)
        if waiting > 0:
            return self._not_yet(
                request,
                f"El terminal aún no registra el ticket, pero puede seguir procesándolo ({waiting:.0f} s más).",
            )
        revoke = getattr(ctx.agent, "revoke_attempt", None) if settings.connection == "agent" else None
        if revoke is not None and not await revoke(request.attempt_id):
            return self._not_yet(request, "El agente de la caja tomó la venta y aún no informa su resultado.")
        return Outcome(
            kind=OutcomeKind.UNAVAILABLE,
            ticket=request.ticket,
            message="El terminal no registra este ticket desde el último cierre.",
        )

    @staticmethod
    def _not_yet(request: ChargeRequest, message: str) -> Outcome:
        return Outcome(kind=OutcomeKind.UNKNOWN, ticket=request.ticket, message=message)

    async def status(self, request: ChargeRequest, settings: GetnetSettings, ctx: ProviderContext) -> Outcome:
        try:
            outcome = await self._reconcile(request, settings, ctx)
        except (TerminalUnavailable, NoReceipt, InDoubt) as exc:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                code=UNREACHABLE,
                ticket=request.ticket,
                message=f"No se pudo consultar el terminal: {exc}",
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
                if found.kind is not OutcomeKind.APPROVED or found.card is None:
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

    # --- who the terminal is, what it charged, its batch close --------------------------------------------
    async def _ask(self, command: dict[str, Any], settings: GetnetSettings, ctx: ProviderContext, what: str):
        try:
            data = await self._run(command, settings, ctx)
        except (TerminalUnavailable, NoReceipt, InDoubt) as exc:
            raise GetnetError(f"El terminal no respondió {what}: {exc}") from exc
        code = Response(data).response_code
        if code != 0:
            text = decline_text(code if code is not None else -1, str(data.get("ResponseMessage") or ""))
            raise GetnetError(f"El terminal no entregó {what}: {text}")
        return data

    async def identify(self, settings: GetnetSettings, ctx: ProviderContext) -> DeviceIdentity:
        """ParameterReport (114): the serial number (``Sn``) is the terminal's identity, ``getnet:<Sn>`` (its
        TerminalId when it gives no serial number). The report has no clock, so ``clock`` is None."""
        data = await self._ask(simple_command(Command.PARAMETER_REPORT), settings, ctx, "su identificación")
        serial, terminal_id, model = (
            as_text(data.get("Sn")),
            as_text(data.get("TerminalId")),
            as_text(data.get("Model")),
        )
        if serial is None and terminal_id is None:
            raise GetnetError("El terminal no informó su número de serie ni su TerminalId.")
        identity = f"getnet:{serial}" if serial else f"getnet:tid:{terminal_id}"
        parts = [
            model or "GETNET",
            f"n.º de serie {serial}" if serial else "",
            f"terminal {terminal_id}" if terminal_id else "",
        ]
        return DeviceIdentity(identity=identity[:160], label=", ".join(p for p in parts if p), clock=None)

    async def terminal_report(self, settings: GetnetSettings, ctx: ProviderContext) -> TerminalReport:
        """Totals (104) and Details (105): what the terminal charged since its last batch close."""
        totals = await self._ask(simple_command(Command.TOTALS), settings, ctx, "sus totales")
        details = await self._ask(simple_command(Command.DETAILS, PrintOnPos=False), settings, ctx, "su detalle")
        sales = find_sales_list(details)
        if sales is None:
            raise GetnetError("El terminal no entregó el detalle completo de ventas.")
        return report_from(totals, sales, settings.zone)

    async def close_batch(self, settings: GetnetSettings, ctx: ProviderContext) -> TerminalReport:
        """Totals and Details first (what the batch holds), then Close (103). Returns the closed batch."""
        report = await self.terminal_report(settings, ctx)
        closed = await self._ask(simple_command(Command.CLOSE, PrintOnPos=False), settings, ctx, "el cierre de lote")
        if closed.get("Success") is False:
            raise GetnetError("El terminal no pudo cerrar el lote.")
        log.info("getnet: cierre de lote: %s ventas por %s", report.count, report.total)
        return report

    # --- a result the register's agent posted after the waiting side gave up ---------------------------------
    def outcome_from_agent_result(
        self, command: Mapping[str, Any], result: Mapping[str, Any], settings: GetnetSettings
    ) -> Outcome | None:
        """What a late agent result says about the attempt its command belongs to. Only a Sale's own final
        answer (for the ticket the command carried) or an agent that could not open the terminal at all say
        something; anything else (a query's answer, in doubt, no receipt, refused) is None: nothing to apply."""
        if as_int(command.get("Command")) != Command.SALE:
            return None
        ticket = as_text(command.get("TicketNumber"))
        error = result.get("AgentError")
        if error is not None:
            if error == "unavailable":
                return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=ticket, message=str(result.get("Detail") or ""))
            return None
        if ticket is None or as_text(result.get("Ticket")) != ticket:
            return None
        amount = as_int(command.get("Amount"))
        if amount is None:
            return None
        request = ChargeRequest(
            attempt_id=0, ticket=ticket, amount=amount, register_id=0, register_code="", venue_id=0, device_key=""
        )
        return map_sale_response(result, request, settings.zone)

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


def report_from(totals: Mapping[str, Any], sales: list[dict[str, Any]], zone: ZoneInfo) -> TerminalReport:
    """A TerminalReport from a Totals answer and the Details list."""
    items = []
    for sale in sales:
        code = as_int(sale.get("ResponseCode"))
        items.append(
            TerminalSale(
                ticket=as_text(sale.get("Ticket")) or "",
                amount=as_int(sale.get("Amount")) or 0,
                approved=code == 0 or (code is None and bool(as_text(sale.get("AuthorizationCode")))),
                authorization_code=as_text(sale.get("AuthorizationCode")),
                occurred_at=occurred_at(sale, zone),
                card=card_from_response(sale),
            )
        )
    count, total = as_int(totals.get("TxCount")), as_int(totals.get("TxTotal"))
    approved = [i for i in items if i.approved]
    # The sales undone in this batch: voided (anulación) on the keypad or by Refund (the Cancel* pairs of Totals)
    # or returned by Return (the Returns pair).
    pairs = [(as_int(totals.get(f"Count{name}")), as_int(totals.get(f"Total{name}"))) for name in VOID_PAIRS]
    known = [(c, t) for c, t in pairs if c is not None and t is not None]
    return TerminalReport(
        count=count if count is not None else len(approved),
        total=total if total is not None else sum(i.amount for i in approved),
        sales=items,
        taken_at=None,
        voided_count=sum(c for c, _ in known) if known else None,
        voided_total=sum(t for _, t in known) if known else None,
    )


provider = GetnetProvider()
