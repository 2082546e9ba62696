"""Proof at scale, short form: cashiers on the real POS pages of two ``caja serve`` instances sharing one
PostgreSQL database and Redis, GETNET terminal simulators that fail, stay silent, answer slowly or decline,
the KLAP manual backup, then every session and the jornada closed, and the invariants checked from the
database and the terminals' own ledgers.

Each cashier sells only in a drawer they hold: relief cashiers take drawers over in the middle of the night
(blind count, the supervisor's PIN), some outgoing cashiers keep cash, and the per-cashier summary must put each
difference on the person who caused it.

The full run is 60 cashiers on 50 registers sharing 25 terminals for 5 minutes (``python -m bench.load``;
docs/reliability.md). Here, to fit the suite's time on a 2-core machine, 20 cashiers on 16 registers sharing 8
terminals sell for 60 s (the 8 terminals already cover every behaviour; 4 drawers change hands)."""

import pytest

from bench.load.run import LoadConfig, run_load

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SHORT = {"cashiers": 20, "registers": 16, "terminals": 8, "duration_s": 60.0}


def assert_night_held(result) -> None:
    failing = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert result.ok, (
        "the night did not hold:\n" + "\n".join(failing + result.stats.problems) + "\n\n" + result.summary()
    )


async def test_busy_night_on_two_instances_keeps_every_invariant():
    result = await run_load(LoadConfig(**SHORT, seed=11))
    assert_night_held(result)
    outcomes = result.outcome_counts()
    # The night really exercised every path a cashier meets.
    assert outcomes["cash"] >= 20 and outcomes["card"] >= 20, result.summary()
    assert outcomes["backup"] >= 3, "no sale went through the KLAP backup:\n" + result.summary()
    assert outcomes["cancelled"] >= 1, result.summary()
    # Tips and whole-sale discounts, so the dashboard's check covers them.
    assert sum(1 for s in result.stats.sales if s.tip) >= 5, result.summary()
    assert sum(1 for s in result.stats.sales if s.discounted) >= 3, result.summary()
    assert result.reconciled >= 1, "no attempt needed reconciliation with the terminal:\n" + result.summary()
    assert len(result.stats.movements) >= 1 and len(result.stats.closes) == 16, result.summary()
    assert len(result.stats.handovers) == 4, "not every relief took their drawer over:\n" + result.summary()
    assert any(h.pocketed for h in result.stats.handovers), result.summary()
    assert any(amount > 20000 for _, _, amount, _ in result.stats.movements), (
        "no authorized cash-out:\n" + result.summary()
    )
    assert result.jornada_closed


async def test_kill_9_of_an_instance_during_the_night_keeps_every_invariant():
    result = await run_load(LoadConfig(**SHORT, seed=23, kill=True, kill_every_s=(5.0, 12.0)))
    assert_night_held(result)
    assert result.kills >= 2, result.summary()
    assert result.stats.lost >= 1, "no request ever met a killed instance:\n" + result.summary()
    assert result.outcome_counts()["card"] >= 10, result.summary()
    assert len(result.stats.handovers) == 4, "not every relief took their drawer over:\n" + result.summary()
    assert result.jornada_closed
