from webkit import text_of


async def test_login_page_lists_cashiers(client, setup):
    r = await client.get("/login")
    assert r.status_code == 200
    assert "Cajera" in r.text and "csrf" in r.text.lower()


async def test_cash_sale_flow(cashier, setup):
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "10000", "open_key": "k1"}
    )
    assert r.status_code == 303, text_of(r.text)
    r = await cashier.post("/caja/venta/item", {"product_id": setup.products["Cerveza"]}, htmx=True)
    assert r.status_code == 200 and "$3.500" in r.text
    r = await cashier.post("/caja/venta/cobrar", htmx=True)
    assert r.status_code == 200, text_of(r.text)
    assert "Cobrar venta" in r.text
    sale_id = int(r.text.split("/caja/venta/")[1].split("/")[0])
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": "5000"}, htmx=True)
    assert r.status_code == 200, text_of(r.text)
    assert "$1.500" in text_of(r.text)
