"""The discount form through the test client: bad input is a Spanish 4xx that changes nothing, another venue's
sale is not found, and a card payment in flight fixes the total."""

import pytest
from test_pos import checkout, open_session
from webkit import text_of

from caja_core.providers import OutcomeKind
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import Step


@pytest.mark.parametrize(
    "form,message",
    [
        ({"kind": "percent", "value": "150", "reason": "Socio"}, "entre 1 y 100"),
        ({"kind": "amount", "value": "12,5", "reason": "Socio"}, "monto del descuento"),
        ({"kind": "amount", "value": "99999", "line": "1", "reason": "Socio"}, "supera el monto de la línea"),
        ({"kind": "percent", "value": "10", "reason": ""}, "motivo del descuento"),
        ({"kind": "gratis", "value": "10", "reason": "Socio"}, "porcentaje o en monto"),
        ({"kind": "percent", "value": "10", "line": "7", "reason": "Socio"}, "Esa línea no existe"),
        ({"kind": "percent", "value": "10", "line": "abc", "reason": "Socio"}, "Esa línea no existe"),
        ({"kind": "percent", "value": "10", "line": "-1", "reason": "Socio"}, "Esa línea no existe"),
        ({"kind": "percent", "value": "10", "line": "0", "reason": "Socio"}, "Esa línea no existe"),
        ({"kind": "percent", "value": "10\x00", "reason": "Socio"}, ""),
    ],
)
async def test_bad_discounts_are_refused_in_spanish(cashier, setup, form, message):
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza", "Agua")
    r = await cashier.post(f"/caja/venta/{sale_id}/descuento", form, htmx=True)
    assert 400 <= r.status_code < 500, r.status_code
    assert message in text_of(r.text)
    r = await cashier.get(f"/caja/venta/{sale_id}", htmx=True)
    assert "$5.500" in text_of(r.text) and "Descuento 10" not in text_of(r.text)


async def test_a_discount_on_another_venues_sale_is_not_found(cashier, setup, sqlite_db, registry):
    other = await make_setup(sqlite_db, registry, slug="otro")
    assert other.venue_id != setup.venue_id
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    r = await cashier.post(
        f"/caja/venta/{sale_id + 1000}/descuento", {"kind": "percent", "value": "10", "reason": "Socio"}, htmx=True
    )
    assert r.status_code == 404 and "La venta no existe" in text_of(r.text)


async def test_no_discount_while_a_card_payment_is_in_flight(cashier, setup, fakes):
    fakes[0].script("charge", Step(kind=OutcomeKind.APPROVED, hang=True))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    r = await cashier.post(
        f"/caja/venta/{sale_id}/descuento", {"kind": "percent", "value": "10", "reason": "Socio"}, htmx=True
    )
    assert r.status_code == 409 and "ya no se puede cambiar" in text_of(r.text)
