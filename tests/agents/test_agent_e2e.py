"""The agent path end to end: the app under uvicorn on a loopback port, ``caja agent`` as a real process with the
register's token, and the GETNET simulator on a pseudo-terminal (the register PC's USB port). A card sale is
started through the payment orchestrator of the running app."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from caja_core.agents import service as agents
from caja_core.payments import devices
from caja_core.payments import states as st
from caja_core.payments.models import AgentCommand, PaymentAttempt
from caja_core.plugins import make_plugin_manager
from caja_core.providers import DeviceIdentity
from caja_core.registers.models import CashRegister
from caja_core.sales import service as sales
from caja_core.sales.models import Sale
from caja_core.sessions import service as sessions
from caja_core.settings import load_settings
from caja_core.testing.waiting import count_calls, wait_until
from caja_getnet.protocol import Command
from caja_getnet.simulator import TEST_ACCOUNT_NUMBER, Simulator
from caja_web.app import create_app

from .conftest import make_agent_venue, serve_app

CAJA = str(Path(sys.executable).with_name("caja"))


class Stack:
    """Server (uvicorn on the app), simulator on a pty, and the agent process."""

    def __init__(self, db, url: str, tmp_path: Path, step_delay_s: float) -> None:
        self.db, self.database_url, self.tmp_path, self.step_delay_s = db, url, tmp_path, step_delay_s
        self.agents: list[asyncio.subprocess.Process] = []

    async def start(self) -> Stack:
        self.sim = Simulator(step_delay_s=self.step_delay_s)
        self.pty_path = await self.sim.start_pty()
        self.venue = await make_agent_venue(self.db)
        settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": self.database_url})
        self.app = create_app(settings, db=self.db, pm=make_plugin_manager())
        self.server, self.server_task, self.url = await serve_app(self.app)
        self.orchestrator = self.app.state.orchestrator
        self.token_file = self.tmp_path / "agent-token"
        self.token_file.write_text(self.venue.token + "\n")
        self.token_file.chmod(0o600)
        self.state_dir = self.tmp_path / "agent-state"
        async with self.db.session() as s:
            session = await sessions.open_session(
                s,
                venue_id=self.venue.venue_id,
                register_id=self.venue.register_id,
                user_id=self.venue.setup.cashier_id,
                initial_cash=0,
                open_key="apertura-agente",
            )
        self.session_id = session.id
        return self

    async def terminal_already_identified(self) -> None:
        """caja asked this terminal who it is on an earlier night: a first charge is not preceded by the
        question (tests about the sale's own command start here)."""
        async with self.db.session() as s:
            await devices.remember_identity(
                s,
                provider_id="getnet",
                device_key="getnet:agent:CAJA1",
                identity=DeviceIdentity(identity=f"getnet:{self.sim.serial_number}"),
                now=datetime.now(UTC),
            )

    async def agent_seen_at(self):
        (register,) = await self.rows(CashRegister, CashRegister.id == self.venue.register_id)
        return register.agent_last_seen_at

    async def start_agent(self, *, wait_up: bool = True) -> asyncio.subprocess.Process:
        """Start ``caja agent``; by default wait until its first heartbeat reaches the server (on a loaded
        machine the process takes seconds to start)."""
        before = await self.agent_seen_at()
        proc = await self._spawn_agent()
        deadline = time.monotonic() + 60
        while wait_up:
            seen = await self.agent_seen_at()
            if seen is not None and (before is None or seen > before):
                break
            assert proc.returncode is None, "el agente terminó al arrancar"
            assert time.monotonic() < deadline, "el agente no se conectó"
            await asyncio.sleep(0.1)
        return proc

    async def _spawn_agent(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            CAJA,
            "agent",
            "--server",
            self.url,
            "--token-file",
            str(self.token_file),
            "--serial",
            self.pty_path,
            "--state-dir",
            str(self.state_dir),
            "--wait",
            "2",
            "--heartbeat",
            "0.3",
            "--poll-every",
            "0.5",
            "--receipt-timeout",
            "1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self.agents.append(proc)
        return proc

    async def stop(self) -> str:
        errors = []
        for proc in self.agents:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            errors.append(err.decode(errors="replace"))
        self.server.should_exit = True
        await asyncio.wait_for(self.server_task, 20)
        await self.sim.stop()
        return "\n".join(errors)

    async def sale(self, amount: int) -> int:
        async with self.db.session() as s:
            out = await sales.create_sale(
                s,
                venue_id=self.venue.venue_id,
                session_id=self.session_id,
                cashier_id=self.venue.setup.cashier_id,
                idempotency_key=uuid.uuid4().hex,
                items=[sales.ItemInput(name="Consumo", unit_price=amount, quantity=1, free_reason="barra")],
            )
        return out.id

    async def pay(self, sale_id: int):
        return await self.orchestrator.start_payment(self.venue.venue_id, sale_id, self.venue.setup.cashier_id)

    async def until(self, sale_id: int, predicate, within: float):
        deadline = time.monotonic() + within
        while True:
            progress = await self.orchestrator.poll(self.venue.venue_id, sale_id)
            if predicate(progress):
                return progress
            assert time.monotonic() < deadline, f"no se llegó al estado esperado: {progress}"
            await asyncio.sleep(0.05)

    async def rows(self, model, *where):
        async with self.db.reader() as s:
            return list((await s.execute(select(model).where(*where).order_by(model.id))).scalars())


@pytest.fixture
async def stack(request, sqlite_db, sqlite_url, tmp_path):
    stack = await Stack(sqlite_db, sqlite_url, tmp_path, getattr(request, "param", 0.05)).start()
    yield stack
    stack.errors = await stack.stop()


async def test_a_card_sale_through_the_agent_is_approved(stack):
    await stack.start_agent()
    sale_id = await stack.sale(4500)
    await stack.pay(sale_id)
    done = await stack.until(sale_id, lambda p: p.paid or p.state in ("declined", "unavailable", "in_doubt"), 20)
    assert done.paid, done
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert attempt.state == "approved" and attempt.amount == 4500
    assert attempt.last4 == TEST_ACCOUNT_NUMBER[-4:] and attempt.device_key == "getnet:agent:CAJA1"
    assert stack.sim.tickets() == {attempt.ticket: 4500}
    (command,) = await stack.rows(AgentCommand, AgentCommand.payload["Command"].as_integer() == Command.SALE)
    assert command.status == "done" and command.attempt_id == attempt.id
    assert command.result["ResponseCode"] == 0 and TEST_ACCOUNT_NUMBER not in str(command.result)
    # The agent's heartbeat reaches the register (what /health and the admin show): after a sale the terminal
    # answered, it says the terminal is reachable (an earlier Poll may have been slow on a loaded machine).
    deadline = time.monotonic() + 20
    while True:
        (register,) = await stack.rows(CashRegister, CashRegister.id == stack.venue.register_id)
        if register.agent_status == {"terminal": "ok", "detail": ""} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert register.agent_status == {"terminal": "ok", "detail": ""} and register.agent_last_seen_at is not None


@pytest.mark.parametrize("stack", [0.5], indirect=True)  # a slow customer: the sale takes ~2.5 s
async def test_agent_killed_mid_sale_and_restarted_pays_once(stack):
    agent = await stack.start_agent()
    sale_id = await stack.sale(6000)
    await stack.pay(sale_id)
    # The terminal confirmed the sale and is asking for the card when the register PC loses power.
    await stack.until(sale_id, lambda p: p.state == "awaiting", 15)
    agent.send_signal(signal.SIGKILL)
    await agent.wait()
    await wait_until(stack.sim.tickets, timeout_s=15, what="the terminal finishing the sale with nobody listening")
    progress = await stack.orchestrator.poll(stack.venue.venue_id, sale_id)
    assert not progress.paid  # nothing is guessed while the agent is away
    await stack.start_agent()
    done = await stack.until(sale_id, lambda p: p.paid, 25)
    assert done.paid
    # Paid once: one approved attempt, the sale paid, one charge in the terminal's ledger.
    attempts = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert [a.state for a in attempts] == ["approved"], [(a.state, a.response_message) for a in attempts]
    (sale,) = await stack.rows(Sale, Sale.id == sale_id)
    assert sale.status == "paid"
    assert stack.sim.tickets() == {attempts[0].ticket: 6000}
    assert stack.sim.command_codes().count(Command.SALE) == 1  # never sent to the terminal twice
    # The sale's command got exactly one result: the restarted agent's "in doubt" (it never guesses), and the
    # server reconciled through the agent (LastVoucher) instead of declining.
    commands = await stack.rows(AgentCommand, AgentCommand.register_id == stack.venue.register_id)
    sale_commands = [c for c in commands if c.payload.get("Command") == Command.SALE]
    assert len(sale_commands) == 1 and sale_commands[0].result["AgentError"] == "in_doubt"
    # (a later LastVoucher of the background reconciliation may still be unanswered when this reads)
    assert any(
        c.payload.get("Command") == Command.LAST_VOUCHER and (c.result or {}).get("Ticket") == attempts[0].ticket
        for c in commands
    )


@pytest.mark.parametrize("stack", [0.6], indirect=True)  # the customer is slow to insert the card
async def test_cashier_cancels_a_sale_waiting_on_the_register_terminal(stack):
    await stack.start_agent()
    sale_id = await stack.sale(3000)
    await stack.pay(sale_id)
    await stack.until(sale_id, lambda p: p.state == "awaiting", 15)
    # CancelSale travels through the agent while the sale is still on the terminal.
    await stack.orchestrator.cancel(stack.venue.venue_id, sale_id, stack.venue.setup.cashier_id)
    # Final (the terminal's answer to the sale, or a reconciliation that finds no charge): never paid.
    done = await stack.until(sale_id, lambda p: p.state in st.FINAL, 25)
    assert not done.paid, done
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert attempt.state in st.NOT_CHARGED and not attempt.active, attempt.state
    assert stack.sim.tickets() == {}  # nothing charged
    assert Command.CANCEL_SALE in stack.sim.command_codes()
    (sale,) = await stack.rows(Sale, Sale.id == sale_id)
    assert sale.status == "pending_payment"  # the cashier may charge again


async def test_register_pc_off_the_sale_is_not_sent_and_never_reaches_the_terminal_later(stack, monkeypatch):
    from caja_core.agents.service import AgentTiming, channel_factory

    stack.orchestrator.agent_channel_factory = channel_factory(stack.db, timing=AgentTiming(pickup_timeout_s=1.0))
    await stack.terminal_already_identified()
    sale_id = await stack.sale(2500)  # no agent running
    await stack.pay(sale_id)
    done = await stack.until(sale_id, lambda p: p.state not in ("created", "sending", "awaiting"), 15)
    assert not done.paid and done.state == "failed_not_sent", done
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert "PC de la caja" in attempt.response_message  # what the cashier reads
    # The PC comes back: the stale command is never handed to the terminal.
    asks = count_calls(
        agents, "next_command", monkeypatch=monkeypatch
    )  # the agent asking the server for its next command
    await stack.start_agent()
    await wait_until(lambda: asks() >= 2, timeout_s=30, what="el agente pidió dos veces su próximo comando")
    assert Command.SALE not in stack.sim.command_codes() and stack.sim.tickets() == {}
    (command,) = await stack.rows(AgentCommand, AgentCommand.register_id == stack.venue.register_id)
    assert command.status == "expired" and command.delivered_at is None
