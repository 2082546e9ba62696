"""P6: cold start of ``caja serve`` (process start → first answer of /health/live, then of /login, which
reads the database) and its resident memory (RSS) once ready and after serving 500 pages, on PostgreSQL.
Baseline in the same run: a minimal Litestar app with one template handler under the same uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .common import run, table
from .load.stack import Instance, ScratchDatabase, free_port, instance_env, run_dir

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _first_ok(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    async with httpx.AsyncClient() as client:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
            try:
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError(f"{url} not answering after {timeout_s} s")


async def _serve_pages(url: str, n: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            (await client.get(url, timeout=10)).raise_for_status()


async def caja_start(database_url: str, logs: Path) -> dict[str, float]:
    inst = Instance("p6", free_port(), instance_env(database_url, "", "p6", logs), logs)
    inst.env.pop("CAJA_REDIS_URL", None)
    start = time.perf_counter()
    inst.start()
    await _first_ok(f"{inst.url}/health/live", inst.proc)
    live = time.perf_counter() - start
    await _first_ok(f"{inst.url}/login", inst.proc)
    login = time.perf_counter() - start
    ready_rss = rss_mb(inst.proc.pid)
    await _serve_pages(f"{inst.url}/login", 500)
    busy_rss = rss_mb(inst.proc.pid)
    inst.stop()
    return {"live": live, "login": login, "rss": ready_rss, "rss_busy": busy_rss}


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


async def baseline_start() -> dict[str, float]:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
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
    try:
        await _first_ok(f"http://127.0.0.1:{port}/live", proc)
        live = time.perf_counter() - start
        ready_rss = rss_mb(proc.pid)
        await _serve_pages(f"http://127.0.0.1:{port}/partial/1", 500)
        return {"live": live, "login": live, "rss": ready_rss, "rss_busy": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(10)


async def measure(repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    scratch = ScratchDatabase()
    await scratch.create()
    logs = run_dir()
    try:
        caja, base = [], []
        for _ in range(repeats):
            base.append(await baseline_start())
            caja.append(await caja_start(scratch.plain_url, logs))
        return _median(caja), _median(base)
    finally:
        await scratch.drop()


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    caja, base = run(measure(args.repeats))
    return [
        (
            "P6 cold start caja serve → /health/live",
            f"{caja['live']:.2f} s",
            f"{base['live']:.2f} s minimal Litestar",
            f"×{caja['live'] / base['live']:.1f}",
        ),
        (
            "P6 cold start caja serve → /login (database)",
            f"{caja['login']:.2f} s",
            f"{base['live']:.2f} s minimal Litestar",
            f"×{caja['login'] / base['live']:.1f}",
        ),
        (
            "P6 RSS caja serve, ready",
            f"{caja['rss']:.0f} MB",
            f"{base['rss']:.0f} MB minimal Litestar",
            f"×{caja['rss'] / base['rss']:.1f}",
        ),
        (
            "P6 RSS caja serve, after 500 pages",
            f"{caja['rss_busy']:.0f} MB",
            f"{base['rss_busy']:.0f} MB minimal Litestar",
            f"×{caja['rss_busy'] / base['rss_busy']:.1f}",
        ),
    ]


if __name__ == "__main__":
    print(table(main()))
