"""Several app instances on one PostgreSQL: the sale waits in this process while the agent talks to another
instance (a real ``caja serve`` process); only the database connects them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from caja_core.agents.service import AgentTiming, DbAgentChannel
from caja_core.payments.models import AgentCommand
from caja_core.providers import Progress

from .conftest import bearer, free_port, make_agent_venue

CAJA = str(Path(sys.executable).with_name("caja"))
NEXT = "/api/agent/v1/commands/next"
#: The waiting side only re-reads the row: no wake-up crosses processes.
TIMING = AgentTiming(pickup_timeout_s=5.0, result_grace_s=3.0, poll_interval_s=0.1)


@pytest.fixture
async def other_instance(pg_db, pg_url, tmp_path):
    venue = await make_agent_venue(pg_db)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.update(
        {
            "CAJA_ENV": "demo",
            "CAJA_DATABASE_URL": pg_url,
            "CAJA_DATA_DIR": str(tmp_path),
            "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
            "CAJA_BACKUP_INTERVAL_HOURS": "0",
            "CAJA_LOG_LEVEL": "WARNING",
        }
    )
    with open(tmp_path / "serve.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [CAJA, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, timeout=15) as client:
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if (await client.get("/health/live")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            await asyncio.sleep(0.2)
        yield venue, client
    proc.terminate()
    proc.wait(15)


async def test_sale_waits_here_while_the_agent_talks_to_another_instance(other_instance, pg_db):
    venue, client = other_instance
    seen: list[Progress] = []

    async def progress(p: Progress) -> None:
        seen.append(p)

    channel = DbAgentChannel(pg_db, venue.register_id, venue.venue_id, timing=TIMING)
    exchange = asyncio.create_task(
        channel.exchange({"Command": 100, "Amount": 1000, "TicketNumber": "P1"}, deadline_s=8, progress=progress)
    )
    # Two long polls of the same register at once (an agent restarted while its old poll still hangs): the
    # command goes to exactly one of them.
    polls = await asyncio.gather(*(client.get(NEXT, params={"wait": 2}, headers=bearer(venue.token)) for _ in range(2)))
    assert sorted(r.status_code for r in polls) == [200, 204]
    cid = next(r for r in polls if r.status_code == 200).json()["command_id"]
    for message, code in (
        ("Venta enviada al terminal", None),
        ("Leyendo tarjeta", 78),
        ("Ingreso de PIN", 81),
        ("Procesando", 82),
    ):
        r = await client.post(
            f"/api/agent/v1/commands/{cid}/progress",
            json={"message": message, "code": code},
            headers=bearer(venue.token),
        )
        assert r.status_code == 200
    result = {"ResponseCode": 0, "Ticket": "P1", "Amount": 1000, "AuthorizationCode": "XYZ123"}
    for _ in range(2):  # the agent did not get the first 200: same result again, no change
        r = await client.post(
            f"/api/agent/v1/commands/{cid}/result", json={"result": result}, headers=bearer(venue.token)
        )
        assert r.status_code == 200
    assert await asyncio.wait_for(exchange, 5) == result
    assert [p.code for p in seen] == [None, 78, 81, 82]  # none lost, though posted faster than re-read
    async with pg_db.reader() as s:
        row = (await s.execute(select(AgentCommand).where(AgentCommand.id == cid))).scalar_one()
    assert row.status == "done" and row.result == result
    r = await client.post(
        f"/api/agent/v1/commands/{cid}/result", json={"result": result}, headers=bearer(venue.other_token)
    )
    assert r.status_code == 404
