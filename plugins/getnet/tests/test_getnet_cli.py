"""`caja getnet …` as an installer runs it: real processes, real sockets, exit codes 0/1/2/3."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx

from caja_getnet.simulator import Fault

CAJA = str(Path(sys.executable).with_name("caja"))


async def run_caja(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CAJA,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def tcp_arg(sim) -> str:
    return "{}:{}".format(*sim.tcp_address)


async def test_sale_approved_prints_the_answer_and_exits_0(sim):
    code, out, err = await run_caja("getnet", "sale", "--tcp", tcp_arg(sim), "--amount", "1000", "--ticket", "T1")
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["ResponseCode"], answer["Ticket"], answer["Amount"]) == (0, "T1", 1000)
    assert "AccountNumber" not in answer and "4761739001010119" not in out + err
    assert "[78] Leyendo tarjeta" in err
    assert sim.tickets() == {"T1": 1000}


async def test_sale_declined_exits_1(sim):
    sim.add_fault(Fault(kind="decline", code=6))
    code, out, _ = await run_caja("getnet", "sale", "--tcp", tcp_arg(sim), "--amount", "1000", "--ticket", "T2")
    assert code == 1 and json.loads(out)["ResponseCode"] == 6


async def test_sale_in_doubt_exits_3(sim):
    sim.add_fault(Fault(kind="receipt_then_silence"))
    code, out, _ = await run_caja(
        "getnet", "sale", "--tcp", tcp_arg(sim), "--amount", "1000", "--ticket", "T3", "--timeout", "1"
    )
    assert code == 3 and json.loads(out)["error"] == "in_doubt"


async def test_reports_and_close(sim, sqlite_url):
    await run_caja("getnet", "sale", "--tcp", tcp_arg(sim), "--amount", "1500", "--ticket", "A1")
    code, out, _ = await run_caja("getnet", "last-sale", "--tcp", tcp_arg(sim))
    assert code == 0 and json.loads(out)["Ticket"] == "A1"
    code, out, _ = await run_caja("getnet", "details", "--tcp", tcp_arg(sim))
    assert code == 0 and [d["Ticket"] for d in json.loads(out)["SaleDetails"]] == ["A1"]
    code, out, _ = await run_caja("getnet", "totals", "--tcp", tcp_arg(sim))
    assert code == 0 and json.loads(out)["TxTotal"] == 1500
    code, out, err = await run_caja(
        "getnet", "close", "--tcp", tcp_arg(sim), env={"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url}
    )
    assert code == 0 and sim.ledger == [] and sim.closes == 1, err
    closed = json.loads(out)
    assert closed["closed"] is True and (closed["count"], closed["total"]) == (1, 1500)
    code, out, _ = await run_caja("getnet", "cancel", "--tcp", tcp_arg(sim))
    assert code == 1 and json.loads(out)["ResponseCode"] == 13  # nothing in progress to cancel


async def test_unreachable_terminal_exits_3():
    code, out, _ = await run_caja("getnet", "poll", "--tcp", "127.0.0.1:1")
    assert code == 3 and json.loads(out)["error"] == "unavailable"
    code, out, _ = await run_caja("getnet", "poll", "--serial", "/dev/ttyNO_SUCH_TERMINAL")
    assert code == 3 and json.loads(out)["error"] == "unavailable"


async def test_bad_arguments_are_one_line_and_exit_2():
    for args in (
        ["getnet", "poll"],
        ["getnet", "poll", "--tcp", "no-port"],
        ["getnet", "sale", "--tcp", "127.0.0.1:9", "--amount", "0"],
        ["getnet", "sale", "--tcp", "127.0.0.1:9", "--amount", "100", "--ticket", "T|1"],
        ["getnet", "simulate"],
        ["getnet", "simulate", "--pty", "--fault", "nonsense"],
        ["getnet", "simulate", "--pty", "--control", "0.0.0.0:9101"],
    ):
        code, out, err = await run_caja(*args)
        assert code == 2, args
        assert out == "" and len(err.strip().splitlines()) == 1, (args, err)


async def test_simulate_over_a_pty_answers_diagnostics_and_stops_cleanly():
    proc = await asyncio.create_subprocess_exec(
        CAJA,
        "getnet",
        "simulate",
        "--pty",
        "--step-delay",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        path = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert os.path.exists(path) and os.path.realpath(path).startswith("/dev/pts/")
        code, out, err = await run_caja("getnet", "sale", "--serial", path, "--amount", "2000", "--ticket", "P1")
        assert code == 0, err
        assert json.loads(out)["Amount"] == 2000
        code, out, _ = await run_caja("getnet", "poll", "--serial", path)
        assert code == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


async def test_control_channel_sets_faults_and_shows_the_ledger(sim):
    host, port = await sim.start_control()
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
        response = await http.post("/faults", json={"kind": "decline", "code": 5})
        assert response.status_code == 200 and response.json()["next"][0]["kind"] == "decline"
        assert (await http.post("/faults", json={"kind": "bogus"})).status_code == 400
        code, _, _ = await run_caja("getnet", "sale", "--tcp", tcp_arg(sim), "--amount", "100", "--ticket", "C1")
        assert code == 1
        code, _, _ = await run_caja("getnet", "sale", "--tcp", tcp_arg(sim), "--amount", "200", "--ticket", "C2")
        assert code == 0
        ledger = (await http.get("/ledger")).json()
        assert [e["ticket"] for e in ledger["ledger"]] == ["C2"] and ledger["totals"]["TxTotal"] == 200
        await http.post("/faults", json={"kind": "decline", "scope": "run"})
        assert (await http.get("/faults")).json()["run"]["kind"] == "decline"
        assert (await http.delete("/faults")).status_code == 200
        assert (await http.get("/faults")).json() == {"next": [], "run": None}


async def test_close_is_recorded_by_caja_and_refused_while_caja_has_a_payment_in_doubt_there(sim, sqlite_url):
    """``caja getnet close`` goes through caja: the close is recorded with the terminal's totals, and while caja
    has an attempt in doubt on that terminal it is refused with one line saying why, and no Close is sent."""
    import uuid

    from sqlalchemy import select

    from caja_core.db.engine import Database
    from caja_core.payments.models import PaymentAttempt, TerminalClose
    from caja_core.plugins import make_plugin_manager
    from caja_core.providers import ProviderRegistry, validate_settings
    from caja_core.sales import service as sales
    from caja_core.sessions import service as sessions
    from caja_core.testing.factories import make_setup
    from caja_getnet.provider import provider

    host, port = sim.tcp_address
    getnet = {"connection": "tcp", "host": host, "port": port}
    db = Database(sqlite_url)
    try:
        registry = ProviderRegistry.from_plugin_manager(make_plugin_manager())
        setup = await make_setup(db, registry, primary="getnet", backup=None, provider_settings={"getnet": getnet})
        async with db.session() as s:
            session = await sessions.open_session(
                s,
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                user_id=setup.cashier_id,
                initial_cash=0,
                open_key="apertura-cierre-lote",
            )
            sale = await sales.create_sale(
                s,
                venue_id=setup.venue_id,
                session_id=session.id,
                cashier_id=setup.cashier_id,
                idempotency_key=uuid.uuid4().hex,
                items=[sales.ItemInput(name="Consumo", unit_price=2200, quantity=1, free_reason="barra")],
            )
            attempt = PaymentAttempt(
                venue_id=setup.venue_id,
                sale_id=sale.id,
                session_id=session.id,
                register_id=setup.register_id,
                provider_id="getnet",
                device_key=provider.device_key(validate_settings(provider, getnet), "CAJA1"),
                role="primary",
                amount=2200,
                ticket="ZQ1",
                state="in_doubt",
            )
            s.add(attempt)
            await s.flush()
            attempt_id = attempt.id
        env = {"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url}
        # Another spelling of the same terminal's address changes nothing.
        code, out, err = await run_caja("getnet", "close", "--tcp", f"localhost:{port}", env=env)
        assert code == 1 and out == "", err
        assert len(err.strip().splitlines()) == 1 and "cobros sin resolver" in err and f"#{attempt_id}" in err, err
        assert 103 not in sim.command_codes() and sim.closes == 0
        async with db.session() as s:
            (await s.get(PaymentAttempt, attempt_id)).state = "approved"  # resolved meanwhile
        code, out, err = await run_caja("getnet", "close", "--tcp", tcp_arg(sim), env=env)
        assert code == 0, err
        assert sim.closes == 1
        async with db.reader() as s:
            (row,) = (await s.execute(select(TerminalClose))).scalars()
        assert row.source == "cli" and row.device_key == f"getnet:tcp:127.0.0.1:{port}"
    finally:
        await db.dispose()


async def test_close_without_caja_database_sends_nothing(sim, tmp_path):
    missing = f"sqlite:///{tmp_path / 'no-existe' / 'caja.db'}"
    code, out, err = await run_caja(
        "getnet", "close", "--tcp", tcp_arg(sim), env={"CAJA_ENV": "demo", "CAJA_DATABASE_URL": missing}
    )
    assert code == 3 and out == "" and "base de datos" in err, err
    assert 103 not in sim.command_codes() and sim.closes == 0
