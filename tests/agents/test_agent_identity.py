"""Who answers behind a register agent (docs/reliability.md, cases 31 and 40) through the real stack: the app under
uvicorn, ``caja agent`` as a real process with the register's token, the GETNET simulator on a pseudo-terminal.

The terminal is asked who it is (ParameterReport, a fenced command like any other) before the first charge caja
sends to it; a spare plugged into the register PC later is not that terminal, so its "never seen that ticket" is
no proof that a sale in doubt was not charged."""

from __future__ import annotations

import signal

import pytest

from caja_core.payments.models import AgentCommand, PaymentAttempt
from caja_core.sales.models import Sale
from caja_core.testing.waiting import wait_until
from caja_getnet.protocol import Command
from caja_getnet.simulator import Simulator

from .test_agent_e2e import Stack, stack  # noqa: F401 - the fixture

DOUBTFUL = ("in_doubt", "reconciling")


async def test_the_terminal_behind_the_agent_is_identified_before_its_first_charge(stack):  # noqa: F811
    await stack.start_agent()
    sale_id = await stack.sale(3200)
    await stack.pay(sale_id)
    done = await stack.until(sale_id, lambda p: p.paid or p.state in ("declined", "unavailable", "in_doubt"), 25)
    assert done.paid, done
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert attempt.device_identity == f"getnet:{stack.sim.serial_number}"
    codes = stack.sim.command_codes()
    assert Command.PARAMETER_REPORT in codes and codes.index(Command.PARAMETER_REPORT) < codes.index(Command.SALE)
    # The question went through the agent as a fenced command (claimed, then answered).
    asked = await stack.rows(AgentCommand, AgentCommand.payload["Command"].as_integer() == Command.PARAMETER_REPORT)
    assert asked and all(c.status == "done" and c.claimed_at is not None for c in asked)
    # The next sale on the same terminal is stamped with the identity already known: not asked again.
    second = await stack.sale(1800)
    await stack.pay(second)
    assert (await stack.until(second, lambda p: p.paid or p.state in ("declined", "in_doubt"), 25)).paid
    (attempt2,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == second)
    assert attempt2.device_identity == attempt.device_identity
    assert stack.sim.command_codes().count(Command.PARAMETER_REPORT) == 1


@pytest.mark.parametrize("stack", [0.5], indirect=True)  # a slow customer: the sale takes ~2.5 s
async def test_a_spare_swapped_in_behind_the_agent_never_proves_a_sale_in_doubt_not_charged(stack):  # noqa: F811
    """The register PC dies mid-sale (the terminal charges the card with nobody listening); the terminal is
    swapped for a spare on the same USB port and the agent started again. The spare has never seen the ticket,
    but it is not the terminal the sale went to: the payment stays in doubt with that reason, the backup is not
    offered; nothing is charged twice."""
    agent = await stack.start_agent()
    sale_id = await stack.sale(6000)
    await stack.pay(sale_id)
    await stack.until(sale_id, lambda p: p.state == "awaiting", 20)
    agent.send_signal(signal.SIGKILL)
    await agent.wait()
    await wait_until(stack.sim.tickets, timeout_s=15, what="the terminal finishing the sale with nobody listening")
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert attempt.device_identity == f"getnet:{stack.sim.serial_number}"

    spare = Simulator(step_delay_s=0.05, terminal_id="SIM00077", serial_number="SN-REPUESTO")
    stack.pty_path = await spare.start_pty()
    try:
        await stack.start_agent()

        def spare_asked() -> int:
            return len([c for c in spare.command_codes() if c == Command.PARAMETER_REPORT])

        # Reconciliation reaches the spare through the agent and asks who it is; the spare is not the terminal
        # the sale went to, so the payment waits for a supervisor instead of becoming "not charged".
        await wait_until(spare_asked, timeout_s=60, what="la conciliación pregunta al repuesto quién es")

        async def decided():
            (a,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
            return a.needs_decision or a.state not in DOUBTFUL

        await wait_until(decided, timeout_s=60, what="el cobro espera a un supervisor")
        progress = await stack.orchestrator.poll(stack.venue.venue_id, sale_id)
        assert not progress.paid and progress.state in DOUBTFUL and not progress.backup_offered, progress
        (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
        assert attempt.state in DOUBTFUL and attempt.needs_decision, attempt.state
        assert "otro terminal" in attempt.response_message and "SN-REPUESTO" in attempt.response_message
        assert "otro terminal" in progress.doubt_message or "otro terminal" in progress.message, progress
        (sale,) = await stack.rows(Sale, Sale.id == sale_id)
        assert sale.status == "pending_payment"
        assert stack.sim.tickets() == {attempt.ticket: 6000} and spare.charged() == {}
    finally:
        await spare.stop()
