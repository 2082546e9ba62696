"""A fuzzer over every HTML form of the app: each POST route gets hypothesis-generated values in the fields its
forms (and its form Struct) carry — empty, huge and negative integers, digits that are not ASCII, control
characters, markup, long text and plausible values — as the admin and as a cashier with an open session.

Every answer is below 500, and a refused request (4xx) writes nothing but its trace: the tables of the
domain keep their row counts. At the end each session's running totals still match its sales and movements.
Schemathesis covers the JSON endpoints (tests/scale/test_openapi_fuzz.py)."""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from typing import Any, get_args

import httpx
import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from caja_core.db import Database
from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_core.testing.factories import PASSWORD, PIN, SUPERVISOR_PIN, make_setup
from caja_core.testing.fake import FakeProvider
from caja_web.app import create_app
from caja_web.errors import JSON_PREFIXES

#: Tables a refused request may still write: its trace (audit, throttle), the browser's session, and an
#: authorization given for an action that was then refused.
TRACE_TABLES = {"audit_events", "auth_throttle", "web_sessions", "authorizations", "alembic_version"}
#: Routes that end the fuzzing browser's session (their own tests cover them).
SKIPPED = {"/logout", "/logout/todos"}
#: Requests drawn at random, after the sweep (which sends each bad value of SWEEP to every field once).
EXAMPLES = 150

values = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "2",
            "-1",
            "3500",
            "12.500",
            str(2**31),
            str(2**63),
            str(2**64),
            "9" * 40,
            "-" + "9" * 25,
            "²",
            "٣٠٠٠",
            "１２３",
            "1e9",
            "0x10",
            "nan",
            " 7 ",
            "\x00",
            "\x1b[31m",
            "a\r\nb",
            "<script>alert(1)</script>",
            "'; drop table sales; --",
            "x" * 5000,
            "🍺" * 50,
            PIN,
            SUPERVISOR_PIN,
            PASSWORD,
            "in",
            "out",
            "cashier",
            "supervisor",
            "admin",
            "Cerveza",
            "Motivo de prueba",
            "on",
            "receipt",
        ]
    ),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
path_ids = st.sampled_from(["1", "2", "3", "999", str(2**63), str(2**64), "0"])

#: One bad value per field in the sweep (each class of input that once reached a 500 somewhere).
SWEEP = ["²", str(2**64), "\x00", "x" * 5000]


def plausible(name: str) -> str:
    """A value that passes the field's own checks, so the fuzzed field is the one that decides."""
    if name.startswith("count_"):
        return "1"
    table = {
        "register_id": "1",
        "product_id": "1",
        "category_id": "1",
        "attempt_id": "1",
        "jornada_id": "1",
        "venue_id": "1",
        "user_id": "3",
        "quantity": "1",
        "index": "0",
        "delta": "1",
        "amount": "1000",
        "initial_cash": "1000",
        "cash_received": "",
        "price": "1000",
        "kind": "in",
        "reason": "Motivo de prueba",
        "note": "Nota de prueba larga",
        "description": "Descripción de prueba",
        "supervisor_code": SUPERVISOR_PIN,
        "pin": PIN,
        "password": PASSWORD,
        "username": "admin",
        "role": "cashier",
        "active": "1",
        "open_key": "clave-de-apertura",
        "authorization_code": "AB12CD",
        "last4": "4242",
    }
    return table.get(name, "Valor de prueba")


class FormScraper(HTMLParser):
    """Collects, for each ``<form method=post action=…>``, the names of its fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, set[str]] = {}
        self._current: set[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            action = a.get("action") or a.get("hx-post") or ""
            if (a.get("method") or "").lower() == "post" or a.get("hx-post"):
                self._current = self.forms.setdefault(action.split("?")[0], set())
        elif tag in ("input", "select", "textarea") and self._current is not None and a.get("name"):
            self._current.add(a["name"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def struct_fields(handler: Any) -> set[str]:
    """The fields of a handler's form Struct (``data: Annotated[SomeForm, Body(...)]``)."""
    param = handler.parsed_fn_signature.parameters.get("data")
    if param is None:
        return set()
    for candidate in (param.annotation, *get_args(param.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            return set(candidate.__struct_fields__)
    return set()


class Env:
    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self) -> None:
        self.db = Database(self.url)
        from caja_core.db import migrate

        await migrate.upgrade_async(self.url)
        fakes = (FakeProvider("fake"), FakeProvider("fakebackup"))
        from conftest import ProvidersPlugin

        self.setup = await make_setup(self.db, make_registry_for(fakes))
        settings_ = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": self.url})
        pm = make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False)
        self.app = create_app(settings_, db=self.db, pm=pm)
        self._admin = AsyncTestClient(app=self.app)  # runs the app's lifespan
        # A second browser on the same app (its own cookies), without a second lifespan.
        self._cashier = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver.local"
        )
        from conftest import WebClient

        self.admin = WebClient(await self._admin.__aenter__())
        self.cashier = WebClient(self._cashier)  # type: ignore[arg-type]
        async with self.db.session() as s:
            self.users = [dict(r._mapping) for r in await s.execute(text("select * from users"))]
        await self.log_in()
        self.routes = await self.discover()
        self.last_counts: dict[str, int] | None = None

    async def stop(self) -> None:
        await self._cashier.aclose()
        await self._admin.__aexit__(None, None, None)
        await self.db.dispose()

    async def log_in(self) -> None:
        """Restore the people (a fuzzed form may have changed a password or a role) and log both in again."""
        async with self.db.session() as s:
            await s.execute(text("delete from auth_throttle"))
            for row in self.users:
                await s.execute(
                    text(
                        "update users set role=:role, active=:active, secret_hash=:secret_hash, "
                        "authorization_pin_hash=:authorization_pin_hash, credentials_version=:credentials_version, "
                        "locked_until=null, failed_logins=0 where id=:id"
                    ),
                    row,
                )
        await self.admin.login("admin", venue_id=self.setup.venue_id)
        await self.cashier.login_cashier(self.setup.cashier_id, venue_id=self.setup.venue_id)
        r = await self.cashier.post(
            "/caja/session/open", {"register_id": self.setup.register_id, "initial_cash": "20000", "open_key": "fz"}
        )
        if r.status_code != 303:  # the session is already open: this browser takes it back
            await self.cashier.post("/caja/session/resume", {"register_id": self.setup.register_id})

    async def discover(self) -> list[tuple[str, set[str]]]:
        """(POST route template, field names) of every HTML form route."""
        scraper = FormScraper()
        for route in self.app.routes:
            if "GET" not in getattr(route, "methods", set()) or route.path.startswith(JSON_PREFIXES):
                continue
            path = re.sub(r"\{\w+:int\}", "1", route.path)
            if "{" in path:
                continue
            for client in (self.admin, self.cashier):
                r = await client.get(path)
                if r.status_code == 200 and "text/html" in r.headers.get("content-type", ""):
                    scraper.feed(r.text)
        routes = []
        for route in self.app.routes:
            if "POST" not in getattr(route, "methods", set()) or route.path.startswith(JSON_PREFIXES):
                continue
            if route.path in SKIPPED or route.path.startswith("/boleta"):
                continue
            pattern = re.compile("^" + re.sub(r"\\\{\w+:int\\\}", r"\\d+", re.escape(route.path)) + "$")
            names = {n for action, fields in scraper.forms.items() if pattern.match(action) for n in fields}
            for handler in route.route_handlers:
                names |= struct_fields(handler)
            names.discard("_csrf_token")
            routes.append((route.path, names))
        return routes

    async def counts(self) -> dict[str, int]:
        """Row counts of the domain tables, in one statement."""
        async with self.db.reader() as s:
            if not hasattr(self, "_count_sql"):
                tables = [
                    r[0]
                    for r in await s.execute(text("select name from sqlite_master where type='table'"))
                    if r[0] not in TRACE_TABLES and not r[0].startswith("sqlite_")
                ]
                self._count_sql = text(" union all ".join(f"select '{t}', count(*) from \"{t}\"" for t in tables))
            return dict((await s.execute(self._count_sql)).all())

    async def post(self, template: str, ids: list[str], form: dict[str, str], as_cashier: bool) -> None:
        path = template
        for value in ids:
            path = re.sub(r"\{\w+:int\}", value, path, count=1)
        client = self.cashier if as_cashier else self.admin
        before = self.last_counts if self.last_counts is not None else await self.counts()
        r = await client.post(path, form, htmx=bool(len(form) % 2))
        self.last_counts = None
        assert r.status_code < 500, (path, form, r.status_code, r.text[:500])
        assert "Traceback" not in r.text
        if 400 <= r.status_code < 500:
            after = self.last_counts = await self.counts()
            changed = {t: (before[t], after[t]) for t in before if before[t] != after.get(t)}
            assert not changed, ("a refused form wrote rows", path, form, r.status_code, changed)
        if (
            r.status_code in (303, 200) and r.headers.get("location", r.headers.get("hx-redirect")) == "/login"
        ) or template.startswith("/admin/usuarios"):
            await self.log_in()

    async def totals_match(self) -> None:
        """Each session's running totals equal what its sales and movements say."""
        async with self.db.session() as s:
            rows = await s.execute(
                text(
                    "select c.id, c.cash_sales_total, c.cash_in_total, c.cash_out_total, "
                    "(select coalesce(sum(total), 0) from sales where session_id = c.id and status = 'paid' "
                    " and payment_method = 'cash' and no_revenue = 0), "
                    "(select coalesce(sum(amount), 0) from cash_movements where session_id = c.id and kind = 'in'), "
                    "(select coalesce(sum(amount), 0) from cash_movements where session_id = c.id and kind = 'out') "
                    "from cash_sessions c"
                )
            )
            for sid, cash, cash_in, cash_out, sold, moved_in, moved_out in rows:
                assert (cash, cash_in, cash_out) == (sold, moved_in, moved_out), sid


def make_registry_for(fakes: tuple[FakeProvider, ...]):
    from caja_core.testing.factories import make_registry

    return make_registry(*fakes)


def test_every_html_form_answers_below_500_and_a_refusal_writes_nothing(tmp_path):
    loop = asyncio.new_event_loop()
    env = Env(f"sqlite:///{tmp_path / 'fuzz.db'}")
    loop.run_until_complete(env.start())
    try:
        routes = env.routes
        assert len(routes) >= 40, [r for r, _ in routes]
        seen: set[str] = set()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=(Phase.generate,),  # the database keeps what earlier examples did: report, never shrink
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def one_request(data: st.DataObject) -> None:
            template, names = data.draw(st.sampled_from(routes))
            seen.add(template)
            ids = [data.draw(path_ids) for _ in re.findall(r"\{\w+:int\}", template)]
            form = {name: plausible(name) for name in names}
            for name in sorted(names):  # each field: plausible, absent, or a drawn value
                choice = data.draw(st.sampled_from(("plausible", "absent", "drawn", "drawn")))
                if choice == "absent":
                    form.pop(name)
                elif choice == "drawn":
                    form[name] = data.draw(values)
            as_cashier = template.startswith("/caja") and data.draw(st.booleans())
            loop.run_until_complete(env.post(template, ids, form, as_cashier))

        one_request()

        # The sweep: every field of every form gets each bad value once, the other fields plausible.
        async def sweep() -> None:
            for template, names in routes:
                ids = ["1" for _ in re.findall(r"\{\w+:int\}", template)]
                seen.add(template)
                await env.post(template, ids, {n: plausible(n) for n in names}, template.startswith("/caja"))
                for name in sorted(names):
                    for bad in SWEEP:
                        form = {n: plausible(n) for n in names} | {name: bad}
                        await env.post(template, ids, form, as_cashier=template.startswith("/caja"))

        loop.run_until_complete(sweep())
        loop.run_until_complete(env.totals_match())
        assert seen == {r for r, _ in routes}
    finally:
        loop.run_until_complete(env.stop())
        loop.close()
