"""docs/reliability.md case 34 through the real stack: the app under uvicorn, ``caja agent`` as a real process on the
register PC's side of a flaky network (an HTTP proxy that loses or delays answers, or cuts the line), and the
GETNET simulator on a pseudo-terminal. The simulator's ledger is what the customer was really charged.

* Ghost sale: the answer delivering the Sale command to the agent is lost; the cashier cancels and the server
  gives the attempt up (not charged); the lost delivery then reaches the agent → the agent's claim is refused
  and the terminal never sees the sale.
* The opposite race: the agent already claimed the sale and charged the card when the network dropped; the
  server cannot know, keeps the attempt in doubt (never "not charged"), and applies the agent's result when it
  finally arrives.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from caja_core.agents.service import AgentTiming, channel_factory
from caja_core.payments import states as st
from caja_core.payments.models import AgentCommand, PaymentAttempt
from caja_core.sales.models import Sale
from caja_core.testing.waiting import wait_until
from caja_getnet.protocol import Command

from .test_agent_e2e import Stack


class FlakyNetwork:
    """An HTTP/1.1 proxy between the agent and the server that can lose the answer of the next delivery (the
    server handed the command out; the agent never sees it), deliver a lost answer later, or cut the line."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lose_next_delivery = False
        self.lost: list[bytes] = []  # answers that never reached the agent
        self.replay = False  # answer the agent's next long poll with the oldest lost answer
        self.cut = False
        self.cut_after_claim = False  # cut the line right after a claim the server accepted
        self.log: list[tuple[str, str, int]] = []
        self.client = httpx.AsyncClient(timeout=60)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        self.server.close()
        await self.client.aclose()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self.cut:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                if self.cut:
                    break
                path = target.split("?")[0]
                if self.replay and self.lost and method == "GET" and path.endswith("/commands/next"):
                    self.replay = False
                    status, content = 200, self.lost.pop(0)
                else:
                    forward = {
                        k: v
                        for k, v in headers.items()
                        if k in ("authorization", "content-type", "x-caja-agent-instance")
                    }
                    response = await self.client.request(method, self.upstream + target, headers=forward, content=body)
                    status, content = response.status_code, response.content
                    if self.lose_next_delivery and status == 200 and path.endswith("/commands/next"):
                        self.lose_next_delivery = False
                        self.lost.append(content)
                        self.log.append((method, path, -1))
                        break  # the connection drops: the agent never reads this answer
                    if self.cut:
                        break
                    if self.cut_after_claim and status == 200 and path.endswith("/claim"):
                        self.cut_after_claim, self.cut = False, True  # this answer gets through, then nothing
                self.log.append((method, path, status))
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n".encode()
                    + content
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, httpx.HTTPError):
            pass
        finally:
            writer.close()


#: The server side of these tests: short waits, and no re-delivery of its own while the test runs (only the
#: proxy brings a lost delivery back).
TIMING = AgentTiming(
    pickup_timeout_s=2.0,
    start_window_s=10.0,
    result_grace_s=3.0,
    poll_interval_s=0.1,
    redeliver_after_s=60.0,
)


@pytest.fixture
async def flaky(request, sqlite_db, sqlite_url, tmp_path):
    stack = await Stack(sqlite_db, sqlite_url, tmp_path, getattr(request, "param", 0.05)).start()
    stack.app.state.agent_timing = TIMING
    stack.orchestrator.agent_channel_factory = channel_factory(stack.db, timing=TIMING)
    network = FlakyNetwork(stack.url)
    stack.url = await network.start()  # the agent reaches the server through the flaky network
    stack.network = network
    await stack.terminal_already_identified()  # the sale is the first command the agent receives
    yield stack
    network.cut = False
    stack.errors = await stack.stop()
    await network.stop()


async def until(predicate, within: float, what: str):
    return await wait_until(predicate, timeout_s=within, what=what, interval_s=0.1)


async def sale_command(stack, attempt: PaymentAttempt) -> AgentCommand:
    (command,) = await stack.rows(AgentCommand, AgentCommand.attempt_id == attempt.id)
    assert command.payload["Command"] == Command.SALE
    return command


async def test_a_lost_delivery_that_reaches_the_agent_after_the_server_gave_up_never_charges(flaky):
    network = flaky.network
    await flaky.start_agent()  # and wait for its first heartbeat
    network.lose_next_delivery = True
    sale_id = await flaky.sale(5200)
    await flaky.pay(sale_id)

    async def lost():
        return network.lost

    await until(lost, 15, "la entrega de la venta se perdió")
    # The cashier sees nothing happening and cancels: CancelSale and the reconciliation reach the terminal,
    # which never saw the sale; the server gives the attempt up as not charged.
    await flaky.orchestrator.cancel(flaky.venue.venue_id, sale_id, flaky.venue.setup.cashier_id)
    done = await flaky.until(sale_id, lambda p: p.state in st.FINAL, 30)
    assert done.state == "failed_not_sent" and not done.paid, done
    (attempt,) = await flaky.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert (await sale_command(flaky, attempt)).status == "revoked"

    # The lost delivery finally reaches the agent (a late retransmission): the agent claims it, is refused.
    network.replay = True

    async def claimed_or_charged():
        refused = [entry for entry in network.log if entry[1].endswith("/claim") and entry[2] == 409]
        return refused or Command.SALE in flaky.sim.command_codes()

    await until(claimed_or_charged, 20, "el agente recibió la venta perdida")
    # The agent goes on with its next requests: a sale it had wrongly started would be on the terminal by then.
    asked = len(network.log)
    await wait_until(lambda: len(network.log) >= asked + 2, timeout_s=20, what="el agente siguió consultando")
    assert Command.SALE not in flaky.sim.command_codes() and flaky.sim.charged() == {}
    command = await sale_command(flaky, attempt)
    assert command.status == "revoked" and command.claimed_at is None and command.result is None
    (sale,) = await flaky.rows(Sale, Sale.id == sale_id)
    assert sale.status == "pending_payment"  # the cashier charges another way: one charge at most


@pytest.mark.parametrize("flaky", [0.3], indirect=True)  # the sale takes ~1.5 s on the terminal
async def test_a_sale_the_agent_had_started_stays_in_doubt_and_its_late_result_is_applied(flaky):
    network = flaky.network
    await flaky.start_agent()  # and wait for its first heartbeat
    network.cut_after_claim = True  # the line drops right after the agent starts the sale
    sale_id = await flaky.sale(7300)
    await flaky.pay(sale_id)

    async def charged():
        return flaky.sim.charged()

    ledger = await until(charged, 20, "el terminal cobró")
    assert network.cut
    (attempt,) = await flaky.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert ledger == {attempt.ticket: 7300}
    # The server stops waiting; it cannot ask the terminal (the register PC is unreachable) and it knows the
    # agent started the sale: in doubt, never "not charged", never paid by guess.
    progress = await flaky.until(sale_id, lambda p: p.state in ("in_doubt", "reconciling"), 30)
    assert not progress.paid
    for _ in range(20):
        progress = await flaky.orchestrator.poll(flaky.venue.venue_id, sale_id)
        assert progress.state in ("in_doubt", "reconciling") and not progress.backup_offered, progress
        await asyncio.sleep(0.1)
    assert (await sale_command(flaky, attempt)).status == "expired"  # nobody waits for its result any more

    network.cut = False  # the network is back: the agent delivers the approval it kept on disk
    done = await flaky.until(sale_id, lambda p: p.paid, 60)
    assert done.paid
    attempts = await flaky.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert [a.state for a in attempts] == ["approved"] and attempts[0].authorization_code
    command = await sale_command(flaky, attempts[0])
    assert command.result["ResponseCode"] == 0 and command.applied_at is not None
    assert flaky.sim.charged() == {attempts[0].ticket: 7300}
    assert flaky.sim.command_codes().count(Command.SALE) == 1
