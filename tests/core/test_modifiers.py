"""Modifiers ("doble", "sin hielo"): defined per product or category with a price in whole CLP (or none), priced
by the server from the catalogue when the sale is made, recorded on the sale's line as they were then, counted
in the product's figures; anything the product does not offer refuses the sale in Spanish."""

import uuid

import pytest
from sqlalchemy import text

from caja_core.catalog import service as catalog
from caja_core.dashboard import service as dashboard
from caja_core.errors import Conflict, NotFound, ValidationFailed
from caja_core.sales import service as sales
from caja_core.sales.mix import modifier_mix
from caja_core.testing.factories import make_setup

from .conftest import cash_sale, open_session


async def add_modifier(db, st, name, price, *, product=None, category=None):
    async with db.session() as s:
        return await catalog.create_modifier(
            s,
            venue_id=st.venue_id,
            name=name,
            price_delta=price,
            product_id=st.products[product] if product else None,
            category_id=category,
            actor_id=st.admin_id,
        )


async def test_a_sale_line_is_priced_with_its_modifiers_and_records_them_as_sold(any_db, setup):
    st = setup
    doble = await add_modifier(any_db, st, "Doble", "2.000", product="Piscola")
    hielo = await add_modifier(any_db, st, "Sin hielo", "", category=st.category_id)  # sin costo, whole category
    session = await open_session(any_db, st)
    sale = await cash_sale(
        any_db,
        st,
        session.id,
        [
            sales.ItemInput(product_id=st.products["Piscola"], quantity=2, modifier_ids=[doble.id, hielo.id]),
            sales.ItemInput(product_id=st.products["Agua"], quantity=1, modifier_ids=[hielo.id]),
            sales.ItemInput(product_id=st.products["Cerveza"], quantity=1),
        ],
    )
    piscola, agua, cerveza = sale.items
    async with any_db.session() as s:  # a line without modifiers holds SQL NULL: a downgrade loses nothing there
        stored = (await s.execute(text("SELECT modifiers IS NULL FROM sale_items ORDER BY id"))).scalars().all()
    assert [bool(x) for x in stored] == [False, False, True]
    assert (piscola.unit_price, piscola.line_total) == (8000, 16000)
    assert [(m.name, m.price) for m in piscola.modifiers] == [("Doble", 2000), ("Sin hielo", 0)]
    assert (agua.unit_price, [m.name for m in agua.modifiers]) == (2000, ["Sin hielo"])
    assert cerveza.modifiers == []
    assert sale.total == 16000 + 2000 + 3500

    # Later the modifier is withdrawn and a dearer one created: the sale keeps what it was sold with.
    async with any_db.session() as s:
        await catalog.set_modifier_active(s, venue_id=st.venue_id, modifier_id=doble.id, active=False)
    await add_modifier(any_db, st, "Doble", 2500, product="Piscola")
    async with any_db.session() as s:
        again = await sales.get_sale(s, st.venue_id, sale.id)
        figures = await dashboard.session_figures(s, st.venue_id, session.id)
    assert [(m.name, m.price) for m in again.items[0].modifiers] == [("Doble", 2000), ("Sin hielo", 0)]
    # The product mix counts the Piscolas at what they were sold for, modifiers included.
    mix = {line.name: (line.units, line.amount) for line in figures.products}
    assert mix["Piscola"] == (2, 16000) and mix["Agua"] == (1, 2000)
    async with any_db.session() as s:
        sold = await modifier_mix(s, st.venue_id, session_id=session.id)
        same = await modifier_mix(s, st.venue_id, jornada_id=session.jornada_id)
    assert [(m.name, m.units, m.amount) for m in sold] == [("Sin hielo", 3, 0), ("Doble", 2, 4000)]
    assert same == sold


@pytest.mark.parametrize(
    "which,message",
    [
        ("other_product", "Agua: ese modificador no existe o no se ofrece para este producto"),
        ("inactive", "Piscola: el modificador «Doble» ya no se ofrece"),
        ("other_venue", "Piscola: ese modificador no existe o no se ofrece para este producto"),
        ("repeated", "repetidos"),
        ("free_line", "monto libre no lleva modificadores"),
    ],
)
async def test_a_modifier_the_product_does_not_offer_refuses_the_sale(sqlite_db, which, message):
    st = await make_setup(sqlite_db)
    doble = await add_modifier(sqlite_db, st, "Doble", 2000, product="Piscola")
    other = await make_setup(sqlite_db, slug="otro")
    foreign = await add_modifier(sqlite_db, other, "Doble", 0, product="Piscola")
    session = await open_session(sqlite_db, st)
    item = sales.ItemInput(product_id=st.products["Piscola"], modifier_ids=[doble.id])
    if which == "other_product":
        item = sales.ItemInput(product_id=st.products["Agua"], modifier_ids=[doble.id])
    elif which == "inactive":
        async with sqlite_db.session() as s:
            await catalog.set_modifier_active(s, venue_id=st.venue_id, modifier_id=doble.id, active=False)
    elif which == "other_venue":
        item = sales.ItemInput(product_id=st.products["Piscola"], modifier_ids=[foreign.id])
    elif which == "repeated":
        item = sales.ItemInput(product_id=st.products["Piscola"], modifier_ids=[doble.id, doble.id])
    elif which == "free_line":
        item = sales.ItemInput(name="Libre", unit_price=1000, free_reason="Corcho", modifier_ids=[doble.id])
    with pytest.raises(ValidationFailed) as refused:
        async with sqlite_db.session() as s:
            await sales.create_sale(
                s,
                venue_id=st.venue_id,
                session_id=session.id,
                cashier_id=st.cashier_id,
                items=[item],
                idempotency_key=str(uuid.uuid4()),
            )
    assert message in str(refused.value)
    async with sqlite_db.session() as s:
        assert await sales.list_sales(s, st.venue_id) == []


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"name": "", "price_delta": 0, "product": "Piscola"}, ValidationFailed, "nombre del modificador"),
        ({"name": "x" * 61, "price_delta": 0, "product": "Piscola"}, ValidationFailed, "máximo 60"),
        ({"name": "Doble", "price_delta": "-500", "product": "Piscola"}, ValidationFailed, "precio del modificador"),
        ({"name": "Doble", "price_delta": "1,5", "product": "Piscola"}, ValidationFailed, "sin decimales"),
        ({"name": "Doble", "price_delta": 0}, ValidationFailed, "producto o una categoría"),
    ],
)
async def test_bad_modifiers_are_refused_in_spanish(sqlite_db, kwargs, error, message):
    st = await make_setup(sqlite_db)
    with pytest.raises(error) as refused:
        await add_modifier(sqlite_db, st, kwargs["name"], kwargs["price_delta"], product=kwargs.get("product"))
    assert message in str(refused.value)
    async with sqlite_db.session() as s:
        assert await catalog.list_modifiers(s, st.venue_id) == []


async def test_the_same_modifier_twice_and_another_venues_product(sqlite_db):
    st = await make_setup(sqlite_db)
    other = await make_setup(sqlite_db, slug="otro")
    await add_modifier(sqlite_db, st, "Doble", 2000, product="Piscola")
    with pytest.raises(Conflict):
        await add_modifier(sqlite_db, st, "Doble", 1000, product="Piscola")
    with pytest.raises(NotFound):
        async with sqlite_db.session() as s:
            await catalog.create_modifier(
                s, venue_id=st.venue_id, name="Doble", price_delta=0, product_id=other.products["Piscola"]
            )


async def test_the_modifier_mix_takes_a_discount_on_the_whole_sale_like_the_product_mix(any_db, setup):
    """What a modifier added counts net of the sale's discounts, split like the product mix splits them: the
    line's part of the discount on the whole sale, then the line's reduction across its product and modifiers."""
    from caja_core.sales import discounts

    st = setup
    doble = await add_modifier(any_db, st, "Doble", "2.000", product="Piscola")
    hielo = await add_modifier(any_db, st, "Sin hielo", "", category=st.category_id)
    session = await open_session(any_db, st)
    async with any_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session.id,
            cashier_id=st.cashier_id,
            items=[
                sales.ItemInput(product_id=st.products["Piscola"], quantity=2, modifier_ids=[doble.id, hielo.id]),
                sales.ItemInput(product_id=st.products["Cerveza"], quantity=1),
            ],
            idempotency_key=str(uuid.uuid4()),
        )
        # 16.000 + 3.500 = 19.500; a 10% discount on the whole sale takes 1.950 off.
        who = {"venue_id": st.venue_id, "sale_id": sale.id, "user_id": st.cashier_id}
        sale = await discounts.apply_discount(s, **who, kind="percent", value=10, reason="cliente frecuente")
        await sales.pay_cash(s, venue_id=st.venue_id, sale_id=sale.id, cash_received=None, user_id=st.cashier_id)
    assert sale.total == 17550
    async with any_db.session() as s:
        figures = await dashboard.session_figures(s, st.venue_id, session.id)
        sold = await modifier_mix(s, st.venue_id, session_id=session.id)
    products = {line.name: line.amount for line in figures.products}
    assert products == {"Piscola": 14400, "Cerveza": 3150}
    # The Piscola line keeps 14.400 of its 16.000: its two "Doble" (4.000) keep 3.600.
    assert [(m.name, m.units, m.amount) for m in sold] == [("Doble", 2, 3600), ("Sin hielo", 2, 0)]


async def test_a_required_group_must_be_chosen_once_and_a_group_allows_one(sqlite_db):
    st = await make_setup(sqlite_db)
    piscola = st.products["Piscola"]

    async def group(name, price, required=False):
        async with sqlite_db.session() as s:
            return await catalog.create_modifier(
                s,
                venue_id=st.venue_id,
                name=name,
                price_delta=price,
                product_id=piscola,
                group_name="Tamaño",
                required=required,
            )

    simple = await group("Simple", 0, required=True)
    doble = await group("Doble", 2000)  # joins a required group: required too
    hielo = await add_modifier(sqlite_db, st, "Sin hielo", 0, product="Piscola")
    assert doble.required and doble.group_name == "Tamaño"
    session = await open_session(sqlite_db, st)

    async def sell(*ids, product=piscola):
        return await cash_sale(
            sqlite_db,
            st,
            session.id,
            [sales.ItemInput(product_id=product, modifier_ids=list(ids))],
            key=uuid.uuid4().hex,
        )

    for ids, message in [
        ((), "Elija Tamaño para Piscola: Simple o Doble."),
        ((hielo.id,), "Elija Tamaño para Piscola: Simple o Doble."),
        ((simple.id, doble.id), "Piscola: elija solo uno de Tamaño (Simple o Doble)."),
    ]:
        with pytest.raises(ValidationFailed) as refused:
            await sell(*ids)
        assert str(refused.value) == message
    sale = await sell(doble.id, hielo.id)
    assert sale.total == 8000 and [m.name for m in sale.items[0].modifiers] == ["Doble", "Sin hielo"]
    assert (await sell(product=st.products["Agua"])).total == 2000  # another product: nothing to choose

    # The admin makes the group optional: a plain Piscola sells again; one of the group at most, still.
    async with sqlite_db.session() as s:
        await catalog.set_group_required(s, venue_id=st.venue_id, modifier_id=simple.id, required=False)
    assert (await sell()).total == 6000
    with pytest.raises(ValidationFailed, match="elija solo uno de Tamaño"):
        await sell(simple.id, doble.id)
    with pytest.raises(ValidationFailed, match="necesita un grupo"):
        async with sqlite_db.session() as s:
            await catalog.create_modifier(
                s, venue_id=st.venue_id, name="Grande", price_delta=0, product_id=piscola, required=True
            )
