"""Discounts: on a line or on the sale, percent or amount, with a reason; above the venue's limit only with a
supervisor's authorization; whole pesos; counted in the session, the reports and the blind close."""

import uuid

import pytest

from caja_core.errors import Conflict, ValidationFailed
from caja_core.permissions import Action
from caja_core.permissions.service import SupervisorRequired, authorize, set_controls
from caja_core.reports import service as reports
from caja_core.sales import discounts
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN

from .conftest import open_session


async def ring(db, st, session_id, *lines):
    """A sale waiting for payment: ``lines`` are (product name, quantity) or (free amount, reason)."""
    items = [
        sales.ItemInput(product_id=st.products[a], quantity=b)
        if isinstance(a, str)
        else sales.ItemInput(name="Libre", unit_price=a, free_reason=b)
        for a, b in lines
    ]
    async with db.session() as s:
        return await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session_id,
            cashier_id=st.cashier_id,
            items=items,
            idempotency_key=str(uuid.uuid4()),
        )


async def discount(db, st, sale_id, kind, value, *, line=None, reason="Cliente frecuente", grant=None):
    async with db.session() as s:
        return await discounts.apply_discount(
            s,
            venue_id=st.venue_id,
            sale_id=sale_id,
            user_id=st.cashier_id,
            kind=kind,
            value=value,
            reason=reason,
            line=line,
            authorization_id=grant,
        )


async def pay_cash(db, st, sale_id, received=None):
    async with db.session() as s:
        return await sales.pay_cash(
            s, venue_id=st.venue_id, sale_id=sale_id, cash_received=received, user_id=st.cashier_id
        )


def test_percents_are_whole_pesos_rounded_half_up():
    assert discounts.percent_of(3550, 10) == 355
    assert discounts.percent_of(3330, 15) == 500  # 499,5
    assert discounts.percent_of(3329, 15) == 499  # 499,35
    assert discounts.percent_of(6000, 100) == 6000


async def test_a_line_discount_and_a_sale_discount_make_the_total(any_db, setup):
    sess = await open_session(any_db, setup)
    sale = await ring(any_db, setup, sess.id, ("Cerveza", 2), ("Agua", 1), (3330, "Descorche"))
    assert sale.total == 7000 + 2000 + 3330
    sale = await discount(any_db, setup, sale.id, "percent", "15", line=3, reason="Happy hour")
    assert sale.items[2].discount == 500 and sale.total == 12330 - 500
    sale = await discount(any_db, setup, sale.id, "amount", "$1.000", reason="Cumpleaños")
    assert sale.total == 12330 - 500 - 1000 and sale.discount_total == 1500 and sale.list_total == 12330
    assert [(d.line, d.kind, d.value, d.amount, d.reason) for d in sale.discounts] == [
        (3, "percent", 15, 500, "Happy hour"),
        (None, "amount", 1000, 1000, "Cumpleaños"),
    ]
    # A second discount on the same line replaces the first; the sale's percent follows the lines.
    sale = await discount(any_db, setup, sale.id, "percent", "10", reason="Socio")
    assert sale.discount_total == 500 + 1183  # 10 % of $11.830, half up
    sale = await discount(any_db, setup, sale.id, "amount", "333", line=3, reason="Happy hour")
    assert sale.items[2].discount == 333 and sale.discount_total == 333 + 1200  # 10 % of $11.997
    assert sale.total == 12330 - 1533
    async with any_db.session() as s:  # taken back: the total goes up again
        whole = next(d for d in sale.discounts if d.line is None)
        sale = await discounts.remove_discount(
            s, venue_id=setup.venue_id, sale_id=sale.id, discount_id=whole.id, user_id=setup.cashier_id
        )
    assert sale.total == 12330 - 333 and sale.discount_total == 333


@pytest.mark.parametrize(
    "kind,value,line,reason,field",
    [
        ("percent", "0", None, "Motivo", "discount_value"),
        ("percent", "101", None, "Motivo", "discount_value"),
        ("percent", "12,5", None, "Motivo", "discount_value"),
        ("amount", "-5", None, "Motivo", "discount_value"),
        ("amount", "3501", 1, "Motivo", "discount_value"),  # more than the line
        ("amount", "5500", None, "Motivo", "discount_value"),  # more than the sale
        ("percent", "100", None, "Motivo", "discount_value"),  # the sale at $0
        ("percent", "10", 9, "Motivo", "discount_line"),
        ("percent", "10", None, "", "discount_reason"),
        ("gratis", "10", None, "Motivo", "discount_kind"),
    ],
)
async def test_bad_discounts_are_refused_and_change_nothing(any_db, setup, kind, value, line, reason, field):
    sess = await open_session(any_db, setup)
    sale = await ring(any_db, setup, sess.id, ("Cerveza", 1), ("Agua", 1))
    with pytest.raises(ValidationFailed) as err:
        await discount(any_db, setup, sale.id, kind, value, line=line, reason=reason)
    assert field in err.value.fields
    async with any_db.session() as s:
        again = await sales.get_sale(s, setup.venue_id, sale.id)
    assert again.total == 5500 and again.discount_total == 0 and again.discounts == []
    assert [i.discount for i in again.items] == [0, 0]


async def test_above_the_venue_limit_a_supervisor_authorizes(any_db, setup):
    sess = await open_session(any_db, setup)
    async with any_db.session() as s:
        await set_controls(s, setup.venue_id, actor_id=setup.admin_id, discount_limit=2000)
    sale = await ring(any_db, setup, sess.id, ("Piscola", 2))
    sale = await discount(any_db, setup, sale.id, "amount", "1500", line=1)  # alone: within the limit
    with pytest.raises(SupervisorRequired):  # both together go over it
        await discount(any_db, setup, sale.id, "percent", "10")
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.DISCOUNT,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        sale_id=sale.id,
    )
    sale = await discount(any_db, setup, sale.id, "percent", "10", reason="Reclamo: trago mal servido", grant=grant)
    assert sale.discount_total == 1500 + 1050 and sale.total == 12000 - 2550
    whole = next(d for d in sale.discounts if d.line is None)
    assert whole.authorized_by == setup.supervisor_id and whole.user_id == setup.cashier_id
    with pytest.raises(SupervisorRequired):  # the authorization is used up
        await discount(any_db, setup, sale.id, "percent", "11", grant=grant)


async def test_a_paid_sale_keeps_its_total(any_db, setup):
    sess = await open_session(any_db, setup)
    sale = await ring(any_db, setup, sess.id, ("Cerveza", 1))
    await pay_cash(any_db, setup, sale.id)
    with pytest.raises(Conflict):
        await discount(any_db, setup, sale.id, "percent", "10")


async def test_discounts_in_the_session_the_reports_and_a_balanced_blind_close(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=10000)
    first = await ring(any_db, setup, sess.id, ("Cerveza", 2), ("Agua", 1))  # $9.000
    first = await discount(any_db, setup, first.id, "percent", "10", line=1, reason="Happy hour")  # −$700
    await pay_cash(any_db, setup, first.id, received="10000")
    second = await ring(any_db, setup, sess.id, ("Piscola", 1))
    second = await discount(any_db, setup, second.id, "amount", "500", reason="Cliente frecuente")
    await pay_cash(any_db, setup, second.id)
    untouched = await ring(any_db, setup, sess.id, ("Agua", 1))
    await pay_cash(any_db, setup, untouched.id)
    voided = await ring(any_db, setup, sess.id, ("Agua", 1))  # discounted, never paid: counts nowhere
    await discount(any_db, setup, voided.id, "amount", "100", reason="Prueba")

    async with any_db.session() as s:
        session = await sessions.get_session(s, setup.venue_id, sess.id)
        report = await reports.session_report(s, setup.venue_id, sess.id)
    assert session.sales_total == 8300 + 5500 + 2000
    assert (session.discount_count, session.discount_total) == (2, 1200)
    assert [(d.sale_id, d.item_name, d.amount, d.reason, d.by, d.authorized_by) for d in report.controls.discounts] == [
        (first.id, "Cerveza", 700, "Happy hour", "Cajera", None),
        (second.id, None, 500, "Cliente frecuente", "Cajera", None),
    ]
    cashier = report.controls.cashiers[0]
    assert (cashier.discount_count, cashier.discount_total, cashier.sales_total) == (2, 1200, 15800)

    async with any_db.session() as s:  # the drawer holds the discounted prices: the blind close balances
        result = await sessions.close_session(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            user_id=setup.cashier_id,
            counted={"20000": 1, "5000": 1, "100": 8},
        )
    assert (result.expected_cash, result.counted_cash, result.difference) == (25800, 25800, 0)
    async with any_db.session() as s:
        jornada = await reports.jornada_report(s, setup.venue_id, setup.jornada_id)
    assert (jornada.totals["discount_count"], jornada.totals["discount_total"]) == (2, 1200)
    assert len(jornada.controls.discounts) == 2
