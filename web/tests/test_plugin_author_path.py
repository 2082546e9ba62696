"""The plugin author's path, as plugins/README.md tells it: `caja plugin new` generates a package, its
conformance test runs green (pytest-asyncio strict and auto), the provider shows in the admin with its Spanish
settings form, and a card sale goes through the POS on the generated fake device. And `caja plugins` shows what
is installed and what loaded."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from adminforms import register_form
from test_pos import checkout, open_session, poll_until
from webkit import text_of

from caja_core.plugins import installed_entry_points
from caja_core.registers import service as registers
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import FakeProvider

CAJA = [sys.executable, "-c", "from caja_core.cli import main; main()"]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
#: The docs' example name, or another when a plugin of that name is already installed beside caja (as the docs
#: tell its author to do): `caja plugin new` refuses a taken name.
NAME = next(name for name in ("mipago", "mipagodoc", "mipagoprueba") if name not in installed_entry_points())


def caja(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAJA, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """``caja plugin new mipago`` in an empty folder."""
    folder = tmp_path_factory.mktemp("autor")
    result = caja("plugin", "new", NAME, "--dir", str(folder), "--title", "Mi Pago")
    assert result.returncode == 0, result.stderr
    root = folder / f"caja-{NAME}"
    assert f"Plugin creado en {root}" in result.stdout
    return root


@pytest.fixture
def mipago(generated, monkeypatch):
    """The generated package, importable as if installed (its src/ on the path)."""
    monkeypatch.syspath_prepend(str(generated / "src"))
    return importlib.import_module(f"caja_{NAME}.provider"), importlib.import_module(f"caja_{NAME}.fake_device")


@pytest.fixture
async def device(mipago):
    async with mipago[1].FakeDevice() as fake:
        yield fake


@pytest.fixture
def fakes(mipago):
    return (
        FakeProvider("fake", "Terminal de prueba"),
        FakeProvider("fakebackup", "Respaldo de prueba"),
        mipago[0].provider,
    )


@pytest.fixture
async def setup(sqlite_db, registry, device):
    return await make_setup(
        sqlite_db,
        registry,
        primary=NAME,
        backup="fakebackup",
        provider_settings={NAME: {"host": device.host, "port": device.port, "timeout_s": 5}},
    )


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_generated_conformance_test_is_green_before_it_is_installed(generated, mode):
    """plugins/README.md runs the kit from caja's checkout before installing the package."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [*PYTEST, "-o", f"asyncio_mode={mode}", str(generated / "tests")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "12 passed" in result.stdout


def test_plugin_new_refuses_bad_or_taken_names_and_existing_folders(generated):
    for name, message in (("Mi-Pago", "Nombre de plugin inválido"), ("cash", "reservado"), ("klap", "Ya hay")):
        result = caja("plugin", "new", name, "--dir", str(generated.parent))
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = caja("plugin", "new", NAME, "--dir", str(generated.parent))
    assert result.returncode == 2 and "ya existe" in result.stderr


def test_caja_plugins_lists_installed_loaded_hooks_and_settings():
    result = caja("plugins")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "klap — cargado" in out and "getnet — cargado" in out and "web — cargado" in out
    assert "hooks: provider_defaults, register_commands, register_providers" in out
    assert "proveedor getnet «GETNET»" in out and "sales_report" in out
    assert "caja_core.printing.drivers — cargado (incorporado)" in out
    # Each provider plugin's conformance: its kit tests found beside its pyproject.toml, and how to run them.
    assert "conformidad: sin verificar" in out
    assert "para verificar: " in out and "plugins/getnet/tests/test_getnet_conformance.py" in out
    only = caja("plugins", "--json", env={"CAJA_LOAD_PLUGINS": "getnet"})
    found = {p["name"]: p for p in json.loads(only.stdout)}
    assert found["klap"]["loaded"] is False and found["klap"]["hooks"] == []
    assert found["getnet"]["loaded"] and found["web"]["loaded"]
    assert found["getnet"]["conformance"]["status"] == "sin verificar" and found["klap"]["conformance"] is None
    assert found["web"]["conformance"] is None  # no providers, nothing to verify
    fields = {f["name"]: f for f in found["getnet"]["providers"][0]["settings"]}
    assert fields["port"]["kind"] == "number"


async def test_the_new_provider_shows_in_the_admin_and_sells_in_the_pos(client, setup, device):
    await client.login("admin", venue_id=setup.venue_id)
    page = text_of((await client.get(f"/admin/cajas/{setup.register_id}/editar")).text)
    assert "Mi Pago" in page and "Dirección del equipo" in page and "Espera máxima (s)" in page
    await client.post("/logout")

    await client.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
    await open_session(client, setup)
    sale_id, _ = await checkout(client, setup, "Piscola")
    r = await client.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    assert r.status_code == 200
    r = await poll_until(client, sale_id, "Siguiente venta")
    assert "****4242" in r.text and "Aut. A1B2C3" in r.text
    assert list(device.ledger.values()) == [setup.prices["Piscola"]]


def test_plugin_new_says_how_to_get_pytest_where_caja_was_installed_without_it(tmp_path):
    """A server install (caja's wheels) has no pytest: the hint to run the kit says how to get it first."""
    no_pytest = "import sys; sys.modules['pytest'] = sys.modules['pytest_asyncio'] = None; "
    result = subprocess.run(
        [sys.executable, "-c", no_pytest + "from caja_core.cli import main; main()", "plugin", "new", NAME],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{sys.executable} -m pytest" in out and "no tiene pytest ni pytest-asyncio" in out, out
    assert f"{sys.executable} -m pip install pytest pytest-asyncio" in out, out
    assert "[test]" in out and 'test = ["pytest>=8"' in (tmp_path / f"caja-{NAME}" / "pyproject.toml").read_text()
    with_pytest = caja("plugin", "new", "otropago", "--dir", str(tmp_path))  # this environment has them
    assert "-m pytest" in with_pytest.stdout and "no tiene" not in with_pytest.stdout, with_pytest.stdout


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("nan", "debe ser"),
        ("inf", "debe ser"),
        ("-5", "debe ser mayor que 0"),
        ("100000", "debe ser menor o igual a 600"),
        ("abc", "debe ser un número"),
    ],
)
async def test_a_settings_value_the_provider_cannot_use_is_refused_in_spanish_by_its_title(
    client, setup, sqlite_db, value, says
):
    """The generated Settings bound their wait; a number that is no number (nan, inf) is refused for any
    provider, and msgspec's English never reaches the admin."""
    await client.login("admin", venue_id=setup.venue_id)
    form = register_form(
        "MIPAGO-2",
        "Caja Mi Pago",
        primary_provider=NAME,
        **{f"settings.{NAME}.host": "127.0.0.1", f"settings.{NAME}.port": "9300", f"settings.{NAME}.timeout_s": value},
    )
    r = await client.post("/admin/cajas/crear", form)
    assert r.status_code == 422, text_of(r.text)[:300]
    page = text_of(r.text)
    assert f"Configuración inválida para Mi Pago: campo «Espera máxima (s)»: {says}" in page, page[:600]
    assert "Expected" not in page
    async with sqlite_db.session() as s:
        codes = [reg.code for reg in await registers.list_registers(s, setup.venue_id)]
    assert "MIPAGO-2" not in codes
    form[f"settings.{NAME}.timeout_s"] = "30"
    r = await client.post("/admin/cajas/crear", form)
    assert r.status_code == 303, text_of(r.text)[:300]


def test_the_generated_fake_device_runs_for_a_rehearsal_and_the_demo_points_at_it(generated, mipago):
    """`caja mipago-fake-device` runs the generated fake device on a real socket, and the demo's registers are
    pointed at it (before, the demo pointed the new provider at a port where nothing listened)."""
    import select
    import socket

    from livesite import free_port

    plugin = importlib.import_module(f"caja_{NAME}.plugin")
    (demo,) = plugin.provider_defaults(register_type="HUMANA", demo_url="http://127.0.0.1:8000")
    assert demo.settings == {"host": "127.0.0.1", "port": plugin.REHEARSAL_PORT}
    assert plugin.provider_defaults(register_type="HUMANA", demo_url=None)[0].settings == {}
    port = free_port()
    command = (
        "import click, sys\n"
        f"from caja_{NAME}.plugin import register_commands\n"
        "cli = click.Group()\n"
        "register_commands(cli)\n"
        f"cli(['{NAME}-fake-device', '--port', '{port}'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(generated / "src")}
    device = subprocess.Popen([sys.executable, "-c", command], env=env, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([device.stdout], [], [], 60)
        assert ready, "the fake device never said it was listening"
        assert f"escuchando en 127.0.0.1:{port}" in device.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b'{"op": "sale", "ticket": "7", "amount": 5000}\n')
            answers = conn.makefile().read()
        assert '"received"' in answers and '"approved"' in answers and '"amount": 5000' in answers
    finally:
        device.terminate()
        device.wait(timeout=30)
