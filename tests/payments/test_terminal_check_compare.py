"""The nightly check compares the terminal's own list with caja's approved attempts. The terminal's clock reads
whole seconds: a sale in the jornada's first second must still be found, or the check reports a difference
(an incident of the night) for a sale that matches."""

from datetime import UTC, datetime

from caja_core.payments import lifecycle as lc
from caja_core.payments.models import PaymentAttempt
from caja_core.payments.terminal_ops import compare
from caja_core.providers import TerminalReport, TerminalSale

OPENED = datetime(2026, 12, 2, 20, 11, 5, 700_000, tzinfo=UTC)


def approved(ticket: str, amount: int) -> PaymentAttempt:
    return PaymentAttempt(id=1, ticket=ticket, amount=amount, state=lc.APPROVED)


def test_a_sale_in_the_jornadas_first_second_matches_although_the_terminal_reads_it_earlier():
    attempt = approved("TNEVQV1", 6000)
    report = TerminalReport(
        count=1,
        total=6000,
        sales=[TerminalSale(ticket="TNEVQV1", amount=6000, approved=True, occurred_at=OPENED.replace(microsecond=0))],
    )
    diffs, count, total = compare(report, [attempt], since=OPENED, from_close=False)
    assert diffs == [] and (count, total) == (1, 6000)


def test_a_charge_the_terminal_made_before_the_jornada_is_not_a_difference_but_one_after_it_is():
    before = TerminalSale(
        ticket="OLD001", amount=1000, approved=True, occurred_at=datetime(2026, 12, 1, 23, tzinfo=UTC)
    )
    after = TerminalSale(ticket="MANO01", amount=4321, approved=True, occurred_at=datetime(2026, 12, 2, 21, tzinfo=UTC))
    report = TerminalReport(count=2, total=5321, sales=[before, after])
    diffs, _, _ = compare(report, [], since=OPENED, from_close=False)
    assert [(d.kind, d.ticket) for d in diffs] == [("unknown_charge", "MANO01")]
