"""P2: p99 latency of the POS sale-screen partial (``GET /caja/venta``, HTMX: the cart) and of the
payment-progress partial (``GET /caja/venta/<id>/pago``, HTMX, while the card payment waits on the terminal)
with 50 concurrent cashiers, each polling once a second as the page does, on one ``caja serve`` (PostgreSQL,
Redis sessions). Baseline in the same run: a minimal Litestar template handler under the same uvicorn and the
same 50 clients. Goal: ≤ 2×."""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time

import httpx

from .common import run, table
from .load.cashier import SALE_LINK, Browser, Stats
from .load.stack import (
    REDIS_URL,
    Instance,
    ScratchDatabase,
    Terminals,
    control,
    free_port,
    instance_env,
    run_dir,
    seed,
)
from .p6_cold_start import ROOT, _first_ok


def p99(values: list[float]) -> float:
    return quantile(values, 0.99)


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def paced(fetch, clients: int, seconds: float, interval: float) -> list[float]:
    """``clients`` loops, each calling ``await fetch(i)`` once per ``interval`` (starts spread over the first
    interval) for ``seconds``; returns every latency."""
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def loop(i: int) -> None:
        await asyncio.sleep(random.Random(i).uniform(0, interval))
        while time.monotonic() < end:
            tick = time.monotonic()
            start = time.perf_counter()
            await fetch(i)
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))

    await asyncio.gather(*(loop(i) for i in range(clients)))
    return latencies


async def measure(clients: int, seconds: float, interval: float, answer_after_s: float = 90) -> dict[str, float]:
    logs = run_dir()
    scratch = ScratchDatabase()
    terminals = Terminals(clients, 0.15, 1, logs)
    inst: Instance | None = None
    base: subprocess.Popen | None = None
    browsers: list[Browser] = []
    try:
        db = await scratch.create()
        sims = terminals.start()
        async with httpx.AsyncClient() as client:  # the terminals answer late: the payments stay awaiting
            for t in sims:
                if answer_after_s:
                    await control(
                        client, t, "POST", "/faults", {"kind": "late_answer", "scope": "run", "delay_s": answer_after_s}
                    )
        venue = await seed(db, sims, clients, clients, max_wait_s=120, sale_timeout_s=120)
        inst = Instance("p2", free_port(), instance_env(scratch.plain_url, REDIS_URL, "p2", logs), logs)
        inst.start()
        await inst.wait_ready()
        port = free_port()
        base = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.load.baseline_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await _first_ok(f"http://127.0.0.1:{port}/live", base)
        stats = Stats()
        browsers = [Browser([inst], 0, f"10.2.{i // 200}.{i % 200 + 1}", stats) for i in range(clients)]

        async def prepare(i: int) -> None:
            b, reg = browsers[i], venue.registers[i]
            await b.csrf()
            r = await b.request(
                "POST",
                "/login/pin",
                {"venue_id": venue.venue_id, "user_id": reg.cashier_ids[0], "pin": venue.pins[reg.cashier_ids[0]]},
            )
            assert r.status_code == 303, r.text[:300]
            r = await b.request(
                "POST",
                "/caja/session/open",
                {"register_id": str(reg.id), "open_key": f"p2-{i}", "initial_cash": "20000"},
            )
            assert r.status_code == 303, r.text[:300]
            for product_id, _ in venue.products[:3]:
                await b.request("POST", "/caja/venta/item", {"product_id": str(product_id)}, htmx=True)

        await asyncio.gather(*(prepare(i) for i in range(clients)))

        async def sale_partial(i: int) -> None:
            r = await browsers[i].request("GET", "/caja/venta", htmx=True)
            assert r.status_code == 200 and "<html" not in r.text, r.text[:200]

        base_client = httpx.AsyncClient()

        async def baseline(i: int) -> None:
            r = await base_client.get(f"http://127.0.0.1:{port}/partial/{i}")
            assert r.status_code == 200

        await paced(baseline, clients, 2, interval)  # warm-up of both
        await paced(sale_partial, clients, 2, interval)
        sale = await paced(sale_partial, clients, seconds, interval)
        out = {
            "baseline": p99(await paced(baseline, clients, seconds, interval)),
            "sale": p99(sale),
            "sale_p50": quantile(sale, 0.5),
        }
        sale_ids: list[int] = [0] * clients

        async def start_card(i: int) -> None:
            r = await browsers[i].request("POST", "/caja/venta/cobrar", htmx=True)
            sale_ids[i] = int(SALE_LINK.search(r.text).group(1))
            r = await browsers[i].request("POST", f"/caja/venta/{sale_ids[i]}/tarjeta", htmx=True)
            assert r.status_code == 200, r.text[:300]

        await asyncio.gather(*(start_card(i) for i in range(clients)))

        async def progress(i: int) -> None:
            r = await browsers[i].request("GET", f"/caja/venta/{sale_ids[i]}/pago", htmx=True)
            assert r.status_code == 200 and ('id="progress"' in r.text or not answer_after_s), r.text[:300]

        await paced(progress, clients, 2, interval)
        polls = await paced(progress, clients, seconds, interval)
        out["progress"], out["progress_p50"] = p99(polls), quantile(polls, 0.5)
        out["baseline_again"] = p99(await paced(baseline, clients, seconds, interval))
        await base_client.aclose()
        return out
    finally:
        for b in browsers:
            await b.close()
        if base is not None:
            base.terminate()
            base.wait(10)
        if inst is not None:
            inst.stop()
        terminals.stop()
        await scratch.drop()


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a client's requests")
    parser.add_argument(
        "--answer-after",
        type=float,
        default=90.0,
        help="seconds the terminals take to answer (0: at once, the partial then shows the receipt)",
    )
    args = parser.parse_args(argv)
    r = run(measure(args.clients, args.seconds, args.interval, args.answer_after))
    base = (r["baseline"] + r["baseline_again"]) / 2
    label = f"{args.clients} clients, 1 req/s each"
    return [
        (
            f"P2 p99 sale-screen partial ({label})",
            f"{r['sale']:.0f} ms (p50 {r['sale_p50']:.0f})",
            f"{base:.0f} ms minimal template",
            f"×{r['sale'] / base:.1f} (goal ≤ 2×)",
        ),
        (
            f"P2 p99 payment-progress partial ({label})",
            f"{r['progress']:.0f} ms (p50 {r['progress_p50']:.0f})",
            f"{base:.0f} ms minimal template",
            f"×{r['progress'] / base:.1f} (goal ≤ 2×)",
        ),
    ]


if __name__ == "__main__":
    print(table(main()))
