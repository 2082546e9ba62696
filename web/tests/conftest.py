"""Fixtures for the web tests: a ready venue (core factories), the app on that database, and a test client
that logs in and sends the CSRF token like a browser form does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from caja_core import hookimpl
from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_core.testing.factories import PASSWORD, PIN, make_registry, make_setup
from caja_core.testing.fake import FakeProvider, manual_provider
from caja_web.app import create_app

sys.path.insert(0, str(Path(__file__).parent))  # webkit.py: helpers shared by the web tests


class ProvidersPlugin:
    def __init__(self, *providers) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider) -> None:
        for provider in self.providers:
            add_provider(provider)


class WebClient:
    """An ``AsyncTestClient`` that keeps the CSRF token and knows how to log in."""

    def __init__(self, client: AsyncTestClient) -> None:
        self.client = client

    async def csrf(self) -> str:
        token = self.client.cookies.get("caja_csrf")
        if not token:
            await self.client.get("/login")
            token = self.client.cookies.get("caja_csrf")
        return token

    async def get(self, url: str, htmx: bool = False, **kw):
        headers = kw.pop("headers", {})
        if htmx:
            headers["HX-Request"] = "true"
        return await self.client.get(url, headers=headers, **kw)

    async def post(self, url: str, data: dict | None = None, htmx: bool = False, csrf: bool = True, **kw):
        headers = kw.pop("headers", {})
        if csrf:
            headers["x-csrftoken"] = await self.csrf()
        if htmx:
            headers["HX-Request"] = "true"
        kw.setdefault("follow_redirects", False)
        return await self.client.post(url, data=data or {}, headers=headers, **kw)

    async def login(self, username: str, password: str = PASSWORD, venue_id: int = 1):
        r = await self.post("/login", {"venue_id": venue_id, "username": username, "password": password})
        assert r.status_code in (200, 303), r.text
        return r

    async def login_cashier(self, user_id: int, pin: str = PIN, venue_id: int = 1):
        r = await self.post("/login/pin", {"venue_id": venue_id, "user_id": user_id, "pin": pin})
        assert r.status_code in (200, 303), r.text
        return r


@pytest.fixture
def fakes():
    return FakeProvider("fake", "Terminal de prueba"), FakeProvider("fakebackup", "Respaldo de prueba")


@pytest.fixture
def registry(fakes):
    return make_registry(*fakes)


@pytest.fixture
async def setup(sqlite_db, registry):
    return await make_setup(sqlite_db, registry)


@pytest.fixture
def settings(sqlite_url):
    return load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url})


@pytest.fixture
def app(settings, sqlite_db, fakes, setup):
    pm = make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False)
    return create_app(settings, db=sqlite_db, pm=pm)


@pytest.fixture
async def client(app):
    async with AsyncTestClient(app=app) as c:
        yield WebClient(c)


@pytest.fixture
async def admin(client, setup):
    await client.login("admin", venue_id=setup.venue_id)
    return client


@pytest.fixture
async def supervisor(client, setup):
    await client.login("super", venue_id=setup.venue_id)
    return client


@pytest.fixture
async def cashier(client, setup):
    await client.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
    return client


# ---- the POS in a real browser: the stack its tests share ---------------------------------------------------------
# A real server (``LiveSite``) whose card terminal is a fake one ("GETNET de prueba") and whose backup is a phone
# charged by hand and confirmed at the POS ("KLAP de prueba"), and a real Chromium. A module that needs other
# providers or another server defines its own fixture of the same name (it takes precedence); posstack.py holds
# what the tests do on this stack.
@pytest.fixture
def terminal():
    return FakeProvider("fake", "GETNET de prueba")


@pytest.fixture
def backup():
    return manual_provider("fakebackup", "KLAP de prueba")  # charged by hand on a phone, confirmed at the POS


@pytest.fixture
def site(sqlite_url, terminal, backup):
    from livesite import LiveSite

    live = LiveSite(sqlite_url, ProvidersPlugin(terminal, backup)).start()
    yield live
    live.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    from posbrowser import launch

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()
