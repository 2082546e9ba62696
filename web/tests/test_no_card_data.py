"""A night with card numbers and track data injected at every door, through the real app on a real socket:
the register's agent (progress, results, heartbeats, errors), KLAP webhooks, the KLAP sales report, and
every form a person types in. Afterwards no table (every text and JSON column) and no log line holds a card
number or track data: only masked last-four digits."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
from datetime import UTC, datetime

import httpx
import uvicorn
from sqlalchemy import inspect, text

from caja_core.carddata import contains_card_data
from caja_core.clock import to_local, utcnow
from caja_core.db.models import metadata
from caja_core.ops.logging import configure_logging
from caja_core.payments import devices
from caja_core.plugins import make_plugin_manager
from caja_core.providers import DeviceIdentity, ProviderRegistry
from caja_core.registers import service as registers
from caja_core.settings import load_settings
from caja_core.testing.factories import PASSWORD, PIN, SUPERVISOR_PIN, make_setup
from caja_core.testing.waiting import wait_until
from caja_web.app import create_app

PAN_VISA = "4111111111111111"
PAN_MC = "5555555555554444"
PAN_AMEX = "378282246310005"
PAN_DISCOVER = "6011111111111117"
PANS = (PAN_VISA, PAN_MC, PAN_AMEX, PAN_DISCOVER)
TRACK2 = f";{PAN_VISA}=25121010000012345678?"
TRACK1 = f"%B{PAN_MC}^PEREZ/JUAN^2512101000000000000000?"
TRACK_FRAGMENTS = ("=2512101", "^PEREZ/JUAN^")

GETNET_AGENT = {"connection": "agent", "receipt_timeout_s": 1.0, "sale_timeout_s": 8.0, "short_timeout_s": 3.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def until(check, what: str, timeout_s: float = 20.0):
    return await wait_until(check, timeout_s=timeout_s, what=what)


class Browser:
    """A person at a browser: cookies, the CSRF token, forms."""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=20)

    async def csrf(self) -> str:
        if not self.http.cookies.get("caja_csrf"):
            await self.http.get("/login")
        return self.http.cookies.get("caja_csrf") or ""

    async def post(self, path: str, data: dict | None = None, **kw) -> httpx.Response:
        headers = {"x-csrftoken": await self.csrf(), **kw.pop("headers", {})}
        return await self.http.post(path, data=data or {}, headers=headers, follow_redirects=False, **kw)

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path, follow_redirects=False)


async def scan_tables(db) -> list[str]:
    """Every value of every column of every table, as text, that still holds card data."""
    found = []
    async with db.reader() as s:
        tables = await s.run_sync(lambda sync: inspect(sync.connection()).get_table_names())
        for table in tables:
            rows = await s.execute(text(f'select * from "{table}"'))
            for row in rows.mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    if isinstance(value, (bytes, bytearray)):
                        as_text = bytes(value).decode("utf-8", "replace")
                    else:
                        as_text = value if isinstance(value, str) else json.dumps(value, default=str)
                    digits = re.sub(r"[ -]", "", as_text)
                    # caja's own keys (uuid4 hex) and token hashes (sha256 hex) may hold a run of digits that
                    # passes the Luhn check by chance; they are never card data, and the injected numbers are
                    # still looked for in them.
                    token = re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", as_text) is not None
                    if (
                        (contains_card_data(as_text) and not token)
                        or any(pan in digits for pan in PANS)
                        or any(f in as_text for f in TRACK_FRAGMENTS)
                    ):
                        found.append(f"{table}.{column}: {as_text[:200]}")
    return found


async def test_a_night_with_card_numbers_injected_everywhere_leaves_none_stored_or_logged(sqlite_db, sqlite_url):
    pm = make_plugin_manager()
    registry = ProviderRegistry.from_plugin_manager(pm)
    setup = await make_setup(
        sqlite_db,
        registry,
        primary="getnet",
        backup="klap",
        provider_settings={"getnet": dict(GETNET_AGENT), "klap": {"mode": "manual"}},
    )
    async with sqlite_db.session() as s:
        token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=setup.register_id, actor_id=setup.admin_id
        )
        # caja asked this terminal who it is on an earlier night: the card sale is the agent's first command.
        await devices.remember_identity(
            s,
            provider_id="getnet",
            device_key="getnet:agent:CAJA1",
            identity=DeviceIdentity(identity="getnet:SN-0001"),
            now=datetime.now(UTC),
        )
    settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url, "CAJA_LOG_LEVEL": "DEBUG"})
    logs = io.StringIO()
    handler = configure_logging(settings, stream=logs)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    app = create_app(settings, db=sqlite_db, pm=pm)
    from caja_core.agents.service import AgentTiming

    app.state.agent_timing = AgentTiming(
        pickup_timeout_s=2.0, start_window_s=4.0, result_grace_s=3.0, poll_interval_s=0.1, redeliver_after_s=1.0
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    await until(lambda: asyncio.sleep(0, server.started), "uvicorn arriba")
    url = f"http://127.0.0.1:{port}"
    cashier, admin, agent = Browser(url), Browser(url), httpx.AsyncClient(base_url=url, timeout=20)
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        # --- the agent says hello with a card number in its terminal detail ---------------------------------
        r = await agent.post(
            "/api/agent/v1/heartbeat",
            json={"terminal": "ok", "detail": f"Terminal OK; última {PAN_AMEX}"},
            headers=bearer,
        )
        assert r.status_code == 200, r.text

        # --- people type card numbers in forms ---------------------------------------------------------------
        r = await admin.post("/login", {"venue_id": setup.venue_id, "username": "admin", "password": PASSWORD})
        assert r.status_code == 303
        r = await admin.post(
            "/admin/usuarios",
            {"username": "ana", "display_name": f"Ana {PAN_MC}", "role": "cashier", "secret": "305718"},
        )
        assert r.status_code == 303, r.text
        r = await cashier.post("/login/pin", {"venue_id": setup.venue_id, "user_id": setup.cashier_id, "pin": PIN})
        assert r.status_code == 303
        r = await cashier.post(
            "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "20000", "open_key": "noche"}
        )
        assert r.status_code == 303, r.text
        r = await cashier.post("/caja/incidentes", {"kind": "other", "description": f"Cliente dictó {PAN_DISCOVER}"})
        assert r.status_code == 303
        r = await cashier.post("/caja/movimientos", {"kind": "in", "amount": "1000", "reason": f"Vuelto {PAN_VISA}"})
        assert r.status_code == 303
        r = await cashier.post(
            "/caja/venta/libre", {"name": f"Consumo {PAN_AMEX}", "amount": "2000", "reason": TRACK2}, headers={}
        )
        assert r.status_code == 200, r.text
        r = await cashier.post("/caja/venta/cobrar")
        free_sale = int(re.search(r"/caja/venta/(\d+)/", r.text).group(1))
        r = await cashier.post(f"/caja/venta/{free_sale}/anular", {"reason": f"Anulada {TRACK1}"})
        assert r.status_code == 303

        # --- a card sale through the agent: progress and a result full of card data -----------------------------
        await cashier.post("/caja/venta/item", {"product_id": setup.products["Piscola"]})
        r = await cashier.post("/caja/venta/cobrar")
        sale_id = int(re.search(r"/caja/venta/(\d+)/", r.text).group(1))
        r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta")
        assert r.status_code == 200, r.text
        r = await agent.get("/api/agent/v1/commands/next", params={"wait": 5}, headers=bearer)
        assert r.status_code == 200, r.text
        command = r.json()
        cid, payload = command["command_id"], command["payload"]
        r = await agent.post(f"/api/agent/v1/commands/{cid}/claim", json={"fence": command["fence"]}, headers=bearer)
        assert r.status_code == 200, r.text
        r = await agent.post(
            f"/api/agent/v1/commands/{cid}/progress",
            json={
                "message": f"Tarjeta {PAN_VISA[:4]} {PAN_VISA[4:8]} {PAN_VISA[8:12]} {PAN_VISA[12:]} leída",
                "code": 78,
            },
            headers=bearer,
        )
        assert r.status_code == 200, r.text
        result = {
            "FunctionCode": 100,
            "ResponseCode": 0,
            "ResponseMessage": f"Aprobado {PAN_MC[:4]}-{PAN_MC[4:8]}-{PAN_MC[8:12]}-{PAN_MC[12:]}",
            "Ticket": payload["TicketNumber"],
            "Amount": payload["Amount"],
            "AuthorizationCode": "A1B2C3",
            "Last4Digits": "1111",
            "CardType": "DB",
            "CardBrand": "VI",
            "Track2Data": TRACK2,
            "AccountNumber": PAN_VISA,
            "Detail": TRACK1,
            "Extra": {"nested": [int(PAN_DISCOVER), {"pan": PAN_AMEX, "cvv": "123", "PinBlock": "A1B2C3D4E5F6"}]},
        }
        r = await agent.post(f"/api/agent/v1/commands/{cid}/result", json={"result": result}, headers=bearer)
        assert r.status_code == 200, r.text

        async def paid():
            page = await cashier.get(f"/caja/venta/{sale_id}/pago")
            return "Siguiente venta" in page.text

        await until(paid, "la venta con tarjeta pagada")
        await cashier.post("/caja/venta/siguiente")

        # --- the terminal fails (an agent error carrying a card number); the backup phone charges -----------------
        await cashier.post("/caja/venta/item", {"product_id": setup.products["Cerveza"]})
        r = await cashier.post("/caja/venta/cobrar")
        backup_sale = int(re.search(r"/caja/venta/(\d+)/", r.text).group(1))
        await cashier.post(f"/caja/venta/{backup_sale}/tarjeta")
        r = await agent.get("/api/agent/v1/commands/next", params={"wait": 5}, headers=bearer)
        command = r.json()
        r = await agent.post(
            f"/api/agent/v1/commands/{command['command_id']}/result",
            json={"result": {"AgentError": "unavailable", "Detail": f"Puerto cerrado; última tarjeta {PAN_MC}"}},
            headers=bearer,
        )
        assert r.status_code == 200, r.text

        async def backup_offered():
            page = await cashier.get(f"/caja/venta/{backup_sale}/pago")
            return "Cobrar con respaldo" in page.text

        await until(backup_offered, "respaldo ofrecido")
        r = await cashier.post(f"/caja/venta/{backup_sale}/respaldo")
        attempt_id = int(re.search(r'name="attempt_id" value="(\d+)"', r.text).group(1))
        form = {"attempt_id": attempt_id, "authorization_code": "ZX98CV", "brand": "Visa", "card_type": "debito"}
        r = await cashier.post(f"/caja/venta/{backup_sale}/respaldo/confirmar", form | {"last4": PAN_VISA})
        assert r.status_code == 422 and PAN_VISA not in r.text  # the echo of what was typed is masked
        r = await cashier.post(f"/caja/venta/{backup_sale}/respaldo/confirmar", form | {"last4": "1111"})
        assert r.status_code == 200 and "Siguiente venta" in r.text, r.text
        await cashier.post("/caja/venta/siguiente")

        # --- forged KLAP webhooks with card data in every field -----------------------------------------------
        for reference in ("999999", str(attempt_id)):
            body = {
                "order_id": PAN_VISA,
                "reference_id": reference,
                "amount": 3500,
                "last_digits": PAN_MC,
                "brand": f"VISA {PAN_AMEX}",
                "message": TRACK1,
            }
            r = await agent.post("/webhooks/klap", json=body)
            assert 400 <= r.status_code < 500, r.text

        # --- the KLAP report, with a card number in a cell that becomes an incident ------------------------------
        now = to_local(utcnow(), "America/Santiago")
        report = (
            "Fecha;Hora;Monto;Código de autorización;Últimos 4 dígitos;Marca;Tipo;Estado\n"
            f"{now:%d-%m-%Y};{now:%H:%M};$3.500;ZX98CV;****1111;Visa;Débito;Aprobada\n"
            f"{now:%d-%m-%Y};{now:%H:%M};$9.900;QQ11WW;****4444;Visa {PAN_DISCOVER};Débito;Aprobada\n"
        ).encode()
        await admin.post("/logout")
        r = await admin.post("/login", {"venue_id": setup.venue_id, "username": "super", "password": PASSWORD})
        r = await admin.post(
            f"/admin/cajas/reportes/verificacion/{setup.jornada_id}/reporte",
            files={"reporte": ("klap.csv", report, "text/csv")},
        )
        assert r.status_code in (200, 303), r.text

        # --- close the drawer with a note full of card data; the owner reads the reports --------------------------
        r = await cashier.post("/caja/session/close", {"count_20000": "1", "count_1000": "1", "note": TRACK2})
        assert r.status_code == 200, r.text
        for page in (
            f"/admin/cajas/reportes/jornada/{setup.jornada_id}",
            f"/admin/cajas/reportes/jornada/{setup.jornada_id}/z",
        ):
            shown = (await admin.get(page)).text
            assert not any(pan in shown for pan in PANS), page
    finally:
        server.should_exit = True
        await serving
        for client in (cashier.http, admin.http, agent):
            await client.aclose()
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)

    leaks = await scan_tables(sqlite_db)
    assert leaks == [], "\n".join(leaks)
    written = logs.getvalue()
    assert written, "the app logged nothing: the scan of the logs would prove nothing"
    leaked_lines = [
        line
        for line in written.splitlines()
        if contains_card_data(line) or any(p in re.sub(r"[ -]", "", line) for p in PANS)
    ]
    assert leaked_lines == [], "\n".join(leaked_lines[:10])
    assert SUPERVISOR_PIN not in written
    assert len(metadata.tables) >= 20  # the scan above covered the whole schema
