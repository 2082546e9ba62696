"""One load run: build the stack, let the cashiers work for the duration (each in a drawer they hold; relief
cashiers take drawers over mid-night; killing and restarting an instance at random moments when asked), close
every session and the jornada, check the invariants, report."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import text

from .cashier import Cashier, RegisterBook, Stats, close_jornada
from .invariants import Check, check_all
from .stack import (
    REDIS_URL,
    Instance,
    ScratchDatabase,
    Terminals,
    apply_profiles,
    free_port,
    instance_env,
    run_dir,
    seed,
)


@dataclass
class LoadConfig:
    #: People: the first ``registers`` open a register each, the others relieve them during the night.
    cashiers: int = 60
    registers: int = 50
    #: Card terminals: a counter's registers share one (``registers`` / ``terminals`` per terminal).
    terminals: int = 25
    duration_s: float = 300.0
    instances: int = 2
    kill: bool = False
    kill_every_s: tuple[float, float] = (6.0, 15.0)
    seed: int = 7
    step_delay_s: float = 0.15
    redis_url: str = REDIS_URL
    keep_db: bool = False


@dataclass
class LoadResult:
    config: LoadConfig
    checks: list[Check]
    stats: Stats
    elapsed_s: float
    selling_s: float
    profiles: dict[str, int]
    attempts: dict[str, int] = field(default_factory=dict)
    reconciled: int = 0
    kills: int = 0
    restart_s: list[float] = field(default_factory=list)
    run_dir: str = ""
    jornada_closed: bool = False

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not self.stats.problems and self.jornada_closed

    def outcome_counts(self) -> Counter:
        return Counter(s.outcome for s in self.stats.sales)

    def latency(self, kinds: tuple[str, ...]) -> tuple[float, float, float]:
        values = sorted(v for k in kinds for v in self.stats.latencies.get(k, []))
        if not values:
            return (0.0, 0.0, 0.0)

        def q(p: float) -> float:
            return values[min(len(values) - 1, int(p * len(values)))] * 1000

        return (q(0.5), q(0.95), q(0.99))

    def summary(self) -> str:
        c, st = self.config, self.stats
        out = self.outcome_counts()
        paid = out["cash"] + out["card"] + out["backup"]
        lines = [
            f"caja load: {c.cashiers} cashiers on {c.registers} registers sharing {c.terminals} terminals, "
            f"{c.instances} instances, {c.duration_s:.0f} s of selling{' with kill -9 campaign' if c.kill else ''}",
            f"  terminals: {', '.join(f'{k} {v}' for k, v in sorted(self.profiles.items()))}",
            f"  sales: {len(st.sales)} created, {paid} paid ({paid / max(self.selling_s, 1) * 60:.0f}/min): cash "
            f"{out['cash']}, card on GETNET {out['card']}, KLAP backup {out['backup']}; cancelled {out['cancelled']}; "
            f"left pending {out['pending']}",
            f"  payment attempts: {', '.join(f'{k} {v}' for k, v in sorted(self.attempts.items()))}",
            f"  reconciled with the terminal: {self.reconciled} attempts; 'terminal busy' shown (another register "
            f"on the same terminal was charging on it) {sum(x.busy for x in st.sales)}",
            f"  handovers {len(st.handovers)} ({sum(1 for h in st.handovers if h.pocketed)} with cash kept by the "
            f"outgoing cashier); cash movements {len(st.movements)}; closes: "
            f"{dict(Counter(h for _, h, _ in st.closes))}",
            f"  refusals shown to cashiers: {dict(sorted(st.refusals.items()))}",
            f"  requests {st.requests} ({st.requests / max(self.elapsed_s, 1):.0f}/s); no answer {st.lost}; "
            f"statuses {dict(sorted(st.statuses.items()))}",
            "  latency ms p50/p95/p99: pages and forms {:.0f}/{:.0f}/{:.0f}; progress poll {:.0f}/{:.0f}/{:.0f}".format(
                *self.latency(
                    (
                        "item",
                        "checkout",
                        "pay_cash",
                        "card_start",
                        "backup_start",
                        "backup_confirm",
                        "cancel",
                        "movement",
                        "handover",
                        "next",
                    )
                ),
                *self.latency(("poll",)),
            ),
        ]
        if c.kill:
            lines.append(
                f"  kill -9: {self.kills} kills, restart to ready median "
                f"{statistics.median(self.restart_s) if self.restart_s else 0:.1f} s"
            )
        lines.append(f"  elapsed {self.elapsed_s:.0f} s; logs in {self.run_dir}")
        for check in self.checks:
            lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        if not self.jornada_closed:
            lines.append("  [FAIL] the jornada could not be closed")
        for problem in st.problems[:20]:
            lines.append(f"  problem: {problem}")
        return "\n".join(lines)


async def _killer(
    instances: list[Instance], until: float, rng: random.Random, every: tuple[float, float], result: LoadResult
) -> None:
    while True:
        await asyncio.sleep(rng.uniform(*every))
        if time.monotonic() >= until:
            return
        victim = rng.choice(instances)
        victim.kill()
        result.stats.kills.append((time.monotonic(), victim.name))
        result.kills += 1
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        start = time.monotonic()
        victim.start()
        await victim.wait_ready()
        result.restart_s.append(time.monotonic() - start)


async def run_load(config: LoadConfig) -> LoadResult:
    started = time.monotonic()
    rng = random.Random(config.seed)
    logs = run_dir()
    scratch = ScratchDatabase(keep=config.keep_db)
    if not 1 <= config.terminals <= config.registers <= config.cashiers:
        raise ValueError("need 1 <= terminals <= registers <= cashiers")
    terminals = Terminals(config.terminals, config.step_delay_s, config.seed, logs)
    instances: list[Instance] = []
    stats = Stats()
    cashiers: list[Cashier] = []
    try:
        db = await scratch.create()
        sims = terminals.start()
        await apply_profiles(sims, config.seed)
        venue = await seed(db, sims, config.cashiers, config.registers)
        for n in range(config.instances):
            name = "ab"[n] if n < 2 else str(n)
            instances.append(
                Instance(name, free_port(), instance_env(scratch.plain_url, config.redis_url, name, logs), logs)
            )
        for inst in instances:
            inst.start()
        for inst in instances:
            await inst.wait_ready()
        result = LoadResult(
            config=config,
            checks=[],
            stats=stats,
            elapsed_s=0,
            selling_s=0,
            profiles=dict(Counter(t.profile for t in sims)),
            run_dir=str(logs),
        )
        auth_codes = (f"K{n:05d}" for n in itertools.count(1))
        books = []
        reliefs: list[tuple[RegisterBook, int, int]] = []  # (book, cashier, turn)
        for i, reg in enumerate(venue.registers):
            book = RegisterBook(register=reg, miscount=5000 if i % 5 == 4 else 0)
            books.append(book)
            reliefs += [(book, user_id, turn) for turn, user_id in enumerate(reg.cashier_ids[1:], start=1)]
        for book in books:
            cashiers.append(
                Cashier(
                    len(cashiers),
                    book.register.cashier_ids[0],
                    book,
                    True,
                    venue,
                    instances,
                    stats,
                    random.Random(rng.random()),
                    auth_codes,
                )
            )
        for book, user_id, _turn in reliefs:
            cashiers.append(
                Cashier(
                    len(cashiers),
                    user_id,
                    book,
                    False,
                    venue,
                    instances,
                    stats,
                    random.Random(rng.random()),
                    auth_codes,
                )
            )
        await asyncio.gather(*(c.log_in() for c in cashiers))
        await asyncio.gather(*(c.open_drawer() for c in cashiers if c.opener))
        selling_started = time.monotonic()
        until = selling_started + config.duration_s
        for c, (book, _, turn) in zip([c for c in cashiers if not c.opener], reliefs, strict=True):
            # Reliefs arrive in the middle of the night; a register's reliefs spread across it, in turn.
            turns = len(book.register.cashier_ids) - 1
            window = (0.25 + 0.5 * (turn - 1) / turns, 0.25 + 0.5 * turn / turns)
            c.relieve_at = selling_started + config.duration_s * rng.uniform(*window)
        killer = (
            asyncio.create_task(_killer(instances, until - 3, rng, config.kill_every_s, result))
            if config.kill
            else None
        )
        await asyncio.gather(*(c.night(until) for c in cashiers))
        result.selling_s = time.monotonic() - selling_started
        if killer is not None:
            await killer
        for inst in instances:  # a restart may still be in progress when the last kill came late
            if not inst.alive:
                inst.start()
                await inst.wait_ready()
        holders = [book.holder for book in books if book.holder is not None]
        await asyncio.gather(*(c.close_session() for c in holders))
        result.jornada_closed = await close_jornada(instances, venue, stats)
        async with db.reader() as s:
            result.attempts = {
                f"{p} {st}": n
                for p, st, n in (
                    await s.execute(
                        text("SELECT provider_id, state, count(*) FROM payment_attempts GROUP BY 1, 2 ORDER BY 1, 2")
                    )
                ).all()
            }
            result.reconciled = (
                await s.execute(text("SELECT count(*) FROM payment_attempts WHERE reconcile_tries > 0"))
            ).scalar_one()
        result.checks = await check_all(db, venue, sims, stats)
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        for c in cashiers:
            await c.browser.close()
        for inst in instances:
            inst.stop()
        terminals.stop()
        await scratch.drop()
