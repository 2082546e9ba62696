"""The real stack for the operator-action cases (docs/reliability.md cases 31–38): a venue on a real database, the GETNET
provider talking to terminal simulators over TCP, one or more instances of the real Litestar app (each with its
own payment orchestrator), and HTTP clients for the cashier, the supervisor and the admin, who use the same
pages and forms as a person."""

from __future__ import annotations

import asyncio
import html
import re
import socket
import threading
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn

from caja_core import hookimpl
from caja_core.fallback.policy import FallbackPolicy
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.settings import load_settings
from caja_core.testing.factories import PASSWORD, PIN, make_setup
from caja_core.testing.fake import manual_provider
from caja_core.testing.waiting import wait_until
from caja_getnet.provider import GetnetProvider
from caja_getnet.simulator import Simulator
from caja_web.app import create_app

POLICY = {
    "max_wait_s": 5,
    "triggers": ["unavailable", "transport_error", "timeout", "decline"],
    "decline_codes": ["51"],
    "breaker_failures": 50,
    "breaker_window_s": 60,
    "breaker_cooldown_s": 5,
    "backup_phones_required": 1,
}
#: Short terminal deadlines so a dead terminal is known dead in about a second.
TERMINAL = {"receipt_timeout_s": 2.0, "short_timeout_s": 3.0, "other_timeout_s": 5.0, "sale_timeout_s": 20.0}
#: Orchestrator timings for the tests (the defaults are for a real night).
FAST = {
    "worker_interval_s": 0.2,
    "cancel_timeout_s": 2.0,
    "cancel_grace_s": 0.3,
    "status_timeout_s": 4.0,
    "health_timeout_s": 2.0,
    "reconcile_backoff_s": (0.5, 4.0),
}


class Providers:
    def __init__(self, *providers: Any) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider: Any) -> None:
        for provider in self.providers:
            add_provider(provider)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page))).strip()


class FormReader(HTMLParser):
    """The fields of the forms of a page, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[dict[str, str], list[tuple[str, str]]]] = []
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a, []))
        elif not self.forms:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind in ("submit", "button"):
                return
            self.forms[-1][1].append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select" and a.get("name"):
            self._select, self._options = a["name"], []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            chosen = [v for v, sel in self._options if sel] or [v for v, _ in self._options[:1]]
            if chosen:
                self.forms[-1][1].append((self._select, chosen[0]))
            self._select = None


def form_fields(page: str, action: str) -> list[tuple[str, str]]:
    reader = FormReader()
    reader.feed(page)
    for attrs, fields in reader.forms:
        if attrs.get("action") == action:
            return fields
    raise AssertionError(f"no form posting to {action}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A person's browser: cookies, the CSRF token, HTMX partials, over real HTTP."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=60.0)

    async def csrf(self) -> str:
        token = self.client.cookies.get("caja_csrf")
        if not token:
            await self.client.get("/login")
            token = self.client.cookies.get("caja_csrf")
        return token

    async def get(self, url: str, *, htmx: bool = False):
        return await self.client.get(url, headers={"HX-Request": "true"} if htmx else {})

    async def post(self, url: str, data: Any = None, *, htmx: bool = False):
        headers = {"x-csrftoken": await self.csrf()}
        if htmx:
            headers["HX-Request"] = "true"
        if isinstance(data, list):  # a whole form, repeated names included, as a browser encodes it
            headers["content-type"] = "application/x-www-form-urlencoded"
            return await self.client.post(url, content=urlencode(data), headers=headers, follow_redirects=False)
        return await self.client.post(url, data=data or {}, headers=headers, follow_redirects=False)


class Instance:
    """One app instance — the real app under uvicorn on a loopback port, in a thread with its own event loop and
    its own database connections, as a separate ``caja serve`` would be — and the people using it."""

    def __init__(self, stack: Stack, name: str, options: dict[str, Any], providers: tuple[str, ...] | None) -> None:
        self.stack, self.name, self.options, self.providers = stack, name, options, providers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self.server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self._clients: list[Client] = []
        self._thread = threading.Thread(target=self._run, name=f"caja-{name}", daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            settings = load_settings(
                {
                    "CAJA_ENV": "demo",
                    "CAJA_DATABASE_URL": self.stack.url,
                    "CAJA_INSTANCE_ID": self.name,
                    "CAJA_LOG_FORMAT": "text",
                }
            )
            pm = self.stack.plugins(self.providers)
            self.app = create_app(settings, pm=pm, orchestrator_options=self.options)
            config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
            self.server = uvicorn.Server(config)
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self._error = exc
        finally:
            self.loop.close()

    async def start(self) -> Instance:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not (self.server and self.server.started):
            if self._error or time.monotonic() > deadline:
                raise RuntimeError(f"the app instance {self.name} did not start: {self._error!r}")
            await asyncio.sleep(0.05)
        return self

    @property
    def orchestrator(self):
        return self.app.state.orchestrator

    async def run(self, coro) -> Any:
        """Run a coroutine in the instance's own event loop (its orchestrator lives there)."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def client(self) -> Client:
        c = Client(self.url)
        self._clients.append(c)
        return c

    async def cashier(self) -> Client:
        c = await self.client()
        r = await c.post(
            "/login/pin", {"venue_id": self.stack.setup.venue_id, "user_id": self.stack.setup.cashier_id, "pin": PIN}
        )
        assert r.status_code in (200, 303), text_of(r.text)
        return c

    async def staff(self, username: str) -> Client:
        c = await self.client()
        r = await c.post("/login", {"venue_id": self.stack.setup.venue_id, "username": username, "password": PASSWORD})
        assert r.status_code in (200, 303), text_of(r.text)
        return c

    async def close(self) -> None:
        for c in self._clients:
            await c.client.aclose()
        self._clients.clear()
        if self.server is not None:
            self.server.should_exit = True
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 30)


class Stack:
    def __init__(self, db: Any, url: str, *, installed: bool = False) -> None:
        """``installed``: the plugins installed in this environment (GETNET, KLAP…), as a separate ``caja serve``
        process loads them; otherwise this GETNET provider and a manual backup phone."""
        self.db, self.url = db, url
        self.simulators: list[Simulator] = []
        self.instances: list[Instance] = []
        self.installed = installed
        self.backup_id = "klap" if installed else "respaldo"
        self.registry = ProviderRegistry.from_plugin_manager(self.plugins())
        self.setup: Any = None

    async def simulator(self, serial: str = "SN-0001", port: int = 0) -> Simulator:
        sim = Simulator(terminal_id=f"T{serial[-4:]}", serial_number=serial, step_delay_s=0.02, message_gap_s=0.002)
        await sim.start_tcp(port=port)
        self.simulators.append(sim)
        return sim

    def plugins(self, providers: tuple[str, ...] | None = None) -> Any:
        """A plugin manager of its own for each app instance (as each process has); ``providers``: only these
        provider plugins (the others uninstalled)."""
        if self.installed:
            return make_plugin_manager()
        found = [GetnetProvider(), manual_provider("respaldo", "Celular de respaldo")]
        if providers is not None:
            found = [p for p in found if p.id in providers]
        return make_plugin_manager(Providers(*found), load_entrypoints=False)

    def settings_for(self, sim: Simulator, host: str = "127.0.0.1") -> dict[str, Any]:
        assert sim.tcp_address is not None
        return {"connection": "tcp", "host": host, "port": sim.tcp_address[1], **TERMINAL}

    async def build(self, sim: Simulator, *, policy: dict | None = None) -> None:
        self.setup = await make_setup(
            self.db,
            self.registry,
            primary="getnet",
            backup=self.backup_id,
            policy=FallbackPolicy(**{**POLICY, **(policy or {})}),
            phones=1,
            provider_settings={"getnet": self.settings_for(sim)},
        )

    async def instance(
        self, name: str = "caja-a", *, providers: tuple[str, ...] | None = None, **options: Any
    ) -> Instance:
        instance = Instance(self, name, {**FAST, **options}, providers)
        self.instances.append(instance)
        return await instance.start()

    async def close(self) -> None:
        for instance in reversed(self.instances):
            await instance.close()
        for sim in self.simulators:
            await sim.stop()


# --- what a cashier, a supervisor and an admin do ------------------------------------------------------


async def open_session(cashier: Client, stack: Stack, key: str = "apertura") -> None:
    r = await cashier.post(
        "/caja/session/open", {"register_id": stack.setup.register_id, "initial_cash": "0", "open_key": key}
    )
    assert r.status_code == 303, text_of(r.text)


async def checkout(cashier: Client, stack: Stack, product: str = "Piscola") -> int:
    """A new sale (the cashier starts the next sale first), one product, to the payment screen."""
    r = await cashier.post("/caja/venta/siguiente", htmx=True)
    assert r.status_code in (200, 303), text_of(r.text)
    r = await cashier.post("/caja/venta/item", {"product_id": stack.setup.products[product]}, htmx=True)
    assert r.status_code == 200, text_of(r.text)
    r = await cashier.post("/caja/venta/cobrar", htmx=True)
    assert r.status_code == 200, text_of(r.text)
    return int(re.search(r"/caja/venta/(\d+)/", r.text).group(1))


async def pay_card(cashier: Client, sale_id: int):
    r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    assert r.status_code in (200, 409), text_of(r.text)
    return r


async def progress(cashier: Client, sale_id: int) -> str:
    r = await cashier.get(f"/caja/venta/{sale_id}/pago", htmx=True)
    assert r.status_code == 200, text_of(r.text)
    return r.text


async def wait_for(check, what: str, timeout_s: float = 30.0, every_s: float = 0.2):
    """Poll ``check()`` (async, returns a truthy value when done) against a deadline."""
    return await wait_until(check, timeout_s=timeout_s, what=what, interval_s=every_s)


async def shows(cashier: Client, sale_id: int, marker: str, timeout_s: float = 30.0) -> str:
    last: list[str] = [""]

    async def check():
        page = last[0] = await progress(cashier, sale_id)
        return page if marker in page else None

    try:
        return await wait_for(check, f"{marker!r} on sale {sale_id}", timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the page shows: {text_of(last[0])[:500]}") from None


async def edit_terminal(admin: Client, stack: Stack, **settings: Any) -> None:
    """The admin changes the register's GETNET connection on the register's page and saves it."""
    url = f"/admin/cajas/{stack.setup.register_id}/editar"
    page = (await admin.get(url)).text
    fields = [(k, v) for k, v in form_fields(page, url) if not k.startswith("settings.getnet.")]
    current = {k: v for k, v in form_fields(page, url) if k.startswith("settings.getnet.")}
    for key, value in settings.items():
        current[f"settings.getnet.{key}"] = str(value)
    r = await admin.post(url, [*fields, *current.items()])
    assert r.status_code == 303, text_of(r.text)[:600]


async def set_methods(admin: Client, stack: Stack, methods: list[str], primary: str = "") -> None:
    """The admin changes the register's payment methods (and primary provider) and saves it."""
    url = f"/admin/cajas/{stack.setup.register_id}/editar"
    page = (await admin.get(url)).text
    fields = [(k, v) for k, v in form_fields(page, url) if k not in ("payment_methods", "primary_provider")]
    fields += [("payment_methods", m) for m in methods] + [("primary_provider", primary)]
    r = await admin.post(url, fields)
    assert r.status_code == 303, text_of(r.text)[:600]
