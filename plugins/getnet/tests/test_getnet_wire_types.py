"""The simulator speaks GETNET's wire types as the vendor's own SDK declares them (plugins/getnet/README.md, Wire types), and our
client reads both those types and the numeric strings some firmware sends.

The decoder below mirrors the SDK's typed response classes: a field of the wrong JSON type fails, as it makes
the SDK's Java client throw (``"EmployeeId": ""`` → NumberFormatException). Every answer of the simulator is
read raw from a real socket and decoded strictly, refusals included.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from caja_core.providers import OutcomeKind
from caja_getnet.protocol import (
    RECEIVED,
    SDK_MESSAGE_TEXTS,
    Command,
    Intermediate,
    Receipt,
    Response,
    StreamReader,
    as_int,
    encode_envelope,
    last4,
    parse_message,
    sale_command,
    simple_command,
)
from caja_getnet.provider import GetnetSettings, terminal_time
from caja_getnet.simulator import TOTALS_PAIRS, Fault, Simulator

Number = int | float


# --- the SDK's response classes, as strict types ---------------------------------------------------------
class _Base(msgspec.Struct, forbid_unknown_fields=True):
    FunctionCode: int
    ResponseCode: int
    ResponseMessage: str


class SaleResponse(_Base, forbid_unknown_fields=True):
    CommerceCode: int
    TerminalId: str
    Ticket: str
    AuthorizationCode: str
    Amount: Number
    SharesNumber: int
    SharesAmount: int
    Last4Digits: str
    OperationId: int
    CardType: str
    AccountingDate: str
    AccountNumber: str
    CardBrand: str
    RealDate: str
    EmployeeId: int
    Tip: Number
    SaleType: int
    PosMode: int
    Cashback: Number


class LastVoucherResponse(_Base, forbid_unknown_fields=True):
    CommerceCode: int
    TerminalId: str
    Ticket: str
    AuthorizationCode: str
    Amount: Number
    SharesNumber: int
    SharesAmount: int
    Last4Digits: int  # a number here, unlike the Sale response
    OperationId: int
    CardType: str
    AccountingDate: str
    AccountNumber: str
    CardBrand: str
    RealDate: str
    EmployeeId: int
    Tip: Number
    SaleType: int
    PosMode: int
    Cashback: Number


DuplicateOthersResponse = LastVoucherResponse


class DetailsResponse(_Base, forbid_unknown_fields=True):
    SaleDetails: list[SaleResponse]


class SellerDetail(msgspec.Struct, forbid_unknown_fields=True):
    Date: str
    EmployeeId: int
    Ticket: str
    Amount: Number
    Nc: str
    Tc: str
    Tx: str


class SalesBySellerResponse(_Base, forbid_unknown_fields=True):
    SaleDetails: list[SellerDetail]


TotalsResponse = msgspec.defstruct(
    "TotalsResponse",
    [("TxCount", int), ("TxTotal", Number)]
    + [
        (f"{prefix}{pair}", int if prefix == "Count" else Number)
        for pair in TOTALS_PAIRS
        for prefix in ("Count", "Total")
    ],
    bases=(_Base,),
    forbid_unknown_fields=True,
)


class CloseResponse(_Base, forbid_unknown_fields=True):
    CommerceCode: int
    TerminalId: str
    Success: bool


class RefundResponse(_Base, forbid_unknown_fields=True):
    CommerceCode: int
    TerminalId: str
    AuthorizationCode: str
    OperationId: int
    Success: bool


class ReturnResponse(RefundResponse, forbid_unknown_fields=True):
    DateTime: str


class PollResponse(_Base, forbid_unknown_fields=True):
    Connected: bool


class SetNormalModeResponse(_Base, forbid_unknown_fields=True):
    ChangeToNormalMode: bool


class DefaultSaleTypeResponse(_Base, forbid_unknown_fields=True):
    SaleType: int


class CancelSaleResponse(_Base, forbid_unknown_fields=True):
    pass


class ParameterReportResponse(_Base, forbid_unknown_fields=True):
    ApplicationName: str
    Version: str
    So: str
    EmvModule: str
    Sn: str
    Model: str
    CommunicationType: str
    PrimaryIp: str
    SecondIp: str
    Company: str
    Apn: str
    SimId: str
    SucursalId: str
    TerminalId: str
    Tip: bool
    Ticket: bool
    Employee: bool
    VoucherAsTicket: bool
    Return: bool
    IssuerQuotas: bool
    MinimumIssuerQuotas: int
    MaximumIssuerQuotas: int
    TradeQuotas: bool
    MinimumTradeQuotas: int
    MaximumTradeQuotas: int
    MinimumAmount: int


class IntermediateMessage(msgspec.Struct, forbid_unknown_fields=True):
    MessageCode: int
    MessageText: str


SDK_TYPES: dict[int, type] = {
    Command.SALE: SaleResponse,
    Command.LAST_VOUCHER: LastVoucherResponse,
    Command.REFUND: RefundResponse,
    Command.CLOSE: CloseResponse,
    Command.TOTALS: TotalsResponse,
    Command.DETAILS: DetailsResponse,
    Command.POLL: PollResponse,
    Command.SET_NORMAL_MODE: SetNormalModeResponse,
    Command.RETURN: ReturnResponse,
    Command.DUPLICATE_OTHERS: DuplicateOthersResponse,
    Command.SALES_BY_SELLER: SalesBySellerResponse,
    Command.DEFAULT_SALE_TYPE: DefaultSaleTypeResponse,
    Command.PARAMETER_REPORT: ParameterReportResponse,
    Command.CANCEL_SALE: CancelSaleResponse,
}


def decode(command: int, inner: dict[str, Any]) -> Any:
    """As the SDK's client would: the JSON types must match its classes."""
    return msgspec.convert(inner, SDK_TYPES[command], strict=True)


# --- a raw host: every message of one exchange, as written on the wire -----------------------------------
async def raw_exchange(sim: Simulator, command: dict[str, Any], *, may_drop: bool = False) -> tuple[list[Any], Any]:
    """Send one command over a new TCP connection; return the messages before the final answer and the final
    answer's inner JSON (the simulator closes the connection after it; ``may_drop``: or before it, then None)."""
    reader, writer = await asyncio.open_connection(*sim.tcp_address)
    try:
        writer.write(encode_envelope(command))
        await writer.drain()
        stream, before = StreamReader(), []
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk and may_drop:
                return before, None
            assert chunk, f"el simulador cerró sin respuesta final a {command}"
            for raw in stream.feed(chunk):
                message = parse_message(raw)
                if isinstance(message, Response):
                    writer.write(RECEIVED)
                    inner = json.loads(json.loads(raw)["JsonSerialized"])
                    return before, inner
                if isinstance(message, Intermediate):
                    before.append(json.loads(json.loads(raw)["JsonSerialized"]))
                    writer.write(RECEIVED)
                else:
                    before.append(message)
    finally:
        writer.close()


@pytest.fixture
async def terminal():
    sim = Simulator(step_delay_s=0.01, message_gap_s=0.002, seed=5)
    await sim.start_tcp()
    yield sim
    await sim.stop()


async def test_a_sale_answers_with_the_sdk_types_and_texts(terminal):
    before, inner = await raw_exchange(terminal, sale_command(amount=4500, ticket="W1", employee_id=7))
    assert isinstance(before[0], Receipt)
    messages = [msgspec.convert(m, IntermediateMessage, strict=True) for m in before[1:]]
    assert [(m.MessageCode, m.MessageText) for m in messages] == [(c, SDK_MESSAGE_TEXTS[c]) for c in (78, 79, 81, 82)]
    sale = decode(Command.SALE, inner)
    assert (sale.ResponseCode, sale.Ticket, sale.Amount, sale.Last4Digits) == (0, "W1", 4500, "0119")
    assert sale.CommerceCode == 597000000001 and sale.TerminalId == "SIM00001"
    assert terminal.commands[-1]["EmployeeId"] == 7  # our host sends the SDK's int employee id


async def test_every_query_and_report_answers_with_the_sdk_types(terminal):
    await raw_exchange(terminal, sale_command(amount=1000, ticket="W2"))
    await raw_exchange(terminal, sale_command(amount=2500, ticket="W3"))
    last = decode(Command.LAST_VOUCHER, (await raw_exchange(terminal, simple_command(Command.LAST_VOUCHER)))[1])
    assert (last.Ticket, last.Last4Digits) == ("W3", 119)  # "0119" as a number
    duplicate = (await raw_exchange(terminal, simple_command(Command.DUPLICATE_OTHERS)))[1]
    assert decode(Command.DUPLICATE_OTHERS, duplicate).Ticket == "W3"
    details = decode(Command.DETAILS, (await raw_exchange(terminal, simple_command(Command.DETAILS)))[1])
    assert [s.Ticket for s in details.SaleDetails] == ["W2", "W3"]
    totals = decode(Command.TOTALS, (await raw_exchange(terminal, simple_command(Command.TOTALS)))[1])
    assert (totals.TxCount, totals.TxTotal) == (2, 3500)
    assert totals.TotalCreditSales + totals.TotalDebitSales == 3500
    sellers = (await raw_exchange(terminal, simple_command(Command.SALES_BY_SELLER)))[1]
    assert [s.Ticket for s in decode(Command.SALES_BY_SELLER, sellers).SaleDetails] == ["W2", "W3"]
    parameters = (await raw_exchange(terminal, simple_command(Command.PARAMETER_REPORT)))[1]
    assert decode(Command.PARAMETER_REPORT, parameters).Sn == "SN-SIM00001"
    assert decode(Command.POLL, (await raw_exchange(terminal, simple_command(Command.POLL)))[1]).Connected is True
    normal = (await raw_exchange(terminal, simple_command(Command.SET_NORMAL_MODE)))[1]
    assert decode(Command.SET_NORMAL_MODE, normal).ChangeToNormalMode is True
    sale_type = (await raw_exchange(terminal, simple_command(Command.DEFAULT_SALE_TYPE, SaleType=0)))[1]
    assert decode(Command.DEFAULT_SALE_TYPE, sale_type).SaleType == 0
    refund = (await raw_exchange(terminal, simple_command(Command.REFUND, OperationId=last.OperationId)))[1]
    assert decode(Command.REFUND, refund).Success is True
    first = details.SaleDetails[0]
    returned = (
        await raw_exchange(
            terminal, simple_command(Command.RETURN, AuthorizationCode=first.AuthorizationCode, Amount=1000)
        )
    )[1]
    assert decode(Command.RETURN, returned).Success is True
    cancel = (await raw_exchange(terminal, simple_command(Command.CANCEL_SALE)))[1]
    assert decode(Command.CANCEL_SALE, cancel).ResponseCode == 13  # nothing to cancel
    close = decode(Command.CLOSE, (await raw_exchange(terminal, simple_command(Command.CLOSE)))[1])
    assert close.Success is True and close.CommerceCode == 597000000001


async def test_refusals_and_declines_keep_the_sdk_types(terminal):
    empty = (await raw_exchange(terminal, simple_command(Command.LAST_VOUCHER)))[1]
    assert decode(Command.LAST_VOUCHER, empty).ResponseCode == 12
    details = decode(Command.DETAILS, (await raw_exchange(terminal, simple_command(Command.DETAILS)))[1])
    assert details.SaleDetails == []
    missing = (await raw_exchange(terminal, simple_command(Command.REFUND, OperationId=999)))[1]
    assert decode(Command.REFUND, missing).Success is False
    terminal.add_fault(Fault(kind="decline", code=5))
    declined = decode(Command.SALE, (await raw_exchange(terminal, sale_command(amount=100, ticket="W9")))[1])
    assert declined.ResponseCode == 5 and declined.AuthorizationCode == ""
    terminal.add_fault(Fault(kind="acquirer_busy", answer="busy", delay_s=30))
    before, final = await raw_exchange(terminal, sale_command(amount=100, ticket="W10"), may_drop=True)
    assert isinstance(before[0], Receipt) and final is None  # the line dropped after the receipt
    for command in (Command.LAST_VOUCHER, Command.DETAILS, Command.TOTALS, Command.CLOSE):
        busy = decode(command, (await raw_exchange(terminal, simple_command(command)))[1])
        assert busy.ResponseCode == 11
    sale = decode(Command.SALE, (await raw_exchange(terminal, sale_command(amount=100, ticket="W11")))[1])
    assert sale.ResponseCode == 11
    assert terminal.charged() == {}


def test_the_strict_decoder_refuses_what_the_sdk_refuses():
    good = SaleResponse(
        FunctionCode=100,
        ResponseCode=0,
        ResponseMessage="Aprobado",
        CommerceCode=597000000001,
        TerminalId="T1",
        Ticket="1",
        AuthorizationCode="123456",
        Amount=1000,
        SharesNumber=0,
        SharesAmount=0,
        Last4Digits="0119",
        OperationId=1,
        CardType="DB",
        AccountingDate="2025-01-01",
        AccountNumber="",
        CardBrand="VI",
        RealDate="2025-01-01T22:00:00",
        EmployeeId=0,
        Tip=0,
        SaleType=0,
        PosMode=1,
        Cashback=0,
    )
    as_dict = msgspec.to_builtins(good)
    assert decode(Command.SALE, as_dict) == good
    for field, wrong in (
        ("EmployeeId", ""),
        ("PosMode", "INTEGRADO"),
        ("CommerceCode", "597000000001"),
        ("Amount", "1000"),
        ("Last4Digits", 119),
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(Command.SALE, as_dict | {field: wrong})
    with pytest.raises(msgspec.ValidationError):
        decode(Command.LAST_VOUCHER, as_dict)  # Last4Digits is a number there
    with pytest.raises(msgspec.ValidationError):
        decode(Command.DETAILS, {"FunctionCode": 105, "ResponseCode": 0, "ResponseMessage": "", "Details": []})


# --- our client reads numbers and numeric strings alike --------------------------------------------------
def test_numeric_fields_are_read_from_numbers_and_numeric_strings():
    for value in (4500, 4500.0, "4500", " 4500 ", "4500.0"):
        assert as_int(value) == 4500
    for value in ("", None, True, "45,5", "abc", 4500.5, "4500.5"):
        assert as_int(value) is None
    assert last4(119) == last4("119") == last4("0119") == last4("************0119") == "0119"
    assert last4("") is None


def test_the_terminal_date_is_its_local_time_turned_into_utc():
    zone = ZoneInfo("America/Santiago")
    winter = datetime(2025, 7, 2, 2, 30, 5, tzinfo=UTC)  # 22:30:05 in Santiago (UTC-4 in July)
    for text in ("2025-07-01T22:30:05", "2025-07-01 22:30:05", "01/07/2025 22:30:05", "20250701223005"):
        assert terminal_time(text, zone) == winter
    assert terminal_time("2025-07-01T22:30:05-04:00", zone) == winter
    assert terminal_time("2025-07-01", zone) is None  # a date alone says nothing about the time of the sale
    assert terminal_time("ayer", zone) is None and terminal_time(None, zone) is None
    # The repeated hour when daylight saving time ends (2025-04-05 24:00 → 23:00): the earlier instant.
    assert terminal_time("2025-04-05T23:30:00", zone) == datetime(2025, 4, 6, 2, 30, tzinfo=UTC)


@pytest.fixture
async def text_terminal():
    sim = Simulator(step_delay_s=0.01, message_gap_s=0.002, numbers_as_text=True, seed=9)
    await sim.start_tcp()
    yield sim
    await sim.stop()


async def test_a_terminal_that_writes_numbers_as_text_is_read_the_same(
    text_terminal, provider, ctx, progress, make_request, fast
):
    host, port = text_terminal.tcp_address
    settings = GetnetSettings(host=host, port=port, **fast)
    _, raw = await raw_exchange(text_terminal, simple_command(Command.POLL))
    assert raw["FunctionCode"] == "106"  # really text on the wire
    request = make_request(amount=3200)
    before = datetime.now(UTC).replace(microsecond=0)
    outcome = await provider.charge(request, settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 3200
    assert outcome.card.last4 == "0119" and outcome.card.operation_id == "1"
    assert progress.codes == [None, 78, 79, 81, 82]
    assert before <= outcome.occurred_at <= datetime.now(UTC)
    status = await provider.status(request, settings, ctx)  # LastVoucher, Last4Digits "119"
    assert status.kind is OutcomeKind.APPROVED and status.card.last4 == "0119"
    other = make_request(amount=10)
    # Details read too: the other ticket is not there (not yet proof that it was not charged: this provider never
    # sent it, so the terminal may still be working on it until its sale deadline has passed).
    unseen = await provider.status(other, settings, ctx)
    assert unseen.kind is OutcomeKind.UNKNOWN and "no registra el ticket" in unseen.message
    report = await provider.terminal_report(settings, ctx)
    assert (report.count, report.total, [s.ticket for s in report.sales]) == (1, 3200, [request.ticket])
    assert (await provider.identify(settings, ctx)).identity == "getnet:SN-SIM00001"
