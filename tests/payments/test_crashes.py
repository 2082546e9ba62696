"""docs/reliability.md, the crash cases: the app is a real process killed with SIGKILL at the named point and restarted
(cases 19, 20, 22, and a duplicate's refund). The terminal's truth is a file-backed ledger that survives the kill."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from caja_core.errors import Conflict
from caja_core.payments.models import PaymentAttempt
from caja_core.payments.service import supervisor_items
from caja_core.providers import OutcomeKind
from caja_core.sales.models import Sale
from caja_core.sessions import service as sessions
from caja_core.testing.fake import Ledger, ScriptableProvider, Step

from .conftest import build_env

RUNNER = Path(__file__).with_name("crash_runner.py")


class Crash:
    def __init__(self, env, ledger: Path) -> None:
        self.env, self.ledger = env, ledger

    async def run(
        self,
        mode: str,
        *sales: int,
        charge: list[dict] | None = None,
        refund: list[dict] | None = None,
        kill_before_approved_commit: bool = False,
    ) -> tuple[int, dict]:
        url = (
            self.env.db.url.render_as_string(hide_password=False)
            if hasattr(self.env.db.url, "render_as_string")
            else str(self.env.db.url)
        )
        cmd = [
            sys.executable,
            str(RUNNER),
            "--url",
            url,
            "--ledger",
            str(self.ledger),
            "--venue",
            str(self.env.venue_id),
            "--user",
            str(self.env.setup.cashier_id),
            "--charge",
            json.dumps(charge or []),
            "--refund",
            json.dumps(refund or []),
        ]
        if kill_before_approved_commit:
            cmd.append("--kill-before-approved-commit")
        cmd += [mode, *map(str, sales)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"runner failed ({proc.returncode}): {err.decode()[-2000:]}")
        return proc.returncode, (json.loads(out.decode().strip().splitlines()[-1]) if proc.returncode == 0 else {})

    def ledger_now(self) -> Ledger:
        return Ledger(self.ledger)


@pytest.fixture
async def crash(any_db, tmp_path):
    env = await build_env(any_db)
    return Crash(env, tmp_path / "terminal-ledger.json")


@pytest.mark.parametrize("charged", [True, False], ids=["terminal-charged", "terminal-never-charged"])
async def test_19_kill_after_request_written_before_receipt(crash, charged):
    env = crash.env
    sale_id = await env.sale(15000)
    rc, _ = await crash.run("pay", sale_id, charge=[{"crash_at": "after_send", "charged": charged}])
    assert rc == -signal.SIGKILL
    (attempt,) = await env.attempts(sale_id)
    assert attempt.state == "sending"  # the write-ahead row is what the restart finds
    rc, out = await crash.run("recover", sale_id)
    assert rc == 0
    progress = out[str(sale_id)]
    (attempt,) = await env.attempts(sale_id)
    ledger = crash.ledger_now()
    if charged:
        assert progress["paid"] and attempt.state == "approved" and attempt.classification == "reconciled"
        assert ledger.charges == {attempt.ticket: 15000}
    else:
        assert not progress["paid"] and attempt.state == "failed_not_sent"
        # Paying again sends a new ticket, charged once.
        rc, out = await crash.run("pay", sale_id)
        assert out[str(sale_id)]["paid"]
        first, second = await env.attempts(sale_id)
        assert second.ticket != first.ticket and crash.ledger_now().charges == {second.ticket: 15000}
    assert len(crash.ledger_now().charges) == 1  # never a duplicate charge
    assert (await env.sale_row(sale_id)).status == "paid" or not charged


async def test_20_kill_after_approval_arrives_before_commit(crash):
    env = crash.env
    sale_id = await env.sale(22000)
    rc, _ = await crash.run("pay", sale_id, kill_before_approved_commit=True)
    assert rc == -signal.SIGKILL
    (attempt,) = await env.attempts(sale_id)
    assert attempt.state in ("sending", "awaiting") and (await env.sale_row(sale_id)).status == "pending_payment"
    assert crash.ledger_now().charges == {attempt.ticket: 22000}
    rc, out = await crash.run("recover", sale_id)
    assert rc == 0 and out[str(sale_id)]["paid"]
    rc, out = await crash.run("recover", sale_id)  # a second restart changes nothing
    (attempt,) = await env.attempts(sale_id)
    assert attempt.state == "approved"
    async with env.db.reader() as s:
        sale = (await s.execute(select(Sale).where(Sale.id == sale_id))).scalar_one()
        from caja_core.sessions.models import CashSession

        session = await s.get(CashSession, sale.session_id)
    assert sale.status == "paid" and session.card_sales_total == 22000 and session.primary_count == 1
    assert len(crash.ledger_now().charges) == 1


async def test_22_tickets_never_repeat_across_restarts_and_kills(crash):
    """Every app start draws a new ticket series: a ticket committed before a kill -9, the tickets of earlier
    runs and those of later runs are all different, and each fits GETNET's TicketNumber (letters and digits,
    at most 20 characters)."""
    env = crash.env
    sales = [await env.sale(1000 + n) for n in range(4)]
    rc, out = await crash.run("pay", sales[0])
    assert rc == 0 and out[str(sales[0])]["paid"]
    # Killed before the request reached the terminal: the ticket was committed and is never handed out again.
    rc, _ = await crash.run("pay", sales[1], charge=[{"crash_at": "before_send"}])
    assert rc == -signal.SIGKILL
    rc, out = await crash.run("pay", sales[1])
    assert out[str(sales[1])]["paid"]
    rc, out = await crash.run("pay", sales[2])
    assert out[str(sales[2])]["paid"]
    rc, out = await crash.run("pay", sales[3])
    async with env.db.reader() as s:
        tickets = list((await s.execute(select(PaymentAttempt.ticket).order_by(PaymentAttempt.id))).scalars())
    assert len(set(tickets)) == len(tickets) == 5
    assert all(re.fullmatch(r"[A-HJ-NP-Z]{6}[0-9]{1,14}", t) for t in tickets), tickets
    assert len({t[:6] for t in tickets}) == 5  # one series per process start
    assert len(crash.ledger_now().charges) == 4 and set(crash.ledger_now().charges) <= set(tickets)


@pytest.mark.parametrize("reached", [True, False], ids=["terminal-refunded", "refund-never-reached"])
async def test_a_refund_killed_before_its_answer_is_recorded_is_never_sent_again(any_db, tmp_path, reached):
    """A duplicate charge is returned through the terminal; the server is killed -9 once the refund was sent
    (it reached the terminal, which returned the money — or it never got there) and before caja wrote the answer
    down. Restarted, caja cannot know which: it never sends the refund again (by itself or from the supervisor's
    "Anular en el proveedor"); the supervisor is told to check the terminal and records the return, and the
    register closes. The terminal returned the money at most once."""
    ledger = tmp_path / "terminal-ledger.json"
    env = await build_env(any_db, primary=ScriptableProvider("fake", ledger_path=ledger))
    crash = Crash(env, ledger)
    sale_id = await env.sale(9900)
    # The terminal charged but its answer was lost and it cannot be asked; the supervisor sends the customer to
    # the backup phone, which is paid.
    orch = await env.orchestrator("caja-1")
    try:
        env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
        env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta"))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        p = await env.until(orch, sale_id, lambda p: p.in_doubt and p.can_override)
        p = await orch.override_to_backup(env.venue_id, sale_id, env.setup.supervisor_id, "terminal no responde")
        p = await orch.confirm_manual(
            env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "QW12ER", "9876", "Visa", "debito"
        )
        assert p.paid and p.paid_via == "backup"
    finally:
        await orch.stop()
    primary = (await env.attempts(sale_id))[0]
    assert crash.ledger_now().charges == {primary.ticket: 9900}

    # The server starts again, the terminal answers: the card was charged twice, and the terminal's charge is
    # returned through it — killed -9 right after sending the refund.
    point = "after_send" if reached else "before_send"
    rc, _ = await crash.run("recover", sale_id, refund=[{"crash_at": point}])
    assert rc == -signal.SIGKILL
    primary = (await env.attempts(sale_id))[0]
    assert primary.state == "refund_due"
    returned = {primary.ticket: 9900} if reached else {}
    assert crash.ledger_now().refunded == returned

    # Started again: caja does not send the refund again.
    rc, out = await crash.run("recover", sale_id)
    assert rc == 0 and out[str(sale_id)]["paid"]
    primary = (await env.attempts(sale_id))[0]
    assert primary.state == "refund_due"
    assert crash.ledger_now().refund_requests == ([primary.ticket] if reached else [])

    # The supervisor's list says what to do; "Anular en el proveedor" is refused, nothing is sent.
    env.provider.ledger_store.load()
    orch = await env.orchestrator("caja-1")
    async with env.db.reader() as s:
        (item,) = await supervisor_items(s, env.venue_id)
    assert item.kind == "return" and item.refund_unanswered, item
    assert "no se envía de nuevo" in item.reason and "Revise en el terminal" in item.reason
    with pytest.raises(Conflict) as err:
        await orch.refund_attempt(env.venue_id, primary.id, env.setup.supervisor_id)
    assert err.value.code == "payment.refund_unanswered" and "Revise en el terminal" in err.value.message
    assert crash.ledger_now().refund_requests == ([primary.ticket] if reached else [])
    assert (await env.attempts(sale_id))[0].state == "refund_due"

    # The supervisor checked the terminal (and voided it there when the refund never arrived) and records it.
    p = await orch.refund_attempt(
        env.venue_id, primary.id, env.setup.supervisor_id, by_hand=True, note="Anulada en el terminal, voucher 51"
    )
    assert p.refund_offered == [] and (await env.attempts(sale_id))[0].state == "refunded"
    async with env.db.session() as s:
        await sessions.close_session(
            s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
        )
    await orch.stop()
    assert crash.ledger_now().refund_requests == ([primary.ticket] if reached else [])
