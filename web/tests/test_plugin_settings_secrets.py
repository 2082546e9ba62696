"""A plugin's secret settings named in Spanish (or in capitals) are as write-only as ``webhook_secret``: the admin
form never renders them back, the listing and the health page never show them, and a blank keeps them."""

from __future__ import annotations

import re

import msgspec
import pytest
from adminforms import register_form
from webkit import text_of

from caja_core.registers import service as registers
from caja_core.testing.fake import FakeProvider, FakeSettings

SECRETS = {
    "clave_comercio": "clave-muy-secreta-1",
    "contrasena_api": "contrasena-secreta-2",
    "llave_privada": "llave-secreta-3",
    "APIKEY": "apikey-secreta-4",
    "credenciales": "credencial-secreta-5",
}


class SecretosSettings(FakeSettings, kw_only=True):
    clave_comercio: str = ""
    contrasena_api: str = ""
    llave_privada: str = ""
    APIKEY: str = ""
    credenciales: str = ""


class Secretos(FakeProvider):
    Settings = SecretosSettings


@pytest.fixture
def fakes():
    return Secretos("fake", "Terminal de prueba"), FakeProvider("fakebackup", "Respaldo de prueba")


FORM = register_form("SECRETOS", "Caja con secretos", **{"settings.fake.device": "t-9"})


async def test_secret_settings_named_in_spanish_are_never_shown_back(admin, sqlite_db, setup):
    r = await admin.post("/admin/cajas/crear", {**FORM, **{f"settings.fake.{k}": v for k, v in SECRETS.items()}})
    assert r.status_code == 303, text_of(r.text)
    register_id = int(re.search(r"/admin/cajas/(\d+)/editar", r.headers["location"]).group(1))
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, setup.venue_id, register_id)
    assert {k: reg.provider_settings["fake"][k] for k in SECRETS} == SECRETS
    for path in (f"/admin/cajas/{register_id}/editar", "/admin/cajas/", "/admin/salud", "/admin/terminales"):
        page = await admin.get(path)
        assert page.status_code == 200, path
        shown = [v for v in SECRETS.values() if v in page.text]
        assert not shown, (path, shown)
    page = (await admin.get(f"/admin/cajas/{register_id}/editar")).text
    for name in SECRETS:
        assert re.search(rf'<input type="password" name="settings\.fake\.{name}" value=""', page), name
    # Saved again with every secret left blank (as the form shows them): the stored ones stay.
    r = await admin.post(
        f"/admin/cajas/{register_id}/editar",
        {**FORM, "name": "Renombrada", **{f"settings.fake.{k}": "" for k in SECRETS}},
    )
    assert r.status_code == 303, text_of(r.text)
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, setup.venue_id, register_id)
    assert reg.name == "Renombrada" and {k: reg.provider_settings["fake"][k] for k in SECRETS} == SECRETS
    assert msgspec.json.encode(registers.public_settings(reg.provider_settings["fake"])).count(b"secreta") == 0
