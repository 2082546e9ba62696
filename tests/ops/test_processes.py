"""Failures that show within one scrape: a `caja worker` (a real process) beats into the database; every app
instance's /health and metrics show it, and show when it dies or stops."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from caja_core.ops import metrics
from caja_core.ops.health import check_health
from caja_core.ops.heartbeats import list_processes
from caja_core.testing.waiting import wait_until

from .conftest import sell

CAJA = str(Path(sys.executable).parent / "caja")
STALE_S = 3.0


def sample(name: str, **labels: str) -> float | None:
    for family in metrics.REGISTRY.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def until(predicate, *, timeout_s: float = 60.0, what: str = ""):
    return await wait_until(predicate, timeout_s=timeout_s, what=what, interval_s=0.2)


def start_worker(url: str, tmp_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.update(
        {
            "CAJA_SECRET_KEY": "k7Q2vX9pL4mN8rT1wY6zB3cD5fG0hJ2sA9uE",
            "CAJA_DATABASE_URL": url,
            "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
            "CAJA_INSTANCE_ID": "srv1-worker",
            "CAJA_LOG_FORMAT": "json",
        }
    )
    return subprocess.Popen(
        [CAJA, "worker", "--check-every", "0.5", "--beat-every", "0.5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_a_killed_worker_shows_in_health_and_metrics_of_another_instance(any_db, tmp_path):
    await sell(any_db)
    url = any_db.url.replace("+aiosqlite", "").replace("+asyncpg", "")
    proc = start_worker(url, tmp_path)
    try:

        async def worker_row():
            rows = {p.name: p for p in await list_processes(any_db)}
            row = rows.get("srv1-worker")
            return row if row and row.backup and row.backup.get("newest_id") else None

        await until(worker_row, what="el worker registra su latido y su primer respaldo")

        async def health():
            return await check_health(any_db, instance="srv2-8001", process_stale_after_s=STALE_S)

        report = await health()
        assert report.services["processes"]["srv1-worker"]["status"] == "serving", report.services
        assert report.services["processes"]["srv1-worker"]["workers"] == {"backup": "ok"}
        assert report.services["backups"]["status"] == "ok" and report.status == "ok", report.problems
        # Still alive a few beats later (it keeps beating).
        first_beat = report.services["processes"]["srv1-worker"]["last_beat_at"]

        async def beat_moved():
            r = await health()
            return r.services["processes"]["srv1-worker"]["last_beat_at"] != first_beat

        await until(beat_moved, timeout_s=10, what="un latido nuevo")
        await metrics.collect(any_db, instance="srv2-8001", process_stale_after_s=STALE_S)
        assert sample("caja_worker_up", process="srv1-worker", worker="backup") == 1
        assert sample("caja_process_up", process="srv1-worker", kind="worker") == 1

        proc.kill()  # kill -9: no chance to say goodbye
        proc.wait(timeout=10)

        async def stale():
            r = await health()
            return r if r.services["processes"]["srv1-worker"]["status"] == "stale" else None

        report = await until(stale, timeout_s=30, what="el worker muerto aparece sin latido")
        assert report.status == "degraded"
        assert any("srv1-worker (caja worker) no da señales" in p for p in report.problems), report.problems
        await metrics.collect(any_db, instance="srv2-8001", process_stale_after_s=STALE_S)
        assert sample("caja_worker_up", process="srv1-worker", worker="backup") == 0
        assert sample("caja_process_up", process="srv1-worker", kind="worker") == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def test_a_stopped_worker_says_so_and_logs_json(sqlite_db, tmp_path):
    await sell(sqlite_db)
    url = sqlite_db.url.replace("+aiosqlite", "")
    proc = start_worker(url, tmp_path)

    async def serving():
        rows = {p.name: p for p in await list_processes(sqlite_db)}
        return rows.get("srv1-worker") is not None and rows["srv1-worker"].state == "serving"

    try:
        await until(serving, what="el worker en marcha")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:5]  # JSON, like the app
    records = [json.loads(line) for line in lines]
    assert any("caja worker srv1-worker" in r["message"] for r in records)
    assert all(r.get("instance") == "srv1-worker" for r in records)
    report = await check_health(sqlite_db, instance="srv2-8001")
    assert report.services["processes"]["srv1-worker"]["status"] == "stopped"
    assert any("No hay ningún caja worker en marcha" in p for p in report.problems), report.problems
