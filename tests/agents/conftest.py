"""A venue whose register CAJA1 reaches its GETNET terminal through ``caja agent`` (and a second register with
its own token), the app on that database, and the agents' tokens."""

from __future__ import annotations

import asyncio
import socket

import httpx
import msgspec
import pytest
import uvicorn
from litestar.testing import AsyncTestClient

from caja_core.agents.service import AgentTiming
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.registers import service as registers
from caja_core.settings import load_settings
from caja_core.testing.factories import make_setup
from caja_web.app import create_app

#: Short deadlines: the simulated terminal answers in well under a second per step.
GETNET_AGENT = {
    "connection": "agent",
    "receipt_timeout_s": 1.0,
    "sale_timeout_s": 8.0,
    "short_timeout_s": 3.0,
    "other_timeout_s": 4.0,
}
FAST_TIMING = AgentTiming(
    pickup_timeout_s=2.0, start_window_s=4.0, result_grace_s=3.0, poll_interval_s=0.1, redeliver_after_s=1.0
)


class AgentVenue(msgspec.Struct, kw_only=True):
    venue_id: int
    register_id: int
    other_register_id: int
    token: str
    other_token: str
    setup: object


async def make_agent_venue(db) -> AgentVenue:
    pm = make_plugin_manager()
    registry = ProviderRegistry.from_plugin_manager(pm)
    setup = await make_setup(
        db, registry, primary="getnet", backup=None, phones=1, provider_settings={"getnet": dict(GETNET_AGENT)}
    )
    async with db.session() as s:
        other = await registers.create_register(
            s,
            venue_id=setup.venue_id,
            registry=registry,
            actor_id=setup.admin_id,
            data=registers.RegisterInput(
                code="CAJA2",
                name="Caja 2",
                register_type="HUMANA",
                primary_provider="getnet",
                backup_provider=None,
                provider_settings={"getnet": dict(GETNET_AGENT)},
            ),
        )
        token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=setup.register_id, actor_id=setup.admin_id
        )
        other_token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=other.id, actor_id=setup.admin_id
        )
    return AgentVenue(
        venue_id=setup.venue_id,
        register_id=setup.register_id,
        other_register_id=other.id,
        token=token,
        other_token=other_token,
        setup=setup,
    )


@pytest.fixture
async def venue(sqlite_db):
    return await make_agent_venue(sqlite_db)


@pytest.fixture
def app(sqlite_db, sqlite_url, venue):
    settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url})
    app = create_app(settings, db=sqlite_db, pm=make_plugin_manager())
    app.state.agent_timing = FAST_TIMING
    return app


@pytest.fixture
async def api(app):
    async with AsyncTestClient(app=app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def serve_app(app) -> tuple[uvicorn.Server, asyncio.Task, str]:
    """The app under uvicorn on a loopback port, in this event loop (so the provider side can run beside it)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn no arrancó"
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture
async def live(app):
    """An HTTP client against the app served on a real loopback socket."""
    server, task, url = await serve_app(app)
    async with httpx.AsyncClient(base_url=url, timeout=15) as client:
        yield client
    server.should_exit = True
    await asyncio.wait_for(task, 15)
