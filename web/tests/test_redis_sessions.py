"""With CAJA_REDIS_URL the web sessions live in Redis (a real redis-server on a free port), shared by two
app instances; login still rotates the session id."""

import shutil
import subprocess
import time

import pytest
from conftest import ProvidersPlugin, WebClient
from litestar.testing import AsyncTestClient
from livesite import free_port

from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_web.app import create_app


@pytest.fixture
def redis_url():
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False).stdout.strip()
        != b"PONG"
    ):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server no arrancó"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


async def test_two_instances_share_sessions_through_redis(redis_url, sqlite_url, sqlite_db, setup, fakes):
    settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url, "CAJA_REDIS_URL": redis_url})

    def instance():
        return create_app(
            settings, db=sqlite_db, pm=make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False)
        )

    async with AsyncTestClient(app=instance()) as first, AsyncTestClient(app=instance()) as second:
        web = WebClient(first)
        await web.login("admin", venue_id=setup.venue_id)
        key = first.cookies.get("caja_session")
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        keys = subprocess.run(["redis-cli", "-p", port, "--scan"], capture_output=True, text=True, check=True).stdout
        assert key in keys
        second.cookies.set("caja_session", key)
        r = await second.get("/admin/cajas/", follow_redirects=False)
        assert r.status_code == 200 and "Caja 1" in r.text
        await web.post("/logout")
        r = await second.get("/admin/cajas/", follow_redirects=False)
        assert r.status_code == 303
