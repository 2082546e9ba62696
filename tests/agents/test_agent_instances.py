"""One agent process serves a register (docs/reliability.md, case 40): each ``caja agent`` names itself with a random
id drawn at its start; a second one on the same register token gets 409 in Spanish and nothing else, two live ones
open an incident and ``/health`` warns, and an agent restarted after ``kill -9`` takes over once the old one's
lease has run out (the default 10 s) — through the API, and with real agent processes and two simulated
terminals."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from sqlalchemy import select

from caja_core.agents.service import INSTANCE_HEADER, take_turn
from caja_core.audit.models import Incident
from caja_core.clock import Clock
from caja_core.errors import Conflict
from caja_core.payments.models import PaymentAttempt
from caja_core.registers.models import CashRegister
from caja_core.testing.waiting import wait_until
from caja_getnet.protocol import Command
from caja_getnet.simulator import Simulator

from .conftest import FAST_TIMING, bearer, make_agent_venue
from .test_agent_e2e import Stack, stack  # noqa: F401 - the fixture

NEXT = "/api/agent/v1/commands/next"
HEARTBEAT = "/api/agent/v1/heartbeat"


def agent(token: str, instance: str) -> dict[str, str]:
    return bearer(token) | {INSTANCE_HEADER: instance}


async def incidents(db, register_id: int) -> list[Incident]:
    async with db.reader() as s:
        return list(
            (
                await s.execute(
                    select(Incident).where(Incident.register_id == register_id, Incident.kind == "agent_two_instances")
                )
            ).scalars()
        )


async def health_registers(api) -> dict:
    api.app.state.settings.metrics_token = token = "metrics-token-for-the-operator"
    r = await api.get("/health", headers={"Authorization": f"Bearer {token}"})
    registers = r.json()["services"]["registers"]
    return {key.split(":")[-1]: value for key, value in registers.items()} | {"_flags": r.text}


async def test_a_second_agent_gets_409_and_two_live_agents_open_one_incident(api, venue, sqlite_db):
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert (await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, first))).status_code == 204
    for method, url, body in (
        ("GET", NEXT + "?wait=0", None),
        ("POST", HEARTBEAT, {"terminal": "ok", "detail": ""}),
        ("POST", "/api/agent/v1/commands/1/claim", {"fence": 1}),
    ):
        r = await api.request(method, url, json=body, headers=agent(venue.token, second))
        assert r.status_code == 409, (url, r.text)
        assert r.json()["code"] == "agent.other_instance"
        assert r.json()["error"].startswith("Otro agente atiende la caja CAJA1"), r.text
    # The refused heartbeat changed nothing the admin sees.
    async with sqlite_db.reader() as s:
        register = await s.get(CashRegister, venue.register_id)
    assert register.agent_instance == first and register.agent_status is None
    assert await incidents(sqlite_db, venue.register_id) == []  # the first one may have died: not yet two

    # The first one still asks after the second was refused: two live agents on one token.
    async def noticed():
        r = await api.post(HEARTBEAT, json={"terminal": "ok", "detail": ""}, headers=agent(venue.token, first))
        assert r.status_code == 200, r.text
        r = await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, second))
        assert r.status_code == 409, r.text
        return await incidents(sqlite_db, venue.register_id)

    await wait_until(noticed, timeout_s=10, what="caja nota dos agentes vivos", interval_s=0.2)
    for _ in range(3):
        r = await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, second))
        assert r.status_code == 409
    (incident,) = await incidents(sqlite_db, venue.register_id)  # one, however often it asks
    assert "Dos agentes en la caja CAJA1" in incident.description and not incident.resolved
    report = await health_registers(api)
    assert report["CAJA1"]["agent"]["status"] == "two_agents", report
    assert "Dos agentes en la caja CAJA1" in report["_flags"]
    # Another register's agent is not concerned.
    r = await api.get(NEXT, params={"wait": 0}, headers=agent(venue.other_token, second))
    assert r.status_code == 204


async def test_an_agent_silent_for_the_lease_is_replaced_without_an_incident(api, venue, sqlite_db):
    api.app.state.agent_timing = msgspec.structs.replace(FAST_TIMING, instance_lease_s=1.0)
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    asked = time.monotonic()
    assert (await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, old))).status_code == 204
    answered = time.monotonic()
    # The old process is killed: it never asks again. The new one is refused until the lease ran out.
    assert (await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, new))).status_code == 409

    async def served():
        r = await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, new))
        assert r.status_code in (204, 409), r.text
        return r.status_code == 204

    await wait_until(served, timeout_s=10, what="el agente nuevo atiende la caja", interval_s=0.1)
    assert time.monotonic() - asked >= 1.0 and time.monotonic() - answered < 5
    async with sqlite_db.reader() as s:
        register = await s.get(CashRegister, venue.register_id)
    assert register.agent_instance == new
    assert await incidents(sqlite_db, venue.register_id) == []  # a restart is not two agents
    r = await api.post(HEARTBEAT, json={"terminal": "ok", "detail": ""}, headers=agent(venue.token, new))
    assert r.status_code == 200, r.text
    assert (await health_registers(api))["CAJA1"]["agent"]["status"] == "ok"
    # The old one, should it come back, is the one refused now.
    assert (await api.get(NEXT, params={"wait": 0}, headers=agent(venue.token, old))).status_code == 409


async def test_two_agent_processes_on_one_token_one_terminal_charges_and_a_restart_takes_over(stack):  # noqa: F811
    """Agent A (terminal 1) serves CAJA1; agent B is started on the same token with another terminal: B gets 409,
    logs it, and no command of the register ever reaches its terminal; an incident says there are two. A is
    killed (-9): B takes over within 15 s, without anyone touching anything."""
    first = await stack.start_agent()
    (register,) = await stack.rows(CashRegister, CashRegister.id == stack.venue.register_id)
    holder = register.agent_instance
    assert holder

    other_sim = Simulator(step_delay_s=0.05, terminal_id="SIM00088", serial_number="SN-OTRO")
    stack.pty_path = await other_sim.start_pty()
    try:
        second = await stack.start_agent(wait_up=False)
        await wait_until(
            lambda: incidents(stack.db, stack.venue.register_id),
            timeout_s=30,
            what="caja nota dos agentes en la caja",
        )
        sale_id = await stack.sale(4100)
        await stack.pay(sale_id)
        done = await stack.until(sale_id, lambda p: p.paid or p.state in ("declined", "unavailable", "in_doubt"), 25)
        assert done.paid, done
        (attempt,) = await stack.rows(PaymentAttempt, PaymentAttempt.sale_id == sale_id)
        assert stack.sim.charged() == {attempt.ticket: 4100}
        assert Command.SALE not in other_sim.command_codes() and Command.PARAMETER_REPORT not in (
            other_sim.command_codes()
        )

        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed = time.monotonic()

        async def taken_over():
            (r,) = await stack.rows(CashRegister, CashRegister.id == stack.venue.register_id)
            return r.agent_instance not in (None, holder)

        await wait_until(taken_over, timeout_s=30, what="el otro agente toma la caja")
        takeover_s = time.monotonic() - killed
        print(f"takeover after kill -9: {takeover_s:.1f} s")
        assert takeover_s <= 15, takeover_s
        # B now serves the register: a command reaches its terminal (Poll, from the admin's "Probar terminal").
        health = await stack.orchestrator.registry.get("getnet").health(
            *await _settings_and_ctx(stack),
        )
        assert health.kind.name == "APPROVED", health
        assert Command.POLL in other_sim.command_codes()
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(second.communicate(), 30)
        log = err.decode(errors="replace")
        assert "Otro agente atiende la caja CAJA1" in log and "(409)" in log, log[-2000:]
        assert "atiende ahora la caja" in log, log[-2000:]
    finally:
        await other_sim.stop()


async def _settings_and_ctx(on: Stack):
    from caja_core.agents.service import DbAgentChannel
    from caja_core.providers import ProviderContext, validate_settings

    (register,) = await on.rows(CashRegister, CashRegister.id == on.venue.register_id)
    provider = on.orchestrator.registry.get("getnet")
    settings = validate_settings(provider, register.provider_settings["getnet"])
    ctx = ProviderContext(
        register_id=register.id,
        venue_id=register.venue_id,
        agent=DbAgentChannel(on.db, register.id, register.venue_id),
    )
    return settings, ctx


class _SteppedClock(Clock):
    """The server's wall clock, stepped by hand; its monotonic clock, advanced by hand."""

    def __init__(self) -> None:
        self.wall, self.mono = datetime.now(UTC), 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def tick(self, seconds: float = 1.0) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request):
    return request.getfixturevalue("any_db" if request.param == "sqlite" else "pg_db")


async def test_a_server_clock_step_neither_ends_a_live_agents_turn_nor_holds_a_dead_ones(any_db):
    """docs/reliability.md case 37: an hour forward, the live agent keeps its register (the other gets 409);
    two hours back with the holder dead, the other takes the register over after the lease, not after hours."""
    venue = await make_agent_venue(any_db)
    clock, rid = _SteppedClock(), venue.register_id
    await take_turn(any_db, rid, "agente-a", clock=clock)
    clock.wall += timedelta(hours=1)  # NTP or an operator steps the server's clock forward
    for _ in range(15):
        clock.tick()
        await take_turn(any_db, rid, "agente-a", clock=clock)
        with pytest.raises(Conflict) as refused:
            await take_turn(any_db, rid, "agente-b", clock=clock)
        assert refused.value.code == "agent.other_instance"
    last_a = clock.mono
    clock.wall -= timedelta(hours=2)  # ...and back, while agent A dies (kill -9)
    while True:
        clock.tick()
        try:
            await take_turn(any_db, rid, "agente-b", clock=clock)
            break
        except Conflict:
            assert clock.mono - last_a < 15, "el agente nuevo no toma la caja"
    assert 10 <= clock.mono - last_a < 15
    (register,) = await _rows(any_db, CashRegister, CashRegister.id == rid)
    assert register.agent_instance == "agente-b"


async def _rows(db, model, *where):
    async with db.reader() as s:
        return list((await s.execute(select(model).where(*where))).scalars())
