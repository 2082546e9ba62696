"""GETNET "POS Integrado" wire protocol: envelope, Sign, receipt handshake, stream reassembly, deadlines.

Messages are raw UTF-8 JSON objects with no framing. Both directions use the envelope
``{"JsonSerialized": "<inner JSON as a string>", "Sign": "<upper-case hex SHA-256 of JsonSerialized>"}``;
each side answers every non-receipt message with ``{"Received":true}``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec

RECEIVED = b'{"Received":true}'


class Command(enum.IntEnum):
    SALE = 100
    LAST_VOUCHER = 101
    REFUND = 102
    CLOSE = 103
    TOTALS = 104
    DETAILS = 105
    POLL = 106
    SET_NORMAL_MODE = 107
    RETURN = 108
    DUPLICATE_OTHERS = 109
    SALES_BY_SELLER = 110
    TIP_REPORT = 111
    DEFAULT_SALE_TYPE = 113
    PARAMETER_REPORT = 114
    SIM_REPORT = 115
    CANCEL_SALE = 116


# Intermediate messages sent during a sale when SendMessage is true. Progress only, never a result.
# What the cashier reads for each known MessageCode (an unknown code shows the terminal's own text).
INTERMEDIATE_MESSAGES: dict[int, str] = {
    78: "Leyendo tarjeta",
    79: "Confirmar monto",
    80: "Seleccionar cuotas",
    81: "Ingreso de PIN",
    82: "Enviando a Getnet",
    83: "Propina",
    84: "Vuelto",
}

# The MessageText the vendor's SDK declares for each code (what a terminal sends).
SDK_MESSAGE_TEXTS: dict[int, str] = {
    78: "Lectura de tarjetas",
    79: "Confirmacion de Importe",
    80: "Seleccion de cuota",
    81: "Entrada de PIN",
    82: "Enviando transaccion a Getnet",
    83: "Entrada de Propina",
    84: "Entrada de Vuelto",
}

#: ResponseCode of a terminal that is busy (a sale still with the acquirer): nothing it says is final.
BUSY_CODE = 11


def display_text(code: int | None, terminal_text: str) -> str:
    """What the POS shows for an intermediate message: our es-CL text for known codes, else the terminal's."""
    if code is not None and code in INTERMEDIATE_MESSAGES:
        return INTERMEDIATE_MESSAGES[code]
    return terminal_text


# Known final ResponseCodes and how to say them to a cashier. No public table exists: any non-zero code is a
# decline, the terminal's own ResponseMessage is kept verbatim, and this table only adds a clearer text.
DECLINE_CODES: dict[int, str] = {
    1: "Rechazada por el emisor",
    2: "Transacción cancelada en el terminal",
    3: "Tiempo de espera agotado en el terminal",
    4: "Tarjeta no soportada",
    5: "Fondos insuficientes",
    6: "PIN incorrecto",
    7: "Error de comunicación del terminal con Getnet",
    8: "Tarjeta vencida",
    9: "Tarjeta bloqueada",
    10: "Monto inválido",
    11: "Terminal ocupado",
    12: "Operación no encontrada",
    13: "No hay venta en curso",
    99: "Comando no soportado por el terminal",
}


def decline_text(code: int, terminal_message: str = "") -> str:
    """A message for people: the terminal's own words first, then what the table knows."""
    known = DECLINE_CODES.get(code)
    if terminal_message and known and known.lower() != terminal_message.lower():
        return f"{terminal_message} ({known})"
    return terminal_message or known or f"Rechazada (código {code})"


class Deadlines(msgspec.Struct, kw_only=True, frozen=True):
    """Seconds to wait. Defaults are the terminal's own; tests shorten them."""

    receipt_s: float = 3.0
    sale_s: float = 120.0
    short_s: float = 10.0  # Poll, SetNormalMode, DefaultSaleType, SimReport, CancelSale
    other_s: float = 60.0

    def for_command(self, command: int) -> float:
        if command == Command.SALE:
            return self.sale_s
        if command in (
            Command.POLL,
            Command.SET_NORMAL_MODE,
            Command.DEFAULT_SALE_TYPE,
            Command.SIM_REPORT,
            Command.CANCEL_SALE,
        ):
            return self.short_s
        return self.other_s


def monotonic() -> float:
    return time.monotonic()


# --- envelope -------------------------------------------------------------------------------------------


def sign(json_serialized: str) -> str:
    return hashlib.sha256(json_serialized.encode("utf-8")).hexdigest().upper()


def dumps_inner(inner: Mapping[str, Any]) -> str:
    return json.dumps(dict(inner), ensure_ascii=False, separators=(",", ":"))


def encode_envelope(inner: Mapping[str, Any], *, bad_sign: bool = False) -> bytes:
    serialized = dumps_inner(inner)
    signature = sign(serialized)
    if bad_sign:
        signature = ("0" if signature[0] != "0" else "1") + signature[1:]
    return json.dumps(
        {"JsonSerialized": serialized, "Sign": signature}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


class Receipt(msgspec.Struct, frozen=True):
    ok: bool = True


class Intermediate(msgspec.Struct, frozen=True):
    code: int
    text: str  # the terminal's own MessageText

    @property
    def display(self) -> str:
        return display_text(self.code, self.text)


class Response(msgspec.Struct, frozen=True):
    """A final response (has FunctionCode or ResponseCode)."""

    data: dict[str, Any]

    @property
    def function_code(self) -> int | None:
        return as_int(self.data.get("FunctionCode"))

    @property
    def response_code(self) -> int | None:
        return as_int(self.data.get("ResponseCode"))


class Request(msgspec.Struct, frozen=True):
    """A command (what the host sends; what the simulator receives)."""

    data: dict[str, Any]

    @property
    def command(self) -> int | None:
        return as_int(self.data.get("Command"))


class BadSign(msgspec.Struct, frozen=True):
    """An envelope whose Sign does not match: rejected, never applied."""

    reason: str


class Unknown(msgspec.Struct, frozen=True):
    """A well-formed JSON object that is none of the above."""

    reason: str


Message = Receipt | Intermediate | Response | Request | BadSign | Unknown


_NUMERIC = re.compile(r"^[+-]?\d+(?:\.0*)?$")


def as_int(value: Any) -> int | None:
    """A numeric field as the vendor's SDK declares it (a JSON number) or as some terminals send it (a numeric
    string): ``4500``, ``4500.0``, ``"4500"`` and ``" 4500 "`` are 4500. Anything else (a boolean, a fraction,
    text, an empty string) is None: never guessed."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        return int(value.strip().split(".")[0])
    return None


def as_text(value: Any) -> str | None:
    """A text field that a terminal may send as a number (``Ticket``, ``TerminalId``): None when empty."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def last4(value: Any) -> str | None:
    """Last4Digits: a string in a Sale response, an int in LastVoucher/DuplicateOthers (``119`` is "0119")."""
    number = as_int(value)
    if number is not None and number >= 0:
        return f"{number:04d}"[-4:]
    digits = "".join(ch for ch in str(value or "") if ch.isdigit())
    return digits[-4:] or None


def _classify_inner(inner: dict[str, Any]) -> Message:
    if "Command" in inner:
        return Request(inner)
    if "FunctionCode" in inner or "ResponseCode" in inner:
        return Response(inner)
    code = as_int(inner.get("MessageCode"))
    if code is not None:
        return Intermediate(code, str(inner.get("MessageText") or INTERMEDIATE_MESSAGES.get(code, "")))
    return Unknown("objeto sin Command, FunctionCode ni MessageCode")


def parse_message(raw: bytes) -> Message:
    """Classify one reassembled JSON object. Never raises."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return Unknown("JSON inválido")
    if not isinstance(obj, dict):
        return Unknown("no es un objeto JSON")
    if "Received" in obj and "JsonSerialized" not in obj:
        value = obj.get("Received")
        return Receipt(value is True or (isinstance(value, str) and value.strip().lower() == "true"))
    if "JsonSerialized" in obj:
        serialized, signature = obj.get("JsonSerialized"), obj.get("Sign")
        if not isinstance(serialized, str) or not isinstance(signature, str):
            return BadSign("sobre sin JsonSerialized o Sign de texto")
        if sign(serialized) != signature.strip().upper():
            return BadSign("Sign no coincide con el contenido")
        try:
            inner = json.loads(serialized)
        except ValueError:
            return Unknown("JsonSerialized no es JSON")
        if not isinstance(inner, dict):
            return Unknown("JsonSerialized no es un objeto")
        return _classify_inner(inner)
    # Some terminals send intermediate messages without the envelope.
    if "MessageCode" in obj:
        return _classify_inner(obj)
    return Unknown("objeto sin sobre")


# --- stream reassembly ----------------------------------------------------------------------------------

# A new message always starts like this. Inside a valid envelope these bytes cannot appear (the inner JSON is
# a string, its quotes are escaped), so seeing them means whatever came before was junk.
_MESSAGE_START = re.compile(rb'\{\s*"(?:JsonSerialized|Received|MessageCode)"')


class StreamReader:
    """Reassembles JSON objects from a byte stream by brace depth outside strings.

    Handles messages split over reads, several messages in one read, leading noise and truncated objects
    before a valid message. The buffer never grows beyond ``max_bytes``: an oversized or unterminated object
    is dropped (``dropped_bytes`` counts what was thrown away). Scanning is incremental.
    """

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self.dropped_bytes = 0
        self._reset_scan()

    def _reset_scan(self) -> None:
        self._pos = 0  # next byte to scan; 0 means "not inside an object yet"
        self._depth = 0
        self._in_string = False
        self._escape = False

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _drop(self, n: int) -> None:
        self.dropped_bytes += n
        del self._buf[:n]
        self._reset_scan()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            if self._pos == 0:
                start = self._buf.find(b"{")
                if start < 0:
                    self._drop(len(self._buf))
                    break
                if start:
                    self._drop(start)
            obj, complete = self._scan()
            if obj is not None:
                out.append(obj)
            elif not complete:
                break
        if len(self._buf) > self.max_bytes:
            self._drop(len(self._buf))
        return out

    def _scan(self) -> tuple[bytes | None, bool]:
        """Scan from where we left off. Returns (object, progressed): object when one closed and is valid JSON;
        progressed=True when the buffer changed (junk dropped) and scanning should go on."""
        buf = self._buf
        restart = _MESSAGE_START.search(buf, max(1, self._pos - 24))
        limit = restart.start() if restart else len(buf)
        i = max(self._pos, 1) if self._pos else 0
        if i == 0:
            # buf[0] is the opening brace
            self._depth, i = 1, 1
        depth, in_string, escape = self._depth, self._in_string, self._escape
        while i < limit:
            c = buf[i]
            i += 1
            if in_string:
                if escape:
                    escape = False
                elif c == 0x5C:  # backslash
                    escape = True
                elif c == 0x22:
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x7B:
                depth += 1
            elif c == 0x7D:
                depth -= 1
                if depth == 0:
                    obj = bytes(buf[:i])
                    del buf[:i]
                    self._reset_scan()
                    try:
                        json.loads(obj.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        self.dropped_bytes += len(obj)
                        return None, True
                    return obj, True
        if restart is not None:
            # A new message begins before the current object closed: the current one was truncated junk.
            self._drop(restart.start())
            return None, True
        self._pos, self._depth, self._in_string, self._escape = i, depth, in_string, escape
        return None, False


# --- commands -------------------------------------------------------------------------------------------


def sale_command(
    *,
    amount: int,
    ticket: str,
    employee_id: int | str = 0,
    print_on_pos: bool = True,
    send_message: bool = True,
    sale_type: int = 0,
    now_iso: str | None = None,
    tip: int = 0,
) -> dict[str, Any]:
    """A Sale (100). ``amount`` is what the terminal charges, the tip included; ``tip`` (for terminals with
    tips enabled) tells the terminal which part of it is the tip: it is sent only when there is one."""
    from datetime import datetime

    command = {
        "Command": int(Command.SALE),
        "Amount": int(amount),
        "TicketNumber": str(ticket),
        "PrintOnPos": bool(print_on_pos),
        "SaleType": int(sale_type),
        "SendMessage": bool(send_message),
        "EmployeeId": as_int(employee_id) or 0,  # the SDK's sale call takes an int employee id
        "DateTime": now_iso or datetime.now().replace(microsecond=0).isoformat(),
    }
    if tip:
        command["Tip"] = int(tip)
    return command


def simple_command(command: int, **fields: Any) -> dict[str, Any]:
    return {"Command": int(command), **fields}


# Fields of a response that may be kept (docs/architecture.md, "No card data"). Everything else is dropped before logging, before
# an agent posts a result and before the server stores it: the raw AccountNumber a terminal sends never leaves.
SAFE_FIELDS = frozenset(
    {
        # a sale (and LastVoucher, DuplicateOthers, each Details entry)
        "FunctionCode",
        "ResponseCode",
        "ResponseMessage",
        "CommerceCode",
        "TerminalId",
        "Ticket",
        "AuthorizationCode",
        "Amount",
        "SharesNumber",
        "SharesAmount",
        "Last4Digits",
        "OperationId",
        "CardType",
        "CardBrand",
        "AccountingDate",
        "RealDate",
        "EmployeeId",
        "Tip",
        "SaleType",
        "PosMode",
        "Cashback",
        # intermediate messages
        "MessageCode",
        "MessageText",
        # Close, Refund, Return, Poll, SetNormalMode
        "Success",
        "Connected",
        "ChangeToNormalMode",
        "DateTime",
        # ParameterReport: who the terminal is
        "ApplicationName",
        "Version",
        "So",
        "EmvModule",
        "Sn",
        "Model",
        "CommunicationType",
        "Company",
        "SucursalId",
        # SalesBySeller entries
        "Date",
        # what the host sent
        "Command",
        "TicketNumber",
        "SendMessage",
        "PrintOnPos",
    }
)

#: Totals: TxCount, TxTotal and the Count*/Total* pairs (numbers).
_REPORT_PREFIXES = ("tx", "count", "total")


def mask_response(data: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields that may be shown or logged; nested lists (``SaleDetails``) are masked item by item.
    Last4Digits keeps its last four digits (as a string, zero-padded when the terminal sent a number)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SAFE_FIELDS:
            if key == "Last4Digits" and value is not None:
                value = last4(value) or ""
            if isinstance(value, (dict, list)):
                continue
            out[key] = value
        elif isinstance(value, list):
            out[key] = [
                mask_response(v) if isinstance(v, Mapping) else v for v in value if isinstance(v, (Mapping, int, str))
            ]
        elif key.lower().startswith(_REPORT_PREFIXES) and as_int(value) is not None:
            out[key] = value
    return out


#: The Count*/Total* pairs of a Totals (104) answer, as the vendor's SDK names them.
TOTALS_PAIRS = (
    "CreditSales",
    "DebitSales",
    "PrepaidSales",
    "QrCreditSales",
    "QrDebitSales",
    "QrPrepaidSales",
    "CashSales",
    "CashSalesOff",
    "CreditAdvances",
    "CancelCredit",
    "CancelDebit",
    "CancelPrepaid",
    "CancelQrCredit",
    "CancelQrDebit",
    "CancelQrPrepaid",
    "Tips",
    "Returns",
)

#: The pairs that count the sales undone in the batch: voided (anulación) on the keypad or by Refund, or returned.
VOID_PAIRS = tuple(name for name in TOTALS_PAIRS if name.startswith("Cancel") or name == "Returns")
