"""P4: time to fallback.

* dead primary (the terminal refuses the connection) → backup offered ≤ 1 s after the cashier pressed Pay;
* breaker open → 0 attempts sent to the dead terminal and the backup offered in the first poll;
* silent primary (receipt, then nothing) → CancelSale and reconciliation start at the max wait ± 1 s.

    python bench/p4_fallback.py [--db sqlite|postgres|both] [--sales 20] [--max-wait 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Self

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import TempDatabase, table
else:
    from .common import TempDatabase, table

from caja_core import hookimpl
from caja_core.fallback.policy import FallbackPolicy
from caja_core.payments.service import PaymentOrchestrator
from caja_core.plugins import make_plugin_manager
from caja_core.providers import OutcomeKind, ProviderRegistry
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import ScriptableProvider, Step, manual_provider

POLL_EVERY_S = 0.02


class TimedTerminal(ScriptableProvider):
    """The scriptable terminal, noting when the core asked it to cancel and to report a ticket."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.stamps: dict[str, list[float]] = {"cancel": [], "status": [], "charge": []}

    async def charge(self, request, settings, ctx, progress):
        self.stamps["charge"].append(time.monotonic())
        return await super().charge(request, settings, ctx, progress)

    async def cancel(self, request, settings, ctx):
        self.stamps["cancel"].append(time.monotonic())
        return await super().cancel(request, settings, ctx)

    async def status(self, request, settings, ctx):
        self.stamps["status"].append(time.monotonic())
        return await super().status(request, settings, ctx)


class Providers:
    def __init__(self, *providers) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider):
        for p in self.providers:
            add_provider(p)


class Rig:
    def __init__(self, db, policy: FallbackPolicy) -> None:
        self.db, self.policy = db, policy
        self.terminal = TimedTerminal("terminal")
        self.pm = make_plugin_manager(Providers(self.terminal, manual_provider("celular")), load_entrypoints=False)
        self.registry = ProviderRegistry.from_plugin_manager(self.pm)

    async def __aenter__(self) -> Self:
        self.setup = await make_setup(
            self.db,
            self.registry,
            primary="terminal",
            backup="celular",
            policy=self.policy,
            phones=2,
            slug=f"p4{uuid.uuid4().hex[:6]}",
        )
        async with self.db.session() as s:
            self.session_id = (
                await sessions.open_session(
                    s,
                    venue_id=self.setup.venue_id,
                    register_id=self.setup.register_id,
                    user_id=self.setup.cashier_id,
                    initial_cash=0,
                    open_key=uuid.uuid4().hex,
                )
            ).id
        self.orch = PaymentOrchestrator(self.db, self.registry, self.pm, instance_id="bench")
        await self.orch.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.orch.stop()

    async def sale(self) -> int:
        async with self.db.session() as s:
            return (
                await sales.create_sale(
                    s,
                    venue_id=self.setup.venue_id,
                    session_id=self.session_id,
                    cashier_id=self.setup.cashier_id,
                    idempotency_key=uuid.uuid4().hex,
                    items=[sales.ItemInput(name="Consumo", unit_price=12500, quantity=1, free_reason="bench")],
                )
            ).id

    async def pay_until_offered(self, sale_id: int, limit_s: float = 10) -> tuple[float, int, bool]:
        """Seconds from Pay to the first poll offering the backup, polls needed, offered in the first one?"""
        started = time.monotonic()
        progress = await self.orch.start_payment(self.setup.venue_id, sale_id, self.setup.cashier_id)
        polls = 1
        first = progress.backup_offered
        while not progress.backup_offered:
            if time.monotonic() - started > limit_s:
                raise RuntimeError(f"no se ofreció el respaldo en {limit_s} s: {progress.state}")
            await asyncio.sleep(POLL_EVERY_S)
            progress = await self.orch.poll(self.setup.venue_id, sale_id)
            polls += 1
        return time.monotonic() - started, polls, first


async def dead_primary(kind: str, n: int) -> tuple[float, float]:
    policy = FallbackPolicy(breaker_failures=50, backup_phones_required=2)
    async with TempDatabase(kind) as db, Rig(db, policy) as rig:
        rig.terminal.set_default("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Conexión rechazada"))
        times = [(await rig.pay_until_offered(await rig.sale()))[0] for _ in range(n)]
    return statistics.median(times), max(times)


async def breaker_open(kind: str, n: int) -> tuple[int, int, int, float]:
    policy = FallbackPolicy(breaker_failures=3, breaker_cooldown_s=3600, backup_phones_required=2)
    async with TempDatabase(kind) as db, Rig(db, policy) as rig:
        rig.terminal.set_default("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Conexión rechazada"))
        for _ in range(3):
            await rig.pay_until_offered(await rig.sale())
        sent_before = rig.terminal.count("charge")
        first_poll = 0
        times = []
        for _ in range(n):
            elapsed, _, first = await rig.pay_until_offered(await rig.sale())
            first_poll += first
            times.append(elapsed)
        return rig.terminal.count("charge") - sent_before, first_poll, n, max(times)


async def silent_primary(kind: str, max_wait: int) -> tuple[float, float]:
    policy = FallbackPolicy(max_wait_s=max_wait, backup_phones_required=2)
    async with TempDatabase(kind) as db, Rig(db, policy) as rig:
        rig.terminal.set_default("charge", Step(hang=True, progress=["Inserte o acerque tarjeta"]))
        sale_id = await rig.sale()
        started = time.monotonic()
        await rig.pay_until_offered(sale_id, limit_s=max_wait + 15)
        return rig.terminal.stamps["cancel"][0] - started, rig.terminal.stamps["status"][0] - started


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--sales", type=int, default=20)
    parser.add_argument("--max-wait", type=int, default=5, help="política de espera máxima (5–120 s)")
    args = parser.parse_args(argv)
    rows = []
    for kind in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
        median, worst = asyncio.run(dead_primary(kind, args.sales))
        rows.append(
            (
                f"P4 dead primary → backup offered ({kind})",
                f"median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms",
                "goal ≤ 1000 ms",
                f"{worst:.2f}× of goal (max)",
            )
        )
        sent, first, n, worst = asyncio.run(breaker_open(kind, args.sales))
        rows.append(
            (
                f"P4 breaker open ({kind})",
                f"{sent} sent to dead terminal; offered in 1st poll {first}/{n}",
                "goal 0 sent, all in 1st poll",
                f"max {worst * 1000:.0f} ms Pay→offer",
            )
        )
        cancel_at, status_at = asyncio.run(silent_primary(kind, args.max_wait))
        rows.append(
            (
                f"P4 silent primary, max wait {args.max_wait} s ({kind})",
                f"cancel at {cancel_at:.2f} s, reconcile at {status_at:.2f} s",
                f"goal {args.max_wait} ± 1 s",
                f"{cancel_at - args.max_wait:+.2f} s off",
            )
        )
    return rows


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
