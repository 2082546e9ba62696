"""One unit of work per request: a POS page is read in one transaction, and each step of a cash sale (tap,
«Cobrar», the pay screen's refresh, «Efectivo», a refused «Efectivo») is one transaction."""

import contextlib
import re
import traceback

from sqlalchemy import event
from webkit import cart_version, text_of

from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.testing.fake import Step


class Transactions:
    """Counts the transactions the POS's handlers open on the database (not the login guard's read, the CSRF
    check's or the session store's, which are not the page's, nor the orchestrator's background work)."""

    HANDLER = ("caja_web/pos/", "caja_web/context.py", "caja_web/units.py")

    def __init__(self, monkeypatch, db) -> None:
        self.opened: list[str] = []
        for name in ("session", "reader"):
            opener = getattr(db, name)
            monkeypatch.setattr(db, name, self._counting(opener))

    def _counting(self, opener):
        @contextlib.asynccontextmanager
        async def counted(*args, **kwargs):
            callers = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-3]]
            if any(part in c for c in callers for part in self.HANDLER):
                self.opened.append(next(c for c in reversed(callers) if "caja_web" in c))
            async with opener(*args, **kwargs) as s:
                yield s

        return counted

    async def of(self, request) -> int:
        self.opened = []
        await request
        return len(self.opened)


async def test_each_pos_step_of_a_cash_sale_is_one_transaction(cashier, setup, sqlite_db, monkeypatch):
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "u1"}
    )
    assert r.status_code == 303
    tx = Transactions(monkeypatch, sqlite_db)
    responses = {}

    async def step(name, method, url, data=None):
        async def go():
            if method == "get":
                responses[name] = await cashier.get(url)
            else:
                responses[name] = await cashier.post(url, data or {}, htmx=True)

        return await tx.of(go())

    counts = {"screen": await step("screen", "get", "/caja/venta")}
    counts["tap"] = await step("tap", "post", "/caja/venta/item", {"product_id": setup.products["Cerveza"]})
    version = cart_version(responses["tap"].text)
    counts["checkout"] = await step("checkout", "post", "/caja/venta/cobrar", {"v": version})
    sale_id = int(re.search(r"/caja/venta/(\d+)/efectivo", responses["checkout"].text).group(1))
    counts["progress"] = await step("progress", "get", f"/caja/venta/{sale_id}/pago")
    counts["refused"] = await step("refused", "post", f"/caja/venta/{sale_id}/efectivo", {"cash_received": "1.000"})
    assert "menor que el total" in text_of(responses["refused"].text)
    counts["pay"] = await step("pay", "post", f"/caja/venta/{sale_id}/efectivo", {"cash_received": ""})
    assert "PAGADO" in responses["pay"].text

    assert counts == dict.fromkeys(counts, 1), (counts, tx.opened)
    async with sqlite_db.session() as s:
        sale = await sales.get_sale(s, setup.venue_id, sale_id)
    assert sale.status == "paid" and sale.cash_received == sale.total


async def test_the_refresh_of_a_card_payment_in_flight_is_one_statement_and_no_transaction(
    cashier, setup, sqlite_db, fakes, monkeypatch
):
    """The panel every register refreshes each second while its card payment waits on the terminal reads the sale
    and its payment in one statement of its own (sale, register, attempts, the device's breaker and lease): no
    transaction is opened for it, and the page shows the payment in flight."""
    fakes[0].script("charge", Step(kind=OutcomeKind.APPROVED, hang=True))
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "u2"}
    )
    assert r.status_code == 303
    r = await cashier.post("/caja/venta/item", {"product_id": setup.products["Cerveza"]}, htmx=True)
    r = await cashier.post("/caja/venta/cobrar", {"v": cart_version(r.text)}, htmx=True)
    sale_id = int(re.search(r"/caja/venta/(\d+)/efectivo", r.text).group(1))
    r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    assert r.status_code == 200 and 'id="progress"' in r.text, text_of(r.text)

    tx = Transactions(monkeypatch, sqlite_db)
    connections, statements = [], []
    autocommit = sqlite_db.autocommit

    @contextlib.asynccontextmanager
    async def watched():
        async with autocommit() as conn:
            connections.append(conn.sync_connection)
            yield conn

    def count(conn, _cursor, sql, *_args) -> None:
        statements.append((conn, sql))

    monkeypatch.setattr(sqlite_db, "autocommit", watched)
    event.listen(sqlite_db.engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            assert await tx.of(cashier.get(f"/caja/venta/{sale_id}/pago", htmx=True)) == 0, tx.opened
            connections.clear()
            statements.clear()
            r = await cashier.get(f"/caja/venta/{sale_id}/pago", htmx=True)
            assert r.status_code == 200 and 'id="progress"' in r.text and "<html" not in r.text
            assert f"Venta #{sale_id}" in r.text and 'hx-trigger="every 1s"' in r.text
            # besides the guard's and the session store's reads, one connection read the payment: one statement
            reads = [c for c in connections if any(c is on and "payment_attempts" in sql for on, sql in statements)]
            assert len(reads) == 1, statements
            assert [sql for on, sql in statements if on is reads[0]] == [
                next(sql for on, sql in statements if "payment_attempts" in sql and on is reads[0])
            ]
    finally:
        event.remove(sqlite_db.engine.sync_engine, "before_cursor_execute", count)
    r = await cashier.post(f"/caja/venta/{sale_id}/cancelar-pago", htmx=True)
    assert r.status_code == 200
