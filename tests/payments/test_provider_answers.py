"""What the core does with provider answers that break the contract, and with plugins listening to payments."""

from __future__ import annotations

import asyncio
import threading

import msgspec
import pytest
from sqlalchemy import select

from caja_core import hookimpl, plugins
from caja_core.audit.models import AuditEvent
from caja_core.errors import ValidationFailed
from caja_core.ops import metrics
from caja_core.payments.models import PaymentAttempt
from caja_core.providers import CardData, Outcome, OutcomeKind
from caja_core.testing.fake import ScriptableProvider, Step
from caja_core.testing.waiting import wait_until

from .conftest import build_env


class ApprovesWithoutAmount(ScriptableProvider):
    """A terminal that charges, then answers "approved" with a broken amount."""

    def __init__(self, amount: object) -> None:
        super().__init__("fake")
        self.bad_amount = amount

    async def charge(self, request, settings, ctx, progress):
        outcome = await super().charge(request, settings, ctx, progress)
        if outcome.kind is OutcomeKind.APPROVED:
            outcome = msgspec.structs.replace(outcome, amount=self.bad_amount)
        return outcome


PAN = "4111111111111111"


class ApprovesVerbosely(ScriptableProvider):
    """A terminal that charges, then answers with a response code longer than any terminal's and a card number
    in every field of the answer but the message (which is masked on construction)."""

    async def charge(self, request, settings, ctx, progress):
        outcome = await super().charge(request, settings, ctx, progress)
        if outcome.kind is OutcomeKind.APPROVED:
            card = CardData(
                brand=PAN, card_type=PAN, last4=PAN, authorization_code=PAN, operation_id=f"op-{PAN}", terminal_id=PAN
            )
            outcome = msgspec.structs.replace(
                outcome, code=f"APROBADA_CON_FIRMA_{PAN}", reference=f"orden-{PAN}", card=card
            )
        return outcome


async def test_an_approval_with_a_long_code_and_card_numbers_in_its_fields_pays_the_sale_and_stores_them_masked(
    any_db,
):
    env = await build_env(any_db, primary=ApprovesVerbosely("fake"))
    try:
        orch = await env.orchestrator()
        sale_id = await env.sale(12500)
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        done = await env.settle(orch, sale_id)
        assert done.paid and done.state == "approved", (done.state, done.message)
        assert list(env.provider.ledger.values()) == [12500]  # charged once
        (attempt,) = await env.attempts(sale_id)
        stored = {column.key: getattr(attempt, column.key) for column in PaymentAttempt.__table__.columns}
        assert PAN not in repr(stored), stored
        assert attempt.last4 == "1111" and attempt.response_code and attempt.response_code.startswith("APROBADA")
        assert "approved" in env.events.kinds() and PAN not in repr(env.events.seen)
    finally:
        for orch in env.orchestrators:
            await orch.stop()


class AnswersGarbage(ScriptableProvider):
    """A terminal that charges, then answers ``charge`` and ``status`` with something that is no ``Outcome``."""

    def __init__(self, garbage: object) -> None:
        super().__init__("fake")
        self.garbage = garbage
        self.status_fixed = False

    async def charge(self, request, settings, ctx, progress):
        await super().charge(request, settings, ctx, progress)
        return self.garbage

    async def status(self, request, settings, ctx):
        outcome = await super().status(request, settings, ctx)
        return outcome if self.status_fixed else self.garbage


GARBAGE = [None, {"kind": "approved", "amount": 12500}, Outcome(kind="aprobado", amount=12500)]


@pytest.mark.parametrize("garbage", GARBAGE, ids=["none", "dict", "unknown-kind"])
async def test_an_answer_that_is_no_outcome_is_one_line_never_pays_and_is_asked_again_with_back_off(
    sqlite_db, garbage, caplog
):
    env = await build_env(sqlite_db, primary=AnswersGarbage(garbage))
    try:
        orch = await env.orchestrator(reconcile_backoff_s=(1.0, 4.0))
        sale_id = await env.sale(12500)
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await wait_until(lambda: env.provider.count("status") >= 2, timeout_s=10, what="the terminal asked again")
        p = await orch.poll(env.venue_id, sale_id)
        assert not p.paid and not p.backup_offered and p.state in ("in_doubt", "reconciling"), p.state
        assert (await env.sale_row(sale_id)).status == "pending_payment"
        asked = env.provider.count("status")
        await asyncio.sleep(1.0)  # the next questions wait their back-off, as for any unanswered question
        assert env.provider.count("status") - asked <= 3, env.provider.count("status") - asked
        lines = [r for r in caplog.records if "instead of an Outcome" in r.getMessage()]
        assert lines and all(r.exc_info is None for r in lines), [r.getMessage() for r in caplog.records]
        assert "provider fake: charge returned" in lines[0].getMessage()
        assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
        env.provider.status_fixed = True  # the terminal answers properly: its ledger has the charge
        done = await env.until(orch, sale_id, lambda p: p.paid, timeout=10)
        assert done.state == "approved" and list(env.provider.ledger.values()) == [12500]
    finally:
        for orch in env.orchestrators:
            await orch.stop()


class BadDeviceKey(ScriptableProvider):
    """A provider whose ``device_key`` is broken: it raises, or answers something that is no key."""

    def __init__(self, key: object) -> None:
        super().__init__("fake")
        self.key = key

    def device_key(self, settings, register_code):
        if isinstance(self.key, Exception):
            raise self.key
        return self.key


@pytest.mark.parametrize(
    "key", [OSError("no resolví el host"), None, 12345, "", "k" * 500], ids=["raises", "none", "int", "empty", "long"]
)
async def test_a_broken_device_key_is_a_spanish_refusal_and_nothing_is_sent(any_db, key, caplog):
    env = await build_env(any_db, primary=BadDeviceKey(key))
    try:
        orch = await env.orchestrator()
        sale_id = await env.sale(12500)
        with pytest.raises(ValidationFailed) as err:
            await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        assert "no pudo identificar su terminal" in err.value.message and "no se envió nada" in err.value.message
        assert env.provider.count("charge") == 0 and await env.attempts(sale_id) == []
        assert (await env.sale_row(sale_id)).status == "pending_payment"
        assert any("provider fake: device_key" in r.getMessage() for r in caplog.records)
    finally:
        for orch in env.orchestrators:
            await orch.stop()


@pytest.mark.parametrize("amount", [None, 0, -12500, "12500", 12500.0, True], ids=repr)
async def test_an_approval_without_a_valid_amount_is_never_paid_and_goes_to_reconciliation(sqlite_db, amount):
    env = await build_env(sqlite_db, primary=ApprovesWithoutAmount(amount))
    try:
        env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta"))
        orch = await env.orchestrator()
        sale_id = await env.sale(12500)
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await wait_until(lambda: env.provider.count("status") >= 1, timeout_s=5, what="the terminal is asked again")
        p = await orch.poll(env.venue_id, sale_id)
        assert not p.paid and p.in_doubt, (p.state, p.message)
        (attempt,) = await env.attempts(sale_id)
        assert attempt.state in ("in_doubt", "reconciling") and "sin un monto válido" in attempt.response_message
        assert (await env.sale_row(sale_id)).status == "pending_payment"
        assert "approved" not in env.events.kinds() and "in_doubt" in env.events.kinds()
        # The terminal answers the question properly (its ledger has the charge): reconciliation pays the sale.
        env.provider.set_default("status", None)
        done = await env.until(orch, sale_id, lambda p: p.paid)
        assert done.state == "approved" and "reconciled" in env.events.kinds()
    finally:
        for orch in env.orchestrators:
            await orch.stop()


async def test_a_blocking_payment_listener_never_stalls_a_payment(env, monkeypatch):
    """A plugin listener that blocks its thread (like ``time.sleep``) and one that never returns
    (``async``): the payment is approved as usual, each is logged and counted, caja's own listeners still run."""
    monkeypatch.setattr(plugins, "LISTENER_TIMEOUT_S", 0.3)
    release = threading.Event()
    asleep: list[str] = []

    class Sleepy:
        @hookimpl
        def on_payment_event(self, event):
            asleep.append(event.kind)
            release.wait(60)  # blocks the thread it runs in, as time.sleep(60) would

    class Stuck:
        @hookimpl
        async def on_payment_event(self, event):
            await asyncio.Event().wait()  # never returns

    env.pm.register(Sleepy(), name="lento")
    env.pm.register(Stuck(), name="colgado")
    slow, stuck = (metrics.PLUGIN_LISTENER_SLOW.labels(plugin=name) for name in ("lento", "colgado"))
    before = slow._value.get(), stuck._value.get()
    try:
        orch = await env.orchestrator()
        sale_id = await env.sale(12500)
        env.provider.script("charge", Step(delay_s=0.05, progress=["Inserte o acerque tarjeta"]))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        done = await env.settle(orch, sale_id)
        assert done.paid and done.state == "approved"
        assert {"attempt_started", "approved"} <= set(env.events.kinds())
        await wait_until(
            lambda: slow._value.get() > before[0] and stuck._value.get() > before[1],
            timeout_s=5,
            what="both listeners counted as slow",
        )
        assert asleep == ["attempt_started"]  # its own thread: the later events wait for it, not the payment
        # The next sale is not held either, and caja's audit listener wrote every event.
        second = await env.sale(3000)
        await orch.start_payment(env.venue_id, second, env.setup.cashier_id)
        assert (await env.settle(orch, second)).paid

        async def audited() -> bool:
            async with env.db.reader() as s:
                actions = list((await s.execute(select(AuditEvent.action))).scalars())
            return actions.count("payment.approved") == 2

        await wait_until(audited, timeout_s=5, what="the audit of both approvals")
    finally:
        release.set()
    await wait_until(lambda: "approved" in asleep, timeout_s=5, what="the sleepy listener catches up, in order")
