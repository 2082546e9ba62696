import contextlib
import subprocess
import uuid

import pytest

from caja_core.ops.workers import WORKERS
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup


@pytest.fixture(autouse=True)
def clean_worker_registry():
    WORKERS.clear()
    yield
    WORKERS.clear()


async def sell(db, *, sales_count=3):
    """A venue with an open session and ``sales_count`` cash sales (so totals are not zero)."""
    st = await make_setup(db)
    async with db.session() as s:
        session = await sessions.open_session(
            s,
            venue_id=st.venue_id,
            register_id=st.register_id,
            user_id=st.cashier_id,
            initial_cash=20000,
            open_key=str(uuid.uuid4()),
        )
    for n in range(sales_count):
        async with db.session() as s:
            sale = await sales.create_sale(
                s,
                venue_id=st.venue_id,
                session_id=session.id,
                cashier_id=st.cashier_id,
                items=[
                    sales.ItemInput(product_id=st.products["Cerveza"], quantity=n + 1),
                    sales.ItemInput(product_id=st.products["Piscola"], quantity=1),
                ],
                idempotency_key=str(uuid.uuid4()),
            )
            await sales.pay_cash(s, venue_id=st.venue_id, sale_id=sale.id, cash_received=None, user_id=st.cashier_id)
    return st, session


@contextlib.contextmanager
def tmpfs(path, *, size="64k", read_only=False):
    """A real small file system at ``path`` (root, as in CI and on the server): a disk that fills up, or a
    read-only one."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
