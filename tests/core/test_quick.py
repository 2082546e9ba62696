import uuid

from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup


async def test_cash_sale_round_trip(any_db):
    st = await make_setup(any_db)
    async with any_db.session() as s:
        sess = await sessions.open_session(s, venue_id=st.venue_id, register_id=st.register_id,
                                           user_id=st.cashier_id, initial_cash=10000, open_key="k1")
    async with any_db.session() as s:
        sale = await sales.create_sale(s, venue_id=st.venue_id, session_id=sess.id, cashier_id=st.cashier_id,
                                       items=[sales.ItemInput(product_id=st.products["Cerveza"], quantity=2)],
                                       idempotency_key=str(uuid.uuid4()))
        paid = await sales.pay_cash(s, venue_id=st.venue_id, sale_id=sale.id, cash_received=10000,
                                    user_id=st.cashier_id)
    assert paid.total == 7000 and paid.change_given == 3000
    async with any_db.session() as s:
        res = await sessions.close_session(s, venue_id=st.venue_id, session_id=sess.id, user_id=st.cashier_id,
                                           counted={"10000": 1, "5000": 1, "2000": 1})
    assert res.expected_cash == 17000 and res.difference == 0 and res.status == "closed"
