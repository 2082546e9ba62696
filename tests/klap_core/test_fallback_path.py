"""The whole backup path: GETNET (simulator on a real socket, failing) → KLAP manual confirmation → session
close shows the sale under KLAP and the fallback event → end-of-night verification. Also docs/reliability.md case 27:
a manual confirmation without an authorization code or with a malformed last 4 is rejected."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from caja_core import hookimpl
from caja_core.clock import to_local, utcnow
from caja_core.errors import ValidationFailed
from caja_core.fallback.policy import FallbackPolicy
from caja_core.payments.service import PaymentOrchestrator
from caja_core.payments.verification import apply_report
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.reports.service import jornada_report, session_report
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup
from caja_getnet.provider import GetnetProvider
from caja_getnet.simulator import Simulator
from caja_klap.provider import KlapProvider

FAST_GETNET = {"receipt_timeout_s": 0.5, "sale_timeout_s": 2.0, "short_timeout_s": 1.0, "other_timeout_s": 2.0}


class Providers:
    def __init__(self, *providers) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider):
        for provider in self.providers:
            add_provider(provider)


@pytest.fixture
async def terminal():
    simulator = Simulator(step_delay_s=0.02, message_gap_s=0.005, seed=3)
    await simulator.start_tcp()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def venue(any_db, terminal):
    pm = make_plugin_manager(Providers(GetnetProvider(), KlapProvider()), load_entrypoints=False)
    registry = ProviderRegistry.from_plugin_manager(pm)
    host, port = terminal.tcp_address
    setup = await make_setup(
        any_db,
        registry,
        primary="getnet",
        backup="klap",
        phones=1,
        policy=FallbackPolicy(max_wait_s=5, backup_phones_required=1),
        provider_settings={
            "getnet": {"connection": "tcp", "host": host, "port": port, **FAST_GETNET},
            "klap": {"mode": "manual"},
        },
    )
    async with any_db.session() as s:
        session = await sessions.open_session(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            user_id=setup.cashier_id,
            initial_cash=0,
            open_key="apertura",
        )
    orch = PaymentOrchestrator(
        any_db,
        registry,
        pm,
        instance_id="klap-test",
        worker_interval_s=0.05,
        cancel_timeout_s=1.0,
        cancel_grace_s=0.2,
        status_timeout_s=2.0,
        health_timeout_s=1.0,
        reconcile_backoff_s=(0.05, 0.2),
    )
    await orch.start()
    yield any_db, setup, session.id, orch
    await orch.stop()


async def _until(orch, venue_id, sale_id, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        progress = await orch.poll(venue_id, sale_id)
        if predicate(progress):
            return progress
        assert time.monotonic() < deadline, f"no se llegó al estado esperado: {progress}"
        await asyncio.sleep(0.02)


async def test_getnet_fails_klap_manual_pays_and_the_close_shows_it(venue, terminal):
    db, setup, session_id, orch = venue
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=session_id,
            cashier_id=setup.cashier_id,
            idempotency_key=uuid.uuid4().hex,
            items=[sales.ItemInput(product_id=setup.products["Piscola"], quantity=2)],
        )
    # The terminal never sees the sale: no receipt → reconciliation says not charged → backup offered.
    terminal.add_fault({"kind": "no_receipt", "scope": "next"})
    await orch.start_payment(setup.venue_id, sale.id, setup.cashier_id)
    progress = await _until(orch, setup.venue_id, sale.id, lambda p: p.backup_offered)
    assert progress.state == "failed_not_sent" and progress.backup_provider == "klap"
    assert terminal.tickets() == {}  # nothing charged on GETNET

    progress = await orch.start_backup(setup.venue_id, sale.id, setup.cashier_id)
    manual = progress.manual
    assert progress.state == "manual_pending" and manual.amount == 12000 and manual.phone_name == "Celular 1"

    # Case 27: without an authorization code, or with a malformed last 4, nothing is confirmed.
    for code, last4 in (("", "4242"), ("   ", "4242"), ("A1B2C3", "42a2"), ("A1B2C3", "424"), ("A1B2C3", "")):
        with pytest.raises(ValidationFailed) as err:
            await orch.confirm_manual(
                setup.venue_id, manual.attempt_id, setup.cashier_id, code, last4, "Visa", "débito"
            )
        assert err.value.fields
    still = await orch.poll(setup.venue_id, sale.id)
    assert still.state == "manual_pending" and not still.paid

    done = await orch.confirm_manual(
        setup.venue_id, manual.attempt_id, setup.cashier_id, "a1b2c3", "4242", "Visa", "débito"
    )
    assert done.paid and done.paid_via == "backup" and done.state == "approved_manual"

    async with db.session() as s:
        closed = await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=session_id, user_id=setup.cashier_id, counted={}
        )
    assert closed is not None
    async with db.reader() as s:
        report = await session_report(s, setup.venue_id, session_id)
    assert report.summary.session.status == "closed"
    assert report.summary.session.backup_count == 1 and report.summary.session.card_sales_total == 12000
    assert [(line.key, line.count, line.amount) for line in report.by_provider] == [("klap", 1, 12000)]
    assert [(e["from_provider"], e["to_provider"]) for e in report.fallback_events] == [("getnet", "klap")]

    # End of night: KLAP's report confirms the charge.
    now = to_local(utcnow(), "America/Santiago")
    csv = (
        f"Fecha;Hora;Monto;Código de autorización;Últimos 4 dígitos;Marca;Tipo\n"
        f"{now:%d-%m-%Y};{now:%H:%M};$12.000;A1B2C3;****4242;Visa;Débito\n"
    ).encode()
    async with db.session() as s:
        klap = KlapProvider()
        result = await apply_report(
            s,
            provider=klap,
            venue_id=setup.venue_id,
            jornada_id=setup.jornada_id,
            rows=klap.parse_report(csv),
            user_id=setup.supervisor_id,
        )
    assert result.verified == [manual.attempt_id] and result.incidents_opened == 0
    async with db.reader() as s:
        z = await jornada_report(s, setup.venue_id, setup.jornada_id)
    assert [(e["from_provider"], e["to_provider"]) for e in z.fallback_events] == [("getnet", "klap")]
    assert [line.key for line in z.by_provider] == ["klap"]
