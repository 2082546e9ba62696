"""Tips on a GETNET terminal: the amount charged includes the tip; a terminal with tips enabled is told which
part of it is the tip (its Tip field), reports it in the sale's answer and in its totals; one without tips
enabled is sent no Tip field at all."""

from __future__ import annotations

import msgspec

from caja_core.providers import OutcomeKind
from caja_getnet.protocol import sale_command


def test_the_sale_command_carries_a_tip_only_when_there_is_one():
    assert "Tip" not in sale_command(amount=5000, ticket="T1")
    assert "Tip" not in sale_command(amount=5000, ticket="T1", tip=0)
    command = sale_command(amount=5500, ticket="T1", tip=500)
    assert (command["Amount"], command["Tip"]) == (5500, 500)


async def test_a_terminal_with_tips_enabled_is_told_the_tip(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    settings = msgspec.structs.replace(tcp_settings, tips=True, send_messages=True)
    request = make_request(amount=6600, tip=600)
    outcome = await provider.charge(request, settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 6600
    assert (sim.ledger[-1].amount, sim.ledger[-1].tip) == (6600, 600)
    assert 83 in progress.codes  # "Entrada de Propina" on the terminal's screen
    totals = sim.totals()
    assert (totals["TxTotal"], totals["CountTips"], totals["TotalTips"]) == (6600, 1, 600)


async def test_a_terminal_without_tips_charges_the_sum_and_hears_no_tip(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    request = make_request(amount=6600, tip=600)
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 6600
    assert (sim.ledger[-1].amount, sim.ledger[-1].tip) == (6600, 0)
    assert sim.totals()["CountTips"] == 0
