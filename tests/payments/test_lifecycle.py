"""The payment attempt lifecycle as pure rules: no database, no clock, no sleep."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from caja_core.payments import lifecycle as lc
from caja_core.payments.lifecycle import Answer, AttemptView, Effect, Event, State
from caja_core.providers import Outcome, OutcomeKind

SENT = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def view(state: State | str = State.AWAITING, **kw) -> AttemptView:
    return AttemptView(
        state=state, ticket=kw.pop("ticket", "QXATBK7"), amount=kw.pop("amount", 12500), sent_at=SENT, **kw
    )


def approved(**kw) -> Outcome:
    return Outcome(kind=OutcomeKind.APPROVED, ticket=kw.pop("ticket", "QXATBK7"), amount=kw.pop("amount", 12500), **kw)


class Row:
    """Anything with the attempt's columns the rules write."""

    def __init__(self, state: str, classification: str | None = None, active: bool = True) -> None:
        self.state, self.classification, self.active, self.finished_at = state, classification, active, None


# --- the table ------------------------------------------------------------------------------------------


def test_every_state_has_a_row_in_the_table_and_a_label():
    assert set(lc.TRANSITIONS) == set(State)
    assert set(lc.LABELS) == set(State)


def test_final_states_only_move_on_a_late_approval_a_refund_or_a_verification():
    for state in lc.FINAL:
        for event in lc.TRANSITIONS[State(state)]:
            assert event in (
                Event.CHARGED,
                Event.CHARGED_TWICE,
                Event.REFUND_DONE,
                Event.VERIFY,
                Event.DISPUTE,
                Event.MANUAL_CONFIRM,
            )


def test_nothing_leaves_a_charged_state_except_by_returning_the_money():
    for state in lc.CHARGED:
        targets = set(lc.TRANSITIONS[State(state)].values())
        assert targets <= {State.REFUNDED, State.VERIFIED, State.DISPUTED}, (state, targets)


def test_the_backup_is_only_offered_from_provably_not_charged_answers():
    for state in State:
        for event in Event:
            d = lc.decide(view(state), event)
            if Effect.OFFER_BACKUP in d.effects:
                assert d.state in lc.NOT_CHARGED, (state, event, d.state)


def test_a_sale_is_paid_only_by_a_matching_charge_of_a_waiting_sale():
    for state in State:
        for event in Event:
            d = lc.decide(view(state), event)
            if Effect.PAY_SALE in d.effects:
                assert event in (Event.CHARGED, Event.MANUAL_CONFIRM) and d.state in lc.PAID, (state, event)


# --- answers ----------------------------------------------------------------------------------------------


def test_a_matching_approval_pays_a_waiting_sale():
    d = lc.on_answer(view(), Answer(outcome=approved(), source="charge"))
    assert d.state == State.APPROVED and Effect.PAY_SALE in d.effects and d.active is False and d.finished
    assert d.classification == "approved" and d.notify == "approved"


def test_a_reconciled_approval_is_classified_reconciled():
    d = lc.on_answer(view(State.RECONCILING), Answer(outcome=approved(), source="status"))
    assert d.state == State.APPROVED and d.classification == "reconciled" and d.notify == "reconciled"


@pytest.mark.parametrize(
    ("outcome", "mismatch"),
    [
        (approved(amount=13500), "amount"),
        (approved(ticket="QXATBK6"), "ticket"),
        (approved(occurred_at=SENT - timedelta(hours=3)), "time"),
    ],
)
def test_an_approval_that_does_not_match_leaves_the_attempt_in_doubt(outcome, mismatch):
    c = lc.classify(view(State.RECONCILING), Answer(outcome=outcome, source="status", tolerance_s=300))
    assert c.event is Event.NO_ANSWER and c.mismatch == mismatch
    d = lc.on_answer(view(State.RECONCILING), Answer(outcome=outcome, source="status", tolerance_s=300))
    assert d.state == State.IN_DOUBT and Effect.PAY_SALE not in d.effects
    if mismatch == "amount":
        assert Effect.INCIDENT_AMOUNT_MISMATCH in d.effects
    if mismatch == "time":  # the supervisor who decides is told both explanations, not "not this payment"
        assert "reloj o la zona horaria del terminal" in c.reason and "restaurar" in c.reason


def test_the_device_time_tolerance_covers_its_measured_skew():
    late_clock = approved(occurred_at=SENT - timedelta(minutes=12))
    assert lc.classify(view(State.RECONCILING), Answer(outcome=late_clock, source="status", tolerance_s=300)).mismatch
    tolerance = lc.match_tolerance_s(measured_skew_s=-15 * 60)
    assert (
        lc.classify(view(State.RECONCILING), Answer(outcome=late_clock, source="status", tolerance_s=tolerance)).event
        is Event.CHARGED
    )


def test_the_time_check_is_for_answers_to_later_questions_only():
    old_clock = approved(occurred_at=SENT - timedelta(days=2))
    assert lc.classify(view(), Answer(outcome=old_clock, source="charge")).event is Event.CHARGED
    assert lc.classify(view(State.RECONCILING), Answer(outcome=old_clock, source="status")).event is Event.NO_ANSWER


def test_not_found_is_proof_only_when_nothing_says_otherwise():
    not_found = Outcome(kind=OutcomeKind.UNAVAILABLE, ticket="QXATBK7")
    d = lc.on_answer(view(State.RECONCILING), Answer(outcome=not_found, source="status"))
    assert d.state == State.FAILED_NOT_SENT and Effect.OFFER_BACKUP in d.effects
    blocked = Answer(outcome=not_found, source="status", not_proof="cierre de lote después del envío")
    d = lc.on_answer(view(State.RECONCILING), blocked)
    assert d.state == State.IN_DOUBT and Effect.OFFER_BACKUP not in d.effects and "cierre" in d.reason


def test_a_late_approval_pays_a_sale_still_waiting():
    for state in lc.NOT_CHARGED:
        d = lc.on_answer(view(state, sale_pending=True), Answer(outcome=approved(), source="agent"))
        assert d.state == State.APPROVED and Effect.PAY_SALE in d.effects and Effect.INCIDENT_LATE_APPROVAL in d.effects
        assert d.classification == "late_approval"


def test_a_late_approval_of_a_sale_paid_otherwise_is_a_duplicate_to_return():
    for state in (*lc.NOT_CHARGED, State.IN_DOUBT, State.RECONCILING, State.AWAITING):
        d = lc.on_answer(view(state, sale_pending=False), Answer(outcome=approved(), source="status"))
        assert d.state == State.REFUND_DUE and Effect.RETURN_DUPLICATE in d.effects
        assert Effect.PAY_SALE not in d.effects and Effect.INCIDENT_DOUBLE_CHARGE in d.effects
    assert State.REFUND_DUE in lc.UNRESOLVED and State.REFUND_DUE not in lc.PAID


def test_an_override_keeps_the_primary_reconciled_and_its_approval_flagged():
    d = lc.on_answer(
        view(State.IN_DOUBT, overridden=True, classification="overridden", sale_pending=True),
        Answer(outcome=approved(), source="status"),
    )
    assert d.state == State.APPROVED and Effect.INCIDENT_OVERRIDE_APPROVED in d.effects
    row = Row(State.IN_DOUBT, classification="overridden", active=False)
    lc.apply(row, d, SENT)
    assert row.classification == "overridden" and row.state == "approved"


def test_a_repeated_answer_changes_nothing():
    for state in lc.SETTLED:
        for pending in (True, False):
            d = lc.on_answer(view(state, sale_pending=pending), Answer(outcome=approved(), source="charge"))
            assert not d.changed, state


def test_a_writer_that_lost_the_lease_may_only_deliver_proofs():
    fenced = view(State.RECONCILING, fenced_out=True)
    assert not lc.on_answer(fenced, Answer(outcome=Outcome(kind=OutcomeKind.UNAVAILABLE), source="charge")).changed
    assert not lc.on_answer(fenced, Answer(outcome=Outcome(kind=OutcomeKind.UNKNOWN), source="charge")).changed
    assert lc.on_answer(fenced, Answer(outcome=approved(), source="charge")).state == State.APPROVED


def test_a_superseded_manual_attempt_confirmed_later_is_a_duplicate():
    d = lc.decide(view(State.CANCELLED, sale_pending=False), Event.MANUAL_CONFIRM)
    assert d.state == State.REFUND_DUE and Effect.RETURN_DUPLICATE in d.effects


def test_a_cancelled_manual_attempt_confirmed_while_its_sale_waits_pays_it():
    d = lc.decide(view(State.CANCELLED), Event.MANUAL_CONFIRM)
    assert (
        d.state == State.APPROVED_MANUAL and Effect.PAY_SALE in d.effects and Effect.RETURN_DUPLICATE not in d.effects
    )


def test_apply_writes_the_state_and_ends_the_attempt():
    row = Row(State.RECONCILING, classification="in_doubt")
    changed = lc.apply(row, lc.on_answer(view(State.RECONCILING), Answer(outcome=approved(), source="status")), SENT)
    assert changed and row.state == "approved" and row.active is False and row.finished_at == SENT


# --- properties -------------------------------------------------------------------------------------------

outcomes = hs.builds(
    Outcome,
    kind=hs.sampled_from(list(OutcomeKind)),
    ticket=hs.sampled_from([None, "QXATBK7", "QXATBK6"]),
    amount=hs.sampled_from([None, 12500, 13500]),
    occurred_at=hs.sampled_from([None, SENT, SENT - timedelta(days=1)]),
)
answers = hs.builds(
    Answer,
    outcome=outcomes,
    source=hs.sampled_from(["charge", "status", "agent", "webhook", "resolution"]),
    not_proof=hs.sampled_from([None, "cierre de lote"]),
    tolerance_s=hs.just(300.0),
)


@settings(max_examples=400, deadline=None)
@given(
    start=hs.sampled_from([State.CREATED, State.SENDING, State.AWAITING, State.IN_DOUBT, State.RECONCILING]),
    steps=hs.lists(hs.tuples(answers, hs.booleans()), max_size=8),
)
def test_no_answer_sequence_pays_twice_or_offers_the_backup_after_a_charge(start, steps):
    """Whatever the order and mix of answers: the sale is paid at most once, by a matching approval; the
    backup is never offered once the device charged; a charged attempt never goes back to "not charged"."""
    row = Row(start)
    paid = 0
    charged = False
    for answer, pending in steps:
        d = lc.on_answer(view(row.state, sale_pending=pending and paid == 0), answer)
        if Effect.PAY_SALE in d.effects:
            paid += 1
            assert answer.outcome.kind is OutcomeKind.APPROVED
            assert answer.outcome.amount in (None, 12500) and answer.outcome.ticket in (None, "QXATBK7")
        if Effect.OFFER_BACKUP in d.effects:
            assert not charged
        lc.apply(row, d, SENT)
        if row.state in lc.CHARGED:
            charged = True
        if charged:
            assert row.state in (*lc.CHARGED, State.REFUNDED)
    assert paid <= 1


# --- one place for the rules ------------------------------------------------------------------------------

SOURCES = [
    ROOT / "src",
    ROOT / "web" / "src",
    *(p / "src" for p in (ROOT / "plugins").iterdir() if (p / "src").is_dir()),
]
#: Files that assign a ``.state`` that is not a payment attempt's, and whose state it is.
OTHER_STATES = {
    "src/caja_core/payments/breaker.py": "a device's circuit breaker (BreakerState)",
    "web/src/caja_web/app.py": "the Litestar application state",
}


def _state_assignments(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        flat: list[ast.expr] = []
        for t in targets:
            flat += list(t.elts) if isinstance(t, ast.Tuple) else [t]
        # ``self.state`` is an object's own attribute, never an attempt's.
        lines += [
            t.lineno
            for t in flat
            if isinstance(t, ast.Attribute)
            and t.attr == "state"
            and not (isinstance(t.value, ast.Name) and t.value.id == "self")
        ]
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "PaymentAttempt" and any(k.arg == "state" for k in node.keywords):
                lines.append(node.lineno)
            if (
                name in ("values", "update")
                and any(k.arg == "state" for k in node.keywords)
                and "PaymentAttempt" in ast.unparse(node.func)
            ):
                lines.append(node.lineno)
    return lines


def test_no_code_outside_the_lifecycle_assigns_an_attempt_state():
    found = []
    for base in SOURCES:
        for path in base.rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "src/caja_core/payments/lifecycle.py" or rel in OTHER_STATES:
                continue
            for line in _state_assignments(ast.parse(path.read_text(), filename=rel)):
                found.append(f"{rel}:{line}")
    assert not found, "state assigned outside payments/lifecycle.py: " + ", ".join(found)


def test_the_files_allowed_a_state_of_their_own_never_touch_attempts():
    for rel in OTHER_STATES:
        assert "PaymentAttempt" not in (ROOT / rel).read_text(), rel


def test_the_scan_finds_a_state_assignment():
    sample = "a.state = 'approved'\nb.state, b.active = 'x', False\nPaymentAttempt(state='created')\nself.state = 1\n"
    assert _state_assignments(ast.parse(sample)) == [1, 2, 3]
