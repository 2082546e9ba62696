"""The agent path: the provider through an agent channel, and `caja agent` as a real process between a server
speaking the agent API and a simulated terminal on a pseudo-terminal (kill -9 mid-sale included)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

from caja_core.providers import OutcomeKind, ProviderContext
from caja_core.testing.waiting import wait_until
from caja_getnet.agent import InProcessAgentChannel, Journal
from caja_getnet.client import GetnetClient
from caja_getnet.protocol import Command, Deadlines
from caja_getnet.provider import GetnetSettings
from caja_getnet.simulator import TEST_ACCOUNT_NUMBER, Fault, Simulator
from caja_getnet.transport import TcpTransport

CAJA = str(Path(sys.executable).with_name("caja"))
TOKEN = "caja1-token-de-prueba"


def agent_ctx(sim, fast) -> tuple[ProviderContext, InProcessAgentChannel]:
    host, port = sim.tcp_address
    client = GetnetClient(TcpTransport(host, port), deadlines=Deadlines(receipt_s=fast["receipt_timeout_s"]))
    channel = InProcessAgentChannel(client)
    return ProviderContext(register_id=1, venue_id=1, agent=channel), channel


async def test_provider_through_an_agent_approves_and_never_sees_the_card_number(
    make_request, fast, sim, provider, progress
):
    ctx, _channel = agent_ctx(sim, fast)
    settings = GetnetSettings(connection="agent", **fast)
    assert provider.device_key(settings, "CAJA1") == "getnet:agent:CAJA1"
    request = make_request(amount=2200)
    outcome = await provider.charge(request, settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 2200
    assert progress.codes == [None, 78, 79, 81, 82]
    assert sim.tickets() == {request.ticket: 2200}
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.APPROVED
    assert (await provider.health(settings, ctx)).kind is OutcomeKind.APPROVED


async def test_provider_through_an_agent_maps_faults(make_request, fast, sim, provider, progress):
    ctx, _channel = agent_ctx(sim, fast)
    settings = GetnetSettings(connection="agent", **fast)
    sim.add_fault(Fault(kind="no_receipt"))
    assert (await provider.charge(make_request(), settings, ctx, progress)).kind is OutcomeKind.UNAVAILABLE
    sim.add_fault(Fault(kind="receipt_then_silence"))
    request = make_request()
    assert (await provider.charge(request, settings, ctx, progress)).kind is OutcomeKind.UNKNOWN
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.APPROVED
    no_agent = ProviderContext(register_id=1, venue_id=1, agent=None)
    assert (await provider.charge(make_request(), settings, no_agent, progress)).kind is OutcomeKind.UNAVAILABLE


async def test_not_in_details_is_no_proof_while_the_agent_may_be_running_the_sale(make_request, fast, sim, provider):
    """Through an agent, "the terminal does not list the ticket" is proof only once the channel revoked every
    command of the attempt that was not started and none that was started is unaccounted for."""
    ctx, channel = agent_ctx(sim, fast)
    settings = GetnetSettings(connection="agent", **fast)
    answers: list[int] = []

    async def revoke_attempt(attempt_id: int) -> bool:
        answers.append(attempt_id)
        return len(answers) > 1  # the first time, a started Sale has no result yet

    channel.revoke_attempt = revoke_attempt
    request = make_request(amount=1800)
    # This provider never sent the sale (another instance did): first the terminal's whole sale deadline passes.
    deadline = time.monotonic() + settings.sale_timeout_s + 10
    while "puede seguir" in (first := await provider.status(request, settings, ctx)).message:
        assert time.monotonic() < deadline, first
        await asyncio.sleep(0.1)
    assert first.kind is OutcomeKind.UNKNOWN and "agente" in first.message
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.UNAVAILABLE
    assert answers == [request.attempt_id, request.attempt_id]


# --- a server speaking the agent API (what the agent sees of caja's web app) -----------------------------------


class AgentApiServer:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.commands: dict[str, dict] = {}
        self.results: dict[str, list[dict]] = {}
        self.progress: dict[str, list[dict]] = {}
        self.heartbeats: list[dict] = []
        self.deliveries: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._leased: dict[str, float] = {}
        self._new = asyncio.Event()
        self.reject_results = False
        self.claims: dict[str, int] = {}  # command → the fence that claimed it
        self.claim_attempts: dict[str, list[int]] = {}
        self.revoked: set[str] = set()
        self.claim_status: int | None = None  # answer every claim with this status (e.g. 503: never confirmed)
        self._start_by: dict[str, float] = {}

    def add(self, payload: dict, deadline_s: float = 10.0, expires_in_s: float = 30.0) -> str:
        command_id = f"c{next(self._ids)}"
        self.commands[command_id] = {
            "command_id": command_id,
            "attempt_id": 1,
            "payload": payload,
            "deadline_s": deadline_s,
            "fence": 0,
            "expires_in_s": expires_in_s,
        }
        self._start_by[command_id] = time.monotonic() + expires_in_s
        self._new.set()
        return command_id

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        self.server.close()

    def _next(self) -> dict | None:
        now = time.monotonic()
        for command_id, command in self.commands.items():
            if command_id in self.results or command_id in self.claims or command_id in self.revoked:
                continue
            left = self._start_by[command_id] - now
            if left > 0.1 and now - self._leased.get(command_id, -99) > 2.0:
                self._leased[command_id] = now
                self.deliveries[command_id] = self.deliveries.get(command_id, 0) + 1
                command["fence"] = self.deliveries[command_id]
                return dict(command) | {"expires_in_s": round(left, 2)}
        return None

    def forget_result(self, command_id: str) -> None:
        """A server that lost the result (and the claim) sends the command again."""
        self._start_by[command_id] = time.monotonic() + 30
        self.results.pop(command_id, None)
        self.claims.pop(command_id, None)
        self._leased.pop(command_id, None)
        self._new.set()

    def _claim(self, command_id: str, fence: int) -> tuple[int, dict]:
        self.claim_attempts.setdefault(command_id, []).append(fence)
        if self.claim_status is not None:
            return self.claim_status, {"error": "no disponible"}
        if command_id in self.revoked:
            return 409, {"error": "revocado", "code": "agent.claim_revoked"}
        if self.claims.get(command_id, fence) != fence or fence != self.deliveries.get(command_id):
            return 409, {"error": "entrega vieja o ya iniciado", "code": "agent.claim_stale"}
        self.claims[command_id] = fence
        return 200, {"status": "claimed"}

    async def result_of(self, command_id: str, within: float = 20.0) -> dict:
        deadline = time.monotonic() + within
        while command_id not in self.results:
            assert time.monotonic() < deadline, f"sin resultado para {command_id}"
            await asyncio.sleep(0.05)
        return self.results[command_id][0]

    async def _session(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                pairs = (line.partition(":") for line in lines[1:] if line)
                headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
                body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
                status, payload = await self._route(method, target, headers, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, method, target, headers, body):
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "token inválido"}
        path, _, query = target.partition("?")
        if method == "GET" and path == "/api/agent/v1/commands/next":
            wait = float(dict(p.split("=") for p in query.split("&") if p).get("wait", 0))
            deadline = time.monotonic() + wait
            while True:
                command = self._next()
                if command is not None:
                    return 200, command
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 204, None
                self._new.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new.wait(), min(remaining, 0.2))
        data = json.loads(body or b"{}")
        if method == "POST" and path == "/api/agent/v1/heartbeat":
            self.heartbeats.append(data)
            return 200, {"status": "ok"}
        parts = path.split("/")
        if method == "POST" and len(parts) == 7 and parts[4] == "commands" and parts[5] in self.commands:
            if parts[6] == "claim":
                return self._claim(parts[5], int(data["fence"]))
            if parts[6] == "progress":
                self.progress.setdefault(parts[5], []).append(data)
                return 200, {"status": "ok"}
            if parts[6] == "result":
                if self.reject_results:
                    return 503, {"error": "base de datos no disponible"}
                self.results.setdefault(parts[5], []).append(data["result"])
                return 200, {"status": "ok"}
        return 404, {"error": "no encontrado"}


async def start_agent(server_url: str, pty_path: str, state_dir: Path, token_file: Path):
    return await asyncio.create_subprocess_exec(
        CAJA,
        "agent",
        "--server",
        server_url,
        "--token-file",
        str(token_file),
        "--serial",
        pty_path,
        "--state-dir",
        str(state_dir),
        "--wait",
        "1",
        "--heartbeat",
        "0.3",
        "--poll-every",
        "0.5",
        "--receipt-timeout",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_agent(proc) -> str:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    return err.decode()


async def test_agent_process_runs_a_sale_on_the_register_terminal(tmp_path):
    sim = Simulator(step_delay_s=0.05)
    pty_path = await sim.start_pty()
    api = AgentApiServer()
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = await start_agent(url, pty_path, tmp_path / "state", token_file)
    try:
        sale = api.add(
            {
                "Command": 100,
                "Amount": 3000,
                "TicketNumber": "A1",
                "PrintOnPos": True,
                "SaleType": 0,
                "SendMessage": True,
                "EmployeeId": "",
                "DateTime": "2026-01-01T23:00:00",
            },
            deadline_s=10,
        )
        result = await api.result_of(sale)
        assert (result["ResponseCode"], result["Ticket"], result["Amount"]) == (0, "A1", 3000)
        assert "AccountNumber" not in result and result["Last4Digits"] == TEST_ACCOUNT_NUMBER[-4:]
        assert [p["code"] for p in api.progress[sale]] == [None, 78, 79, 81, 82]
        for _ in range(40):
            if any(h["terminal"] == "ok" for h in api.heartbeats):
                break
            await asyncio.sleep(0.1)
        assert any(h["terminal"] == "ok" for h in api.heartbeats)
    finally:
        err = await stop_agent(proc)
        await api.stop()
        await sim.stop()
    assert sim.tickets() == {"A1": 3000}
    assert len(api.results[sale]) == 1
    assert TOKEN not in err and TEST_ACCOUNT_NUMBER not in err


async def test_agent_killed_mid_sale_loses_no_result_and_never_repeats_the_sale(tmp_path):
    sim = Simulator(step_delay_s=0.4)  # a slow customer: the sale takes ~1.6 s
    pty_path = await sim.start_pty()
    api = AgentApiServer()
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    state = tmp_path / "state"
    proc = await start_agent(url, pty_path, state, token_file)
    restarted = None
    try:
        sale = api.add(
            {
                "Command": 100,
                "Amount": 4000,
                "TicketNumber": "K1",
                "PrintOnPos": True,
                "SaleType": 0,
                "SendMessage": True,
                "EmployeeId": "",
                "DateTime": "2026-01-01T23:00:00",
            },
            deadline_s=10,
        )
        await _until(lambda: api.progress.get(sale), 20, "la venta empezó")
        proc.send_signal(signal.SIGKILL)  # the register PC loses power mid-sale
        await proc.wait()
        await _until(sim.tickets, 15, "el terminal terminó la venta sin nadie escuchando")
        restarted = await start_agent(url, pty_path, state, token_file)
        result = await api.result_of(sale)
        assert result["AgentError"] == "in_doubt"  # reported, not lost and not guessed
        api.forget_result(sale)  # a server that lost it sends the sale again …
        again = await api.result_of(sale)
        assert again == result and api.deliveries[sale] == 2
        assert sim.command_codes().count(Command.SALE) == 1  # … and the terminal never sees it twice
        last = api.add({"Command": 101}, deadline_s=5)  # the server reconciles through the agent
        voucher = await api.result_of(last)
        assert (voucher["Ticket"], voucher["Amount"], voucher["ResponseCode"]) == ("K1", 4000, 0)
    finally:
        if restarted is not None:
            await stop_agent(restarted)
        await api.stop()
        await sim.stop()
    assert sim.tickets() == {"K1": 4000}


async def test_a_result_the_server_cannot_take_survives_on_disk_across_a_restart(tmp_path):
    sim = Simulator(step_delay_s=0.02)
    pty_path = await sim.start_pty()
    api = AgentApiServer()
    api.reject_results = True  # the server's database is down when the approval arrives
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    state = tmp_path / "state"
    proc = await start_agent(url, pty_path, state, token_file)
    restarted = None
    try:
        sale = api.add(
            {
                "Command": 100,
                "Amount": 5000,
                "TicketNumber": "D1",
                "PrintOnPos": True,
                "SaleType": 0,
                "SendMessage": False,
                "EmployeeId": "",
                "DateTime": "2026-01-01T23:00:00",
            },
            deadline_s=10,
        )
        await _until(lambda: list((state / "outbox").glob("*.json")), 20, "el resultado quedó guardado en disco")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        api.reject_results = False
        restarted = await start_agent(url, pty_path, state, token_file)
        result = await api.result_of(sale)
        assert (result["ResponseCode"], result["Ticket"], result["Amount"]) == (0, "D1", 5000)
        # the agent clears its outbox once the server's 2xx reaches it
        await _until(lambda: not list((state / "outbox").glob("*.json")), 20, "el agente vació su bandeja")
    finally:
        if restarted is not None:
            await stop_agent(restarted)
        await api.stop()
        await sim.stop()
    assert len(api.results[sale]) == 1 and sim.command_codes().count(Command.SALE) == 1
    assert sim.tickets() == {"D1": 5000}
    assert TEST_ACCOUNT_NUMBER not in "".join(p.read_text() for p in state.rglob("*.json"))


def test_journal_keeps_results_until_delivered_and_forgets_old_ones(tmp_path):
    journal = Journal(tmp_path)
    journal.start("c0", {"Command": 100, "TicketNumber": "T0"})
    journal.forget("c0")  # the server refused the claim: never ran, may come again
    assert not journal.seen("c0")
    journal.start("c1", {"Command": 100, "TicketNumber": "T1"})
    journal.running("c1")  # the server confirmed the claim
    assert journal.seen("c1") and journal.outbox() == []
    journal.start("c2", {"Command": 100, "TicketNumber": "T2"})  # died while claiming: never ran
    assert journal.recover_inflight() == ["c1", "c2"]  # died mid-command: reported in doubt
    assert [item["result"]["AgentError"] for item in journal.outbox()] == ["in_doubt", "refused"]
    journal.delivered("c2")
    assert journal.outbox() == [
        {
            "command_id": "c1",
            "result": {"AgentError": "in_doubt", "Detail": "El agente se reinició con este comando en curso."},
        }
    ]
    journal.delivered("c1")
    assert journal.outbox() == [] and journal.seen("c1")
    assert journal.requeue_done("c1") and len(journal.outbox()) == 1  # the server asked again
    journal.delivered("c1")
    old = tmp_path / "done" / "c1.json"
    os.utime(old, (0, 0))
    assert journal.prune_done() == 1 and not journal.seen("c1")


async def test_cancel_sale_reaches_a_sale_the_agent_has_in_flight(tmp_path):
    sim = Simulator(step_delay_s=0.5)  # the customer takes their time
    pty_path = await sim.start_pty()
    api = AgentApiServer()
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc = await start_agent(url, pty_path, tmp_path / "state", token_file)
    try:
        sale = api.add(
            {
                "Command": 100,
                "Amount": 6000,
                "TicketNumber": "X1",
                "PrintOnPos": True,
                "SaleType": 0,
                "SendMessage": True,
                "EmployeeId": "",
                "DateTime": "2026-01-01T23:00:00",
            },
            deadline_s=20,
        )
        # receipt and "reading card": the sale is in progress
        await _until(lambda: len(api.progress.get(sale, [])) >= 2, 20, "la venta está en curso")
        cancel = api.add({"Command": 116}, deadline_s=5)
        cancelled = await api.result_of(cancel)
        result = await api.result_of(sale)
    finally:
        await stop_agent(proc)
        await api.stop()
        await sim.stop()
    assert cancelled["ResponseCode"] == 0
    assert (result["ResponseCode"], result["Ticket"]) == (2, "X1")
    assert sim.tickets() == {}


# --- fencing: an expired, revoked or unconfirmed command never reaches the terminal ------------------------------
def _sale(ticket: str, amount: int) -> dict:
    return {
        "Command": 100,
        "Amount": amount,
        "TicketNumber": ticket,
        "PrintOnPos": True,
        "SaleType": 0,
        "SendMessage": True,
        "EmployeeId": 0,
        "DateTime": "2026-01-01T23:00:00",
    }


async def _until(predicate, within: float, what: str) -> None:
    await wait_until(predicate, timeout_s=within, what=what)


async def _agent_with_a_slow_sale(tmp_path, api: AgentApiServer):
    """An agent whose terminal is busy with a slow sale (~2 s): the next command waits its turn."""
    sim = Simulator(step_delay_s=0.5)
    pty_path = await sim.start_pty()
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc = await start_agent(url, pty_path, tmp_path / "state", token_file)
    first = api.add(_sale("S1", 1000), deadline_s=20)
    try:
        await _until(lambda: api.progress.get(first), 15, "la primera venta empezó")
    except BaseException:  # no agent process outlives a failed start
        await stop_agent(proc)
        await api.stop()
        await sim.stop()
        raise
    return sim, proc, first


async def test_a_command_that_expires_while_waiting_for_the_terminal_is_never_sent(tmp_path):
    api = AgentApiServer()
    sim, proc, first = await _agent_with_a_slow_sale(tmp_path, api)
    try:
        late = api.add(_sale("S2", 2000), deadline_s=20, expires_in_s=0.5)  # must start within 0.5 s
        await _until(lambda: api.deliveries.get(late), 10, "el agente recibió el segundo comando")
        await api.result_of(first)
        # The terminal is free again: the next command runs, and the expired one, waiting before it, never went.
        after = api.add(_sale("S4", 4000), deadline_s=20)
        await api.result_of(after)
    finally:
        err = await stop_agent(proc)
        await api.stop()
        await sim.stop()
    assert sim.command_codes().count(Command.SALE) == 2 and sim.charged() == {"S1": 1000, "S4": 4000}
    assert late not in api.claim_attempts and late not in api.results  # not even claimed
    assert "venció" in err


async def test_a_revoked_command_is_refused_at_the_claim_and_never_sent(tmp_path):
    api = AgentApiServer()
    sim, proc, first = await _agent_with_a_slow_sale(tmp_path, api)
    try:
        ghost = api.add(_sale("S3", 3000), deadline_s=20)
        await _until(lambda: api.deliveries.get(ghost), 10, "el agente recibió el segundo comando")
        api.revoked.add(ghost)  # the server gave the attempt up meanwhile
        await api.result_of(first)
        await _until(lambda: api.claim_attempts.get(ghost), 10, "el agente intentó reclamarlo")
        # The agent goes on with the next command: the refused one, before it, never went to the terminal.
        after = api.add(_sale("S4", 4000), deadline_s=20)
        await api.result_of(after)
    finally:
        await stop_agent(proc)
        await api.stop()
        await sim.stop()
    assert sim.command_codes().count(Command.SALE) == 2 and sim.charged() == {"S1": 1000, "S4": 4000}
    assert ghost not in api.results  # nothing to report: it never ran


async def test_a_start_the_server_never_confirms_is_not_run_and_reported_refused(tmp_path):
    sim = Simulator(step_delay_s=0.05)
    pty_path = await sim.start_pty()
    api = AgentApiServer()
    api.claim_status = 503  # the server's database is down at the moment of the claim
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc = await start_agent(url, pty_path, tmp_path / "state", token_file)
    try:
        await _until(lambda: api.heartbeats, 15, "el agente arrancó")
        sale = api.add(_sale("S4", 4000), deadline_s=10, expires_in_s=2.0)
        result = await api.result_of(sale)
    finally:
        await stop_agent(proc)
        await api.stop()
        await sim.stop()
    assert result["AgentError"] == "refused"
    assert len(api.claim_attempts[sale]) >= 2  # it kept asking until the command expired
    assert Command.SALE not in sim.command_codes() and sim.charged() == {}


async def test_a_rotated_token_is_picked_up_from_the_token_file_without_a_restart(tmp_path):
    """The admin rotates the register's token in the middle of a sale and replaces the token file, as
    docs/agent.md says: the sale's result and the next sale go through without restarting the agent."""
    sim = Simulator(step_delay_s=0.3)
    pty_path = await sim.start_pty()
    api = AgentApiServer()
    url = await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = await start_agent(url, pty_path, tmp_path / "state", token_file)
    try:
        await _until(lambda: api.heartbeats, 60, "el agente arrancó")
        first = api.add(_sale("R1", 1000), deadline_s=20)
        await _until(lambda: first in api.claims, 10, "el agente inició la venta")
        api.token = "token-rotado-en-la-ficha"  # the old token stops working at once (401)
        await _until(lambda: sim.charged(), 10, "el terminal cobró")
        token_file.write_text(api.token + "\n")  # the installer pastes the new token
        result = await api.result_of(first, within=30)
        second = api.add(_sale("R2", 2000), deadline_s=20)
        again = await api.result_of(second, within=30)
    finally:
        err = await stop_agent(proc)
        await api.stop()
        await sim.stop()
    assert (result["ResponseCode"], result["Ticket"]) == (0, "R1")
    assert (again["ResponseCode"], again["Ticket"]) == (0, "R2")
    assert sim.charged() == {"R1": 1000, "R2": 2000}
    assert "token-rotado" not in err and TOKEN not in err
