"""No card number or track data in the logs of a full run (docs/reliability.md rule 10, case 30)."""

from __future__ import annotations

import logging

from caja_core.providers import OutcomeKind
from caja_getnet.simulator import TEST_ACCOUNT_NUMBER, Fault


async def test_no_card_number_in_logs_or_outcomes(caplog, make_request, sim, provider, tcp_settings, ctx, progress):
    caplog.set_level(logging.DEBUG)
    outcomes = []
    for fault in (None, "wrong_sign", "duplicate_response", "earlier_ticket", "decline", "noise_before"):
        if fault:
            sim.add_fault(Fault(kind=fault))
        request = make_request()
        outcomes.append(await provider.charge(request, tcp_settings, ctx, progress))
        outcomes.append(await provider.status(request, tcp_settings, ctx))
    approved = [o for o in outcomes if o.kind is OutcomeKind.APPROVED]
    assert approved and all(o.card.last4 == TEST_ACCOUNT_NUMBER[-4:] for o in approved)
    assert "getnet" in caplog.text  # the run was logged …
    assert TEST_ACCOUNT_NUMBER not in caplog.text  # … without the card number the terminal sent
    assert TEST_ACCOUNT_NUMBER[:6] not in caplog.text  # nor its BIN
    assert all(TEST_ACCOUNT_NUMBER not in repr(o) for o in outcomes)
