"""Hardening found by attacking the app: forged webhooks, anonymous requests, production start-up, CSRF,
CSP and caching of private pages."""

from __future__ import annotations

import pytest
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
