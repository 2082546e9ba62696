import uuid

import pytest

from caja_core.printing import PrinterRegistry, PrintService
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup
from caja_core.testing.fake_printer import FakeNetworkPrinter

SECRET = "s" * 40


@pytest.fixture
async def setup(any_db):
    return await make_setup(any_db)


@pytest.fixture
def printer():
    with FakeNetworkPrinter() as p:
        yield p


@pytest.fixture
async def service(any_db):
    svc = PrintService(
        any_db,
        PrinterRegistry.builtin(),
        secret_key=SECRET,
        public_url="http://caja.local",
        provider_names={"fake": "TERMINAL"},
    )
    yield svc
    await svc.stop()


async def open_session(db, st):
    async with db.session() as s:
        return await sessions.open_session(
            s,
            venue_id=st.venue_id,
            register_id=st.register_id,
            user_id=st.cashier_id,
            initial_cash=10000,
            open_key=str(uuid.uuid4()),
        )


async def paid_cash_sale(db, st, session_id, items=None, received=None):
    items = items or [sales.ItemInput(product_id=st.products["Cerveza"], quantity=2)]
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session_id,
            cashier_id=st.cashier_id,
            items=items,
            idempotency_key=str(uuid.uuid4()),
        )
    async with db.session() as s:
        return await sales.pay_cash(
            s, venue_id=st.venue_id, sale_id=sale.id, cash_received=received, user_id=st.cashier_id
        )


def network_config(printer, **extra):
    return {"printer": "escpos_network", "name": "Epson barra", "settings": printer.settings, **extra}
