"""Who answers behind a register agent (docs/reliability.md, cases 31 and 40) through the real stack: the app under
uvicorn, ``caja agent`` as a real process with the register's token, the GETNET simulator on a pseudo-terminal.

The terminal is asked who it is (ParameterReport, a fenced command like any other) before the first charge caja
sends to it; a spare plugged into the register PC later is not that terminal, so its "never seen that ticket" is
no proof that a sale in doubt was not charged."""

from __future__ import annotations

import signal

import pytest

from caja_core.errors import Conflict
from caja_core.payments.models import AgentCommand, PaymentAttempt, TerminalClose
from caja_core.registers.models import CashRegister
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
async def charged_with_nobody_listening(stack) -> int:  # noqa: F811 - the fixture, passed in
    """A card sale of $6.000 the terminal charges after the register PC (its agent) died mid-sale: the payment
    is in doubt, recorded against the terminal it went to. Returns the sale's id."""
    agent = await stack.start_agent()
    sale_id = await stack.sale(6000)
    await stack.pay(sale_id)
    await stack.until(sale_id, lambda p: p.state == "awaiting", 20)
    agent.send_signal(signal.SIGKILL)
    await agent.wait()
    await wait_until(stack.sim.tickets, timeout_s=15, what="the terminal finishing the sale with nobody listening")
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
    assert attempt.device_identity == f"getnet:{stack.sim.serial_number}"
    return sale_id


async def test_a_spare_swapped_in_behind_the_agent_never_proves_a_sale_in_doubt_not_charged(stack):  # noqa: F811
    """The register PC dies mid-sale (the terminal charges the card with nobody listening); the terminal is
    swapped for a spare on the same USB port and the agent started again. The spare has never seen the ticket,
    but it is not the terminal the sale went to: the payment stays in doubt with that reason, the backup is not
    offered; nothing is charged twice."""
    sale_id = await charged_with_nobody_listening(stack)

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


@pytest.mark.parametrize("stack", [0.5], indirect=True)  # a slow customer: the sale takes ~2.5 s
async def test_a_batch_close_through_an_agent_asks_who_answers_and_is_refused_for_a_terminal_with_a_sale_in_doubt(
    stack,  # noqa: F811
):
    """A sale at CAJA1 is in doubt (its PC died with the terminal charging); the terminal is carried to CAJA2's PC
    and the supervisor presses CAJA2's batch close. The close goes through CAJA2's agent to the very terminal that
    holds the proof of the sale in doubt: it asks the terminal who it is first and refuses, so the charge is
    still in the terminal's list when CAJA1 reconciles."""
    sale_id = await charged_with_nobody_listening(stack)
    (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)

    # The terminal now hangs from CAJA2's PC, whose agent has CAJA2's own token.
    own_token, own_state = stack.token_file, stack.state_dir
    stack.token_file = stack.tmp_path / "agent-token-2"
    stack.token_file.write_text(stack.venue.other_token + "\n")
    stack.token_file.chmod(0o600)
    stack.state_dir = stack.tmp_path / "agent-state-2"
    other_agent = await stack._spawn_agent()

    async def caja2_agent_up():
        (register,) = await stack.rows(CashRegister, CashRegister.id == stack.venue.other_register_id)
        return register.agent_last_seen_at is not None

    await wait_until(caja2_agent_up, timeout_s=60, what="el agente de CAJA2 se conecta")
    with pytest.raises(Conflict) as refused:
        await stack.orchestrator.close_batch(
            stack.venue.venue_id, stack.venue.other_register_id, stack.venue.setup.admin_id
        )
    assert refused.value.code == "terminal.close_refused" and f"#{attempt.id}" in refused.value.message
    assert Command.CLOSE not in stack.sim.command_codes()
    assert Command.PARAMETER_REPORT in stack.sim.command_codes()[stack.sim.command_codes().index(Command.SALE) :]
    assert stack.sim.tickets() == {attempt.ticket: 6000}

    # Back at CAJA1, reconciliation finds the charge (paid once), and then CAJA1's close runs through its agent.
    other_agent.send_signal(signal.SIGTERM)
    await other_agent.wait()
    stack.token_file, stack.state_dir = own_token, own_state
    await stack.start_agent()
    assert (await stack.until(sale_id, lambda p: p.paid, 60)).paid
    closed = await stack.orchestrator.close_batch(
        stack.venue.venue_id, stack.venue.register_id, stack.venue.setup.admin_id
    )
    assert closed.count == 1 and closed.total == 6000 and stack.sim.closes == 1
    (close,) = await stack.rows(TerminalClose)
    assert close.device_identity == attempt.device_identity


@pytest.mark.parametrize("stack", [0.5], indirect=True)  # a slow customer: the sale takes ~2.5 s
async def test_a_spare_behind_a_restarted_agent_is_asked_who_it_is_before_its_first_charge(stack):  # noqa: F811
    """The register's terminal was identified on an earlier sale; then the register PC is restarted with a spare
    on the USB port. The spare's first charge must be stamped with the spare's identity, not the old terminal's:
    otherwise, with that charge in doubt and the old terminal back, the old terminal's "never seen that ticket"
    would be taken as proof that the customer was not charged."""
    agent = await stack.start_agent()
    first = await stack.sale(1500)
    await stack.pay(first)
    assert (await stack.until(first, lambda p: p.paid or p.state in ("declined", "in_doubt"), 25)).paid
    agent.send_signal(signal.SIGTERM)
    await agent.wait()
    await stack.sim.stop()

    spare = Simulator(step_delay_s=0.5, terminal_id="SIM00077", serial_number="SN-REPUESTO")
    stack.pty_path = await spare.start_pty()
    try:
        agent = await stack.start_agent()
        sale_id = await stack.sale(6000)
        await stack.pay(sale_id)
        await stack.until(sale_id, lambda p: p.state == "awaiting", 20)
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        await wait_until(spare.tickets, timeout_s=15, what="the spare finishing the sale with nobody listening")
        (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
        assert attempt.device_identity == "getnet:SN-REPUESTO", attempt.device_identity
    finally:
        await spare.stop()
