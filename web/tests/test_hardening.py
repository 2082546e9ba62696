"""Hardening found by attacking the app: forged webhooks, anonymous requests, production start-up, CSRF,
CSP and caching of private pages."""

from __future__ import annotations

import re

import pytest
from conftest import WebClient
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from caja_core.payments import webhooks


async def count(db, table: str) -> int:
    async with db.session() as s:
        return (await s.execute(text(f"select count(*) from {table}"))).scalar() or 0


@pytest.fixture
def fresh_webhook_limit():
    webhooks._forged.clear()
    yield
    webhooks._forged.clear()


async def test_a_flood_of_forged_webhooks_leaves_a_bounded_trace_and_no_incident(
    client, sqlite_db, fresh_webhook_limit
):
    """Found: each forged webhook wrote two rows, and with a real attempt id an incident."""
    before_audit, before_incidents = await count(sqlite_db, "audit_events"), await count(sqlite_db, "incidents")
    for n in range(100):
        body = {"order_id": f"X-{n}", "reference_id": str(900000 + n), "amount": 1000, "last_digits": "1111"}
        r = await client.post("/webhooks/fakebackup", json=body, csrf=False)
        assert 400 <= r.status_code < 500
    for n in range(100):
        body = {"order_id": f"K-{n}", "reference_id": str(900000 + n), "amount": 1000, "last_digits": "1111"}
        r = await client.post("/webhooks/klap", json=body, csrf=False)
        assert 400 <= r.status_code < 500
    assert 0 < await count(sqlite_db, "webhook_events") <= webhooks.FORGED_ROWS_PER_MINUTE
    assert await count(sqlite_db, "audit_events") == before_audit
    assert await count(sqlite_db, "incidents") == before_incidents


async def row_counts(db) -> dict[str, int]:
    """Rows of every table but the process heartbeats (the instance's own clock writes those)."""
    async with db.session() as s:
        names = (await s.execute(text("select name from sqlite_master where type = 'table'"))).scalars().all()
        return {
            name: (await s.execute(text(f'select count(*) from "{name}"'))).scalar() or 0
            for name in names
            if name != "ops_processes"
        }


async def test_anonymous_visits_write_nothing(client, setup, sqlite_db):
    """Found: each GET /login wrote a web session row, so anyone could fill the table."""
    before = await row_counts(sqlite_db)
    paths = ["/login", f"/login/pin/{setup.cashier_id}", "/", "/admin/", "/caja/", "/jornada", "/no-existe", "/health"]
    for _ in range(3):
        for path in paths:
            r = await client.get(path, follow_redirects=False)
            assert r.status_code < 500, path
            assert not any(v.startswith("caja_session=") for k, v in r.headers.multi_items() if k == "set-cookie")
    assert await row_counts(sqlite_db) == before
    await client.login("admin", venue_id=setup.venue_id)  # logging in still works from such a page
    assert (await client.get("/admin/")).status_code == 200


async def test_private_pages_and_exports_are_never_cached(admin, setup):
    """Found: admin pages and the CSV export carried no ``Cache-Control: no-store``."""
    for path in ["/admin/", "/jornada", "/admin/usuarios", f"/admin/cajas/reportes/jornada/{setup.jornada_id}/csv"]:
        r = await admin.get(path)
        assert r.status_code == 200, path
        assert r.headers.get_list("cache-control") == ["no-store"], path
    static = await admin.get("/static/js/caja.js")
    assert static.status_code == 200 and "no-store" not in static.headers["cache-control"]


async def test_pages_allow_only_the_apps_own_script_files(client, setup):
    """Found: no Content-Security-Policy. Pages run scripts from the app's files only: no inline script, no
    event-handler attribute, no ``eval`` (htmx trigger filters evaluate code)."""
    r = await client.get("/login")
    policy = dict(
        part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";") if part.strip()
    )
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    from caja_web.app import TEMPLATES

    inline = re.compile(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=|javascript:|hx-on|hx-trigger=\"[^\"]*\[", re.I)
    offenders = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for match in inline.finditer(path.read_text())
    ]
    assert offenders == []


def plant(client: AsyncTestClient, token: str) -> str:
    """Put ``token`` in the client's CSRF cookie (as another site could); returns the one it replaced."""
    cookie = next(c for c in client.cookies.jar if c.name == "caja_csrf")
    client.cookies.delete("caja_csrf")
    client.cookies.set("caja_csrf", token, domain=cookie.domain, path=cookie.path)
    return cookie.value or ""


async def test_a_csrf_token_is_good_only_in_the_session_it_was_given_to(app, setup):
    """Found: the CSRF token was not bound to the session: a token (and cookie) from any visit passed the check in
    any other session, so a cookie planted by a neighbouring site made a form post go through."""
    async with AsyncTestClient(app=app) as a, AsyncTestClient(app=app) as b:
        first, second = WebClient(a), WebClient(b)
        await first.get("/login")
        anonymous_token = a.cookies.get("caja_csrf")
        await first.login("admin", venue_id=setup.venue_id)
        assert a.cookies.get("caja_csrf") != anonymous_token  # the login handed out a token for the new session
        await second.login("super", venue_id=setup.venue_id)
        admins_token = a.cookies.get("caja_csrf")

        seconds_token = plant(b, admins_token)  # another session's valid token, cookie and field alike
        r = await b.post("/jornada/abrir", headers={"x-csrftoken": admins_token})
        assert r.status_code == 403
        plant(b, seconds_token)
        plant(a, anonymous_token)  # the token from before the login
        r = await a.post("/logout/todos", headers={"x-csrftoken": anonymous_token})
        assert r.status_code == 403
        assert (await first.get("/admin/")).status_code == 200  # a page hands out a token for this session
        assert a.cookies.get("caja_csrf") not in (anonymous_token, admins_token)
        r = await second.post("/jornada/abrir")
        assert r.status_code == 409 and "Ya hay una jornada abierta" in r.text  # b's own token passes the check
        r = await first.post("/logout")
        assert r.status_code == 303 and a.cookies.get("caja_csrf")
        await first.login("admin", venue_id=setup.venue_id)  # and the token after the logout logs in again
