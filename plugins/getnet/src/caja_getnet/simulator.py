"""A GETNET POS Integrado terminal in software, over TCP or a pseudo-terminal, with fault injection.

Behaves like the terminal described in plugins/getnet/README.md: answers every command with ``{"Received":true}``
then its final response (with intermediate messages 78–84 in between when the sale asks for them), keeps a
ledger of the sales since the last Close so LastVoucher, Details, Totals, Refund, Return and Close answer
truthfully, writes each message in one write with a short gap, never waits for the host's receipt, and over
TCP closes the connection after each final response (unless ``keep_open``).

Every response carries the fields and JSON types that GETNET's own SDK declares for it (numbers where the SDK
has numbers: CommerceCode, Amount, OperationId, EmployeeId, PosMode…; Last4Digits a string in a Sale response
and a number in LastVoucher/DuplicateOthers; the Details list under ``SaleDetails``), so a host written against
the SDK's typed classes can read every answer. ``tests/test_getnet_wire_types.py`` decodes them strictly.

Faults are chosen for the whole run or for the next sale, in process (``Simulator.add_fault``) or through
the control channel (HTTP on loopback: ``GET/POST/DELETE /faults``, ``GET /ledger``). See README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import tempfile
import tty
from collections import deque
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from .protocol import (
    BUSY_CODE,
    RECEIVED,
    SDK_MESSAGE_TEXTS,
    TOTALS_PAIRS,
    Command,
    Receipt,
    Request,
    StreamReader,
    decline_text,
    encode_envelope,
    mask_response,
    parse_message,
)

log = logging.getLogger("caja.getnet.simulator")

FAULT_KINDS = (
    "decline",  # final response with ResponseCode=code (nothing charged)
    "no_receipt",  # the terminal ignores the sale entirely (never sees it)
    "receipt_then_silence",  # receipt, then nothing; charged says whether the card was charged
    "late_answer",  # receipt, then the response only after delay_s
    "disconnect_after_receipt",  # receipt, then the line drops (TCP closed / serial device gone); charged as above
    "split_bytes",  # the final response written byte by byte, gap_s between bytes
    "glued",  # receipt, intermediate messages and the response in one single write
    "duplicate_response",  # the final response written twice
    "wrong_sign",  # the final response with a Sign that does not match (card charged)
    "different_amount",  # approval for another amount (amount, or request + 1000)
    "noise_before",  # junk and a truncated object before the final response
    "earlier_ticket",  # the previous sale's response first, then (if then_real) the real one
    "unterminated",  # receipt, then an object that never ends (size bytes), nothing else
    "frozen",  # the terminal ignores this sale and every command after it until faults are cleared
    "acquirer_busy",  # receipt, then the sale stays with the acquirer for delay_s while queries are answered
    "random",  # each sale: with probability rate, one of the above (seeded)
)

RANDOM_POOL = (
    "decline",
    "no_receipt",
    "receipt_then_silence",
    "late_answer",
    "disconnect_after_receipt",
    "split_bytes",
    "glued",
    "duplicate_response",
    "wrong_sign",
    "noise_before",
    "earlier_ticket",
)


# A test card number, deliberately present in raw responses (as a careless terminal might send it), so that a
# host that logs or stores raw frames is caught by the tests. caja never keeps more than the last 4 digits.
TEST_ACCOUNT_NUMBER = "4761739001010119"


def _numbers_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_text(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


class Fault(msgspec.Struct, kw_only=True):
    kind: str
    scope: str = "next"  # "next" (the next sale only) or "run" (every sale until cleared)
    code: int = 5
    message: str = ""
    charged: bool = True
    delay_s: float = 5.0
    gap_s: float = 0.15
    chunk: int = 1  # split_bytes: bytes per write
    amount: int | None = None
    noise: str = '\x00\x7fruido{"JsonSerialized":"{\\"FunctionCode\\":100,\\"Resp'
    then_real: bool = True
    replug_after_s: float | None = None  # disconnect over a pty: plug back after this long (None: stay out)
    receipt: bool = True  # False: the terminal never confirms this sale (late_answer: "silence then answer")
    size: int = 2_000_000
    seed: int | None = None
    rate: float = 0.3
    answer: str = "stale"  # acquirer_busy: queries meanwhile get "stale" answers (without the sale) or "busy"
    drop: bool = True  # acquirer_busy: the sale's line drops after the receipt (False: the answer comes late)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"falla desconocida: {self.kind!r} (válidas: {', '.join(FAULT_KINDS)})")
        if self.scope not in ("next", "run"):
            raise ValueError("scope debe ser 'next' o 'run'")
        if self.answer not in ("stale", "busy"):
            raise ValueError("answer debe ser 'stale' o 'busy'")


class LedgerEntry(msgspec.Struct, kw_only=True):
    ticket: str
    amount: int
    authorization_code: str
    operation_id: int
    card_brand: str
    card_type: str
    last4: str
    real_date: str  # the terminal's local date and time, "YYYY-MM-DDTHH:MM:SS"
    refunded: bool = False
    returned: bool = False  # undone by a Return (108): counted under Returns, not under Cancel*
    batch: int = 1  # the batch (between two Close) the sale belongs to
    tip: int = 0  # the part of the amount that is a tip (the host's Tip field)


# --- links: where a session writes ----------------------------------------------------------------------


class _Link:
    closed = False

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True

    async def drop(self) -> None:
        """The cable is pulled."""
        await self.close()


class _TcpLink(_Link):
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.closed = True

    async def close(self) -> None:
        """Done writing: send FIN now; the session keeps reading (and ignoring) until the host closes, so the
        host's late receipts never turn the close into a reset that could destroy the answer in flight."""
        if not self.closed:
            self.closed = True
            try:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                pass


class _PtyLink(_Link):
    def __init__(self, master_fd: int, unplug) -> None:
        self.fd = master_fd
        self._unplug = unplug

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            except OSError:
                return
            view = view[n:]

    async def close(self) -> None:
        pass  # a serial line is not closed after a response: the terminal simply goes quiet

    async def drop(self) -> None:
        self.closed = True
        self._unplug()


class Simulator:
    """One terminal. ``await start_tcp()`` / ``await start_pty()``, then ``await stop()``."""

    def __init__(
        self,
        *,
        terminal_id: str = "SIM00001",
        commerce_code: int | str = 597000000001,
        serial_number: str | None = None,
        model: str = "SIMULADOR",
        timezone: str = "America/Santiago",
        keep_open: bool = False,
        step_delay_s: float = 0.05,
        message_gap_s: float = 0.01,
        seed: int | None = None,
        numbers_as_text: bool = False,
    ) -> None:
        self.terminal_id = terminal_id
        # A terminal whose firmware writes every number as a string ("Amount": "4500"): hosts must cope.
        self.numbers_as_text = numbers_as_text
        self.commerce_code = int(commerce_code)
        self.serial_number = serial_number or f"SN-{terminal_id}"
        self.model = model
        self.zone = ZoneInfo(timezone)  # the terminal's clock runs in local time (RealDate, AccountingDate)
        self.keep_open = keep_open
        self.step_delay_s = step_delay_s
        self.message_gap_s = message_gap_s
        self.linger_s = 2.0  # TCP: how long to wait for the host to close after our final answer
        self.ledger: list[LedgerEntry] = []  # the sales since the last Close (what Details lists)
        self.history: list[LedgerEntry] = []  # every sale ever charged, across Close (what really happened)
        self.batch = 1
        self.closes = 0
        self._acquirer: tuple[str, int, Fault] | None = None  # a sale still with the acquirer (acquirer_busy)
        self.commands: list[dict[str, Any]] = []  # every command received (masked), for tests/rehearsal
        self.host_receipts = 0  # {"Received":true} the host sent us
        self.frozen = False  # a hung terminal: ignores everything
        self.faults_next: deque[Fault] = deque()
        self.fault_run: Fault | None = None
        self._random: random.Random | None = None
        self._rng = random.Random(seed)
        self._busy = asyncio.Lock()
        self._cancel_requested = False
        self._sale_in_progress = False
        self._operation_id = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self._work: set[asyncio.Task] = set()  # answers and faults still to play out (not the connections)
        self._pty: tuple[int, int] | None = None
        self._pty_link: _PtyLink | None = None
        self._pty_dir: str | None = None
        self.pty_device: str | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.control_address: tuple[str, int] | None = None
        self.pty_path: str | None = None

    # --- faults -------------------------------------------------------------------------------------
    def add_fault(self, fault: Fault | dict[str, Any]) -> Fault:
        if isinstance(fault, dict):
            fault = msgspec.convert(fault, Fault)
        if fault.kind == "random":
            self._random = random.Random(fault.seed)
        if fault.scope == "run":
            self.fault_run = fault
        else:
            self.faults_next.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults_next.clear()
        self.fault_run = None
        self.frozen = False

    def _take_fault(self) -> Fault | None:
        fault = self.faults_next.popleft() if self.faults_next else self.fault_run
        if fault is not None and fault.kind == "random":
            rng = self._random or random.Random(fault.seed)
            self._random = rng
            if rng.random() >= fault.rate:
                return None
            kind = rng.choice(RANDOM_POOL)
            return Fault(
                kind=kind,
                charged=rng.random() < 0.5,
                delay_s=rng.uniform(0.05, 0.5),
                gap_s=0.001,
                code=rng.choice([1, 5, 6]),
                replug_after_s=0.3,
            )
        return fault

    # --- serving ------------------------------------------------------------------------------------
    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        server = await asyncio.start_server(self._tcp_session, host, port)
        self._servers.append(server)
        self.tcp_address = server.sockets[0].getsockname()[:2]
        log.info("simulador GETNET escuchando en tcp://%s:%s", *self.tcp_address)
        return self.tcp_address

    async def start_pty(self) -> str:
        """Plug in a serial terminal: a pseudo-terminal reached through a stable path (a symlink that stays the
        same when the cable is pulled and plugged back, like /dev/ttyACM0). Returns that path."""
        if self._pty is not None and self.pty_path is not None:
            return self.pty_path
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self._pty = (master, slave)  # we keep the slave open so the pty never hangs up between clients
        self.pty_device = os.ttyname(slave)
        if self._pty_dir is None:
            self._pty_dir = tempfile.mkdtemp(prefix="caja-getnet-")
        self.pty_path = os.path.join(self._pty_dir, "ttyGETNET")
        os.symlink(self.pty_device, self.pty_path + ".new")
        os.replace(self.pty_path + ".new", self.pty_path)
        link = _PtyLink(master, self.unplug_pty)
        self._pty_link = link
        reader = StreamReader()
        loop = asyncio.get_running_loop()

        def on_readable() -> None:
            try:
                data = os.read(master, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for raw in reader.feed(data):
                self._dispatch(link, raw)

        loop.add_reader(master, on_readable)
        log.info("simulador GETNET en el puerto serie %s (%s)", self.pty_path, self.pty_device)
        return self.pty_path

    async def start_control(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        server = await asyncio.start_server(self._control_session, host, port)
        self._servers.append(server)
        self.control_address = server.sockets[0].getsockname()[:2]
        return self.control_address

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
        self._servers.clear()
        self.unplug_pty()
        if self._pty_dir is not None:
            shutil.rmtree(self._pty_dir, ignore_errors=True)
            self._pty_dir = None

    async def _replug_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.start_pty()

    def unplug_pty(self) -> None:
        """The USB cable is pulled: the device disappears (``start_pty()`` plugs it back, same path)."""
        if self._pty and self._pty_link is not None and self.pty_path is not None:
            master, slave = self._pty
            self._pty = None
            with contextlib.suppress(OSError):
                os.unlink(self.pty_path)
            self._pty_link.closed = True
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
            os.close(slave)

    def command_codes(self) -> list[int]:
        return [int(c["Command"]) for c in self.commands]

    def tickets(self) -> dict[str, int]:
        """Ticket → amount of the sales charged and not refunded since the last Close."""
        return {e.ticket: e.amount for e in self.ledger if not e.refunded}

    def charged(self) -> dict[str, int]:
        """Ticket → amount of every sale charged and not refunded, across batch closes: the customer's truth."""
        return {e.ticket: e.amount for e in self.history if not e.refunded}

    def charge_count(self) -> int:
        """How many times a card was charged (refunded or not), across batch closes."""
        return len(self.history)

    @property
    def idle(self) -> bool:
        """Nothing left to happen on its own: no sale in progress, none with the acquirer, no late answer or
        replug still to come. What it charged (``tickets``) is then final until the next command."""
        return not self._sale_in_progress and self._acquirer is None and not self._work

    @property
    def acquirer_busy(self) -> bool:
        """A sale is still with the acquirer (``acquirer_busy`` fault)."""
        return self._acquirer is not None

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    async def _tcp_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _TcpLink(writer)
        stream = StreamReader()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        loop = asyncio.get_running_loop()
        linger_until: float | None = None
        try:
            while True:
                if link.closed and linger_until is None:
                    linger_until = loop.time() + self.linger_s
                if linger_until is not None and loop.time() >= linger_until:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.2)
                except TimeoutError:
                    continue
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                if link.closed:
                    continue  # late receipts after our final answer: read and ignored
                for raw in stream.feed(data):
                    self._dispatch(link, raw)
        finally:
            link.closed = True
            writer.close()

    def _dispatch(self, link: _Link, raw: bytes) -> None:
        message = parse_message(raw)
        if isinstance(message, Receipt):
            self.host_receipts += 1
            return
        if not isinstance(message, Request):
            return  # host receipts, badly signed or unknown objects: ignored (a bad Sign is never applied)
        self.commands.append(mask_response(message.data) | {"Command": message.command})
        if self.frozen:
            return
        if message.command == Command.CANCEL_SALE:
            self._spawn(self._cancel_sale(link))
        elif self._acquirer is not None:
            self._spawn(self._answer_while_busy(link, message.data))
        else:
            fault = self._take_fault() if message.command == Command.SALE else None
            self._spawn(self._handle(link, message.data, fault))

    # --- writing --------------------------------------------------------------------------------------
    def _encode(self, message: dict[str, Any], *, bad_sign: bool = False) -> bytes:
        if self.numbers_as_text:
            message = _numbers_as_text(message)
        return encode_envelope(message, bad_sign=bad_sign)

    async def _send(self, link: _Link, data: bytes) -> None:
        await link.write(data)
        if self.message_gap_s:
            await asyncio.sleep(self.message_gap_s)

    async def _finish(self, link: _Link) -> None:
        """After a final response: over TCP the terminal closes the connection (one per command)."""
        if not self.keep_open:
            await link.close()

    async def _send_final(self, link: _Link, response: dict[str, Any], fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        frame = self._encode(response, bad_sign=kind == "wrong_sign")
        if fault and kind == "noise_before":
            await self._send(link, fault.noise.encode("utf-8"))
        if fault and kind == "split_bytes":
            step = max(1, fault.chunk)
            for i in range(0, len(frame), step):
                await link.write(frame[i : i + step])
                await asyncio.sleep(fault.gap_s)
        else:
            await self._send(link, frame)
        if kind == "duplicate_response":
            await self._send(link, frame)
        await self._finish(link)

    # --- commands -------------------------------------------------------------------------------------
    async def _cancel_sale(self, link: _Link) -> None:
        await self._send(link, RECEIVED)
        if self._sale_in_progress:
            self._cancel_requested = True
            response = self._base(Command.CANCEL_SALE, 0, "Venta cancelada")
        else:
            response = self._base(Command.CANCEL_SALE, 13, decline_text(13))
        await self._send(link, self._encode(response))
        if not self._sale_in_progress:
            await self._finish(link)

    async def _handle(self, link: _Link, request: dict[str, Any], fault: Fault | None) -> None:
        command = int(request.get("Command", 0))
        if fault and fault.kind == "frozen":
            self.frozen = True
            log.info("simulador: terminal colgado (falla frozen) hasta borrar las fallas")
            return
        if fault and fault.kind == "no_receipt":
            log.info("simulador: falla no_receipt, la venta %s se ignora", request.get("TicketNumber"))
            return
        quiet = bool(fault and (fault.kind == "glued" or not fault.receipt))
        if not quiet:
            await self._send(link, RECEIVED)
        async with self._busy:
            if command == Command.SALE:
                await self._sale(link, request, fault)
                return
            response = self._answer(command, request)
        await self._send(link, self._encode(response))
        await self._finish(link)

    async def _answer_while_busy(self, link: _Link, request: dict[str, Any]) -> None:
        """A command while a sale is still with the acquirer: answered at once, either from what the terminal
        has recorded so far (``stale``: the pending sale is not there yet) or with "busy"."""
        pending = self._acquirer
        command = int(request.get("Command", 0))
        await self._send(link, RECEIVED)
        if command == Command.SALE:
            ticket = str(request.get("TicketNumber") or "")
            response = self._declined(ticket, request.get("Amount"), BUSY_CODE, "Terminal ocupado")
        elif pending is not None and pending[2].answer == "busy" and command != Command.POLL:
            response = self._blank(command) | self._base(command, BUSY_CODE, "Terminal ocupado")
        else:
            response = self._answer(command, request)
        await self._send(link, self._encode(response))
        await self._finish(link)

    # --- responses, with the JSON types of the vendor's SDK ----------------------------------------------
    @staticmethod
    def _base(function_code: int, code: int, message: str) -> dict[str, Any]:
        return {"FunctionCode": int(function_code), "ResponseCode": int(code), "ResponseMessage": message}

    def _identity(self) -> dict[str, Any]:
        return {"CommerceCode": self.commerce_code, "TerminalId": self.terminal_id}

    def _blank(self, command: int) -> dict[str, Any]:
        """Every field of the command's answer with an empty value (what a refusal still carries)."""
        if command in (Command.SALE, Command.LAST_VOUCHER, Command.DUPLICATE_OTHERS):
            return self._sale_response(self._declined_entry("", 0), command)
        if command in (Command.DETAILS, Command.SALES_BY_SELLER):
            return {"SaleDetails": []}
        if command == Command.TOTALS:
            return dict.fromkeys(self.totals(), 0)
        if command == Command.CLOSE:
            return self._identity() | {"Success": False}
        if command in (Command.REFUND, Command.RETURN):
            blank = self._identity() | {"AuthorizationCode": "", "OperationId": 0, "Success": False}
            return blank | ({"DateTime": self._now_local()} if command == Command.RETURN else {})
        if command == Command.POLL:
            return {"Connected": True}
        if command == Command.SET_NORMAL_MODE:
            return {"ChangeToNormalMode": False}
        if command == Command.DEFAULT_SALE_TYPE:
            return {"SaleType": 0}
        if command == Command.PARAMETER_REPORT:
            return self.parameters()
        return {}

    def _sale_fields(self, entry: LedgerEntry, function_code: int, *, last4_as_int: bool = False) -> dict[str, Any]:
        """A Sale response (SDK types). LastVoucher and DuplicateOthers send Last4Digits as a number."""
        last4: str | int = entry.last4
        if last4_as_int:
            last4 = int(entry.last4) if entry.last4.isdigit() else 0
        approved = bool(entry.authorization_code)
        return self._base(function_code, 0 if approved else 1, "Aprobado" if approved else decline_text(1)) | {
            "CommerceCode": self.commerce_code,
            "TerminalId": self.terminal_id,
            "Ticket": entry.ticket,
            "AuthorizationCode": entry.authorization_code,
            "Amount": entry.amount,
            "SharesNumber": 0,
            "SharesAmount": 0,
            "Last4Digits": last4,
            "OperationId": entry.operation_id,
            "CardType": entry.card_type,
            "AccountingDate": entry.real_date[:10],
            "AccountNumber": TEST_ACCOUNT_NUMBER if approved else "",
            "CardBrand": entry.card_brand,
            "RealDate": entry.real_date,
            "EmployeeId": 0,
            "Tip": entry.tip,
            "SaleType": 0,
            "PosMode": 1,
            "Cashback": 0,
        }

    def _sale_response(self, entry: LedgerEntry, function_code: int = Command.SALE) -> dict[str, Any]:
        return self._sale_fields(
            entry, function_code, last4_as_int=function_code in (Command.LAST_VOUCHER, Command.DUPLICATE_OTHERS)
        )

    def _now_local(self) -> str:
        return datetime.now(self.zone).replace(microsecond=0, tzinfo=None).isoformat()

    def _declined_entry(self, ticket: str, amount: Any) -> LedgerEntry:
        """What a declined (or refused) sale answers with: no authorization, nothing in the ledger."""
        return LedgerEntry(
            ticket=ticket,
            amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else 0,
            authorization_code="",
            operation_id=0,
            card_brand="",
            card_type="",
            last4="",
            real_date=self._now_local(),
            batch=self.batch,
        )

    def _declined(self, ticket: str, amount: Any, code: int, message: str) -> dict[str, Any]:
        return self._sale_fields(self._declined_entry(ticket, amount), Command.SALE) | {
            "ResponseCode": int(code),
            "ResponseMessage": message,
        }

    async def _sale(self, link: _Link, request: dict[str, Any], fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        ticket = str(request.get("TicketNumber") or "")
        amount = request.get("Amount")
        tip = request.get("Tip", 0)
        if isinstance(tip, bool) or not isinstance(tip, int) or tip < 0 or (isinstance(amount, int) and tip > amount):
            tip = -1  # refused below, like a bad amount
        if not ticket or isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0 or tip < 0:
            response = self._declined(ticket, amount, 10, decline_text(10))
            await self._send(link, self._encode(response))
            await self._finish(link)
            return
        self._sale_in_progress = True
        self._cancel_requested = False
        try:
            glued_frames: list[bytes] = [RECEIVED] if kind == "glued" else []
            if request.get("SendMessage"):
                for code in (78, 79, 83, 81, 82) if tip else (78, 79, 81, 82):
                    message = self._encode({"MessageCode": code, "MessageText": SDK_MESSAGE_TEXTS[code]})
                    if kind == "glued":
                        glued_frames.append(message)
                    else:
                        await self._send(link, message)
                    await asyncio.sleep(self.step_delay_s)
                    if self._cancel_requested:
                        break
            else:
                await asyncio.sleep(self.step_delay_s * 4)
            if self._cancel_requested:
                response = self._declined(ticket, amount, 2, decline_text(2))
                await self._send(link, b"".join(glued_frames) + self._encode(response))
                await self._finish(link)
                return
            if fault and kind == "decline":
                response = self._declined(ticket, amount, fault.code, fault.message or decline_text(fault.code))
                await self._send(link, b"".join(glued_frames) + self._encode(response))
                await self._finish(link)
                return
            if fault and kind == "acquirer_busy":
                self._acquirer = (ticket, amount, fault)
                self._spawn(self._acquirer_answers(link, ticket, amount, fault))
                if fault.drop and isinstance(link, _TcpLink):
                    await link.drop()  # the sale's connection closes; over serial the line just goes quiet
                return
            charged_amount = amount
            if fault and kind == "different_amount":
                charged_amount = fault.amount if fault.amount is not None else amount + 1000
            entry = self._charge(ticket, charged_amount, tip)
            if (
                fault
                and kind in ("receipt_then_silence", "disconnect_after_receipt", "unterminated")
                and not fault.charged
            ):
                self._uncharge(entry)
            response = self._sale_response(entry)
            if kind == "receipt_then_silence":
                return
            if fault and kind == "disconnect_after_receipt":
                await link.drop()
                if fault.replug_after_s is not None and isinstance(link, _PtyLink):
                    self._spawn(self._replug_later(fault.replug_after_s))
                return
            if fault and kind == "unterminated":
                await link.write(b'{"JsonSerialized":"' + b"A" * fault.size)
                return
            if fault and kind == "late_answer":
                await asyncio.sleep(fault.delay_s)
            if fault and kind == "earlier_ticket":
                earlier = (
                    self.ledger[-2]
                    if len(self.ledger) >= 2
                    else LedgerEntry(
                        ticket="0",
                        amount=amount,
                        authorization_code="000000",
                        operation_id=0,
                        card_brand="VI",
                        card_type="DB",
                        last4="0119",
                        real_date=entry.real_date,
                    )
                )
                await self._send(link, self._encode(self._sale_response(earlier)))
                if not fault.then_real:
                    return
            if kind == "glued":
                await self._send(link, b"".join(glued_frames) + self._encode(response))
                await self._finish(link)
                return
            await self._send_final(link, response, fault)
        finally:
            self._sale_in_progress = False

    async def _acquirer_answers(self, link: _Link, ticket: str, amount: int, fault: Fault) -> None:
        """The acquirer answers after ``delay_s``: the sale is charged (or not) only then."""
        try:
            await asyncio.sleep(fault.delay_s)
        finally:
            self._acquirer = None
        if fault.charged:
            entry = self._charge(ticket, amount)
            response = self._sale_response(entry)
        else:
            response = self._declined(ticket, amount, 7, decline_text(7))
        log.info("simulador: el adquirente respondió la venta %s (%s)", ticket, "cobrada" if fault.charged else "no")
        if not link.closed and not fault.drop:
            await self._send_final(link, response, None)

    def _charge(self, ticket: str, amount: int, tip: int = 0) -> LedgerEntry:
        self._operation_id += 1
        entry = LedgerEntry(
            ticket=ticket,
            amount=amount,
            tip=tip,
            authorization_code=f"{self._rng.randrange(10**6):06d}",
            operation_id=self._operation_id,
            card_brand=self._rng.choice(["VI", "MC"]),
            card_type=self._rng.choice(["DB", "CR"]),
            last4=TEST_ACCOUNT_NUMBER[-4:],
            real_date=self._now_local(),
            batch=self.batch,
        )
        self.ledger.append(entry)
        self.history.append(entry)
        log.info(
            "simulador: venta aprobada ticket=%s monto=%s autorización=%s", ticket, amount, entry.authorization_code
        )
        return entry

    def _uncharge(self, entry: LedgerEntry) -> None:
        """The card was not charged after all (a fault that breaks down before the acquirer)."""
        self.ledger.remove(entry)
        self.history.remove(entry)

    def _find(
        self, *, operation_id: Any = None, authorization_code: Any = None, amount: Any = None
    ) -> LedgerEntry | None:
        for entry in reversed(self.ledger):
            if entry.refunded:
                continue
            if operation_id is not None and str(entry.operation_id) == str(operation_id):
                return entry
            if (
                authorization_code is not None
                and entry.authorization_code == str(authorization_code)
                and entry.amount == amount
            ):
                return entry
        return None

    def close_batch(self) -> None:
        """The batch close (Close, 103): the list of sales starts again. Called directly, it is a close run on the
        terminal itself (its keypad, or the automatic close at night): the host is not told."""
        self.ledger.clear()
        self.batch += 1
        self.closes += 1

    def void_on_keypad(self, ticket: str) -> LedgerEntry:
        """A void (anulación) of one sale of the current batch run on the terminal's own keypad, as a cashier does
        for a customer who asks for the money back: the host is not told. As with Refund (102), the sale leaves
        Details and moves to the CountCancel*/TotalCancel* totals; the other sales of the batch stay listed. A
        sale of a batch already closed cannot be voided (``LookupError``)."""
        for entry in reversed(self.ledger):
            if entry.ticket == str(ticket) and not entry.refunded:
                entry.refunded = True
                log.info("simulador: anulada en el teclado la venta ticket=%s", entry.ticket)
                return entry
        raise LookupError(f"no hay una venta vigente con el ticket {ticket} en el lote actual")

    def totals(self) -> dict[str, int]:
        """The Totals (104) numbers since the last Close, named as the SDK names them. TxCount/TxTotal count the
        sales still standing; a voided sale moves to CountCancel*/TotalCancel*, one undone by Return (108) to
        CountReturns/TotalReturns (and either leaves Details)."""
        out: dict[str, int] = {"TxCount": 0, "TxTotal": 0}
        for name in TOTALS_PAIRS:
            out[f"Count{name}"] = 0
            out[f"Total{name}"] = 0
        for entry in self.ledger:
            kind = "Credit" if entry.card_type == "CR" else "Debit"
            pair = "Returns" if entry.returned else f"Cancel{kind}" if entry.refunded else f"{kind}Sales"
            out[f"Count{pair}"] += 1
            out[f"Total{pair}"] += entry.amount
            if not entry.refunded:
                out["TxCount"] += 1
                out["TxTotal"] += entry.amount
                if entry.tip:
                    out["CountTips"] += 1
                    out["TotalTips"] += entry.tip
        return out

    def parameters(self) -> dict[str, Any]:
        """ParameterReport (114): who the terminal is and how it is set up."""
        return {
            "ApplicationName": "POS Integrado",
            "Version": "caja-simulador-2",
            "So": "Linux",
            "EmvModule": "EMV-SIM",
            "Sn": self.serial_number,
            "Model": self.model,
            "CommunicationType": "ETHERNET",
            "PrimaryIp": "",
            "SecondIp": "",
            "Company": "GETNET",
            "Apn": "",
            "SimId": "",
            "SucursalId": "1",
            "TerminalId": self.terminal_id,
            "Tip": False,
            "Ticket": True,
            "Employee": False,
            "VoucherAsTicket": False,
            "Return": True,
            "IssuerQuotas": False,
            "MinimumIssuerQuotas": 0,
            "MaximumIssuerQuotas": 0,
            "TradeQuotas": False,
            "MinimumTradeQuotas": 0,
            "MaximumTradeQuotas": 0,
            "MinimumAmount": 1,
        }

    def _answer(self, command: int, request: dict[str, Any]) -> dict[str, Any]:
        if command in (Command.LAST_VOUCHER, Command.DUPLICATE_OTHERS):
            if not self.ledger:
                return self._blank(command) | self._base(command, 12, "Sin transacciones desde el último cierre")
            return self._sale_response(self.ledger[-1], command)
        if command in (Command.REFUND, Command.RETURN):
            if command == Command.REFUND:
                entry = self._find(operation_id=request.get("OperationId"))
            else:
                entry = self._find(authorization_code=request.get("AuthorizationCode"), amount=request.get("Amount"))
            if entry is None:
                return self._blank(command) | self._base(command, 12, decline_text(12))
            entry.refunded = True
            entry.returned = command == Command.RETURN
            log.info("simulador: anulada la venta ticket=%s", entry.ticket)
            return (
                self._blank(command)
                | self._base(command, 0, "Anulación aprobada")
                | {"AuthorizationCode": entry.authorization_code, "OperationId": entry.operation_id, "Success": True}
            )
        if command == Command.CLOSE:
            self.close_batch()
            return self._base(command, 0, "Cierre aprobado") | self._identity() | {"Success": True}
        if command == Command.TOTALS:
            return self._base(command, 0, "Aprobado") | self.totals()
        if command == Command.DETAILS:
            return self._base(command, 0, "Aprobado") | {
                "SaleDetails": [self._sale_response(e, Command.DETAILS) for e in self.ledger if not e.refunded]
            }
        if command == Command.SALES_BY_SELLER:
            return self._base(command, 0, "Aprobado") | {
                "SaleDetails": [
                    {
                        "Date": e.real_date,
                        "EmployeeId": 0,
                        "Ticket": e.ticket,
                        "Amount": e.amount,
                        "Nc": "",
                        "Tc": "",
                        "Tx": "",
                    }
                    for e in self.ledger
                    if not e.refunded
                ]
            }
        if command == Command.POLL:
            return self._base(command, 0, "Aprobado") | {"Connected": True}
        if command == Command.SET_NORMAL_MODE:
            return self._base(command, 0, "Aprobado") | {"ChangeToNormalMode": True}
        if command == Command.DEFAULT_SALE_TYPE:
            return self._base(command, 0, "Aprobado") | {"SaleType": 0}
        if command in (Command.SIM_REPORT, Command.TIP_REPORT):
            return self._base(command, 0, "Aprobado")
        if command == Command.PARAMETER_REPORT:
            return self._base(command, 0, "Aprobado") | self.parameters()
        return self._base(command or 0, 99, decline_text(99))

    # --- control channel (HTTP/1.1 on loopback) -------------------------------------------------------
    def ledger_json(self) -> dict[str, Any]:
        return {
            "ledger": msgspec.to_builtins(self.ledger),
            "charged": self.charged(),
            "closes": self.closes,
            "totals": self.totals(),
            "faults": {"next": msgspec.to_builtins(list(self.faults_next)), "run": msgspec.to_builtins(self.fault_run)},
            "commands": self.commands[-50:],
        }

    async def _control_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = [*lines[0].split(" "), "", ""][:3]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length > 65536:
                raise ValueError("cuerpo demasiado grande")
            body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
            status, payload = self._control(method, path.split("?")[0], body)
        except (ValueError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError) as exc:
            status, payload = 400, {"error": str(exc)}
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
            f"\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/ledger" and method == "GET":
            return 200, self.ledger_json()
        if path == "/keypad" and method == "POST":
            # What a person does on the terminal itself, which the host is never told of.
            try:
                raw = json.loads(body or b"{}")
                action = raw.get("action") if isinstance(raw, dict) else None
                if action == "close":
                    self.close_batch()
                elif action == "void":
                    self.void_on_keypad(str(raw.get("ticket") or ""))
                else:
                    return 400, {"error": "action debe ser 'close' o 'void' (con ticket)"}
            except (ValueError, LookupError) as exc:
                return 400, {"error": str(exc)}
            return 200, self.ledger_json()
        if path == "/faults":
            if method == "GET":
                return 200, self.ledger_json()["faults"]
            if method == "DELETE":
                self.clear_faults()
                return 200, {"status": "ok"}
            if method == "POST":
                try:
                    raw = json.loads(body or b"{}")
                    items = raw if isinstance(raw, list) else [raw]
                    faults = [msgspec.convert(item, Fault) for item in items]
                except (ValueError, msgspec.ValidationError) as exc:
                    return 400, {"error": str(exc)}
                for fault in faults:
                    self.add_fault(fault)
                return 200, self.ledger_json()["faults"]
        return 404, {"error": f"ruta desconocida: {method} {path}"}
