"""A full payment run through the real orchestrator: the metrics count it, and the captured logs hold no card
data or secret even when a provider plugin logs raw terminal frames carelessly."""

import io
import json
import logging

import pytest

from caja_core.ops import metrics, payment_metrics
from caja_core.ops.logging import configure_logging, log_context
from caja_core.providers import OutcomeKind
from caja_core.settings import load_settings
from caja_core.testing.fake import ScriptableProvider, Step

from ..payments.conftest import build_env

PAN = "4111111111111111"
SECRET_KEY = "Yv3Nq8Rt1Lp6Zx9Wm2Kc5Hb7Jd0Fg4Sa"
TRACK2 = f";{PAN}=25121010000012300000?"

plugin_log = logging.getLogger("caja_leaky.provider")


class LeakyProvider(ScriptableProvider):
    """Logs what a careless integration would: the raw frame (PAN, track, CVV) and its own settings."""

    async def charge(self, request, settings, ctx, *args, **kwargs):
        plugin_log.info(
            "frame out: %s",
            json.dumps(
                {"Amount": request.amount, "Pan": PAN, "Track2": TRACK2, "Cvv": "123", "PinBlock": "9F8E7D6C5B4A3921"}
            ),
        )
        plugin_log.debug(
            "settings", extra={"settings": {"device": settings.device, "webhook_secret": settings.webhook_secret}}
        )
        outcome = await super().charge(request, settings, ctx, *args, **kwargs)
        plugin_log.info("frame in: approved card %s exp 2512 cvv=123 outcome %s", PAN, outcome.kind)
        return outcome


def value(counter, **labels):
    return counter.labels(**labels)._value.get()


def histogram_count(histogram, **labels):
    return next(
        s.value
        for m in histogram.collect()
        for s in m.samples
        if s.name.endswith("_count") and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    handler = configure_logging(
        load_settings({"CAJA_SECRET_KEY": SECRET_KEY, "CAJA_LOG_LEVEL": "DEBUG"}), stream=stream
    )
    yield stream
    logging.getLogger().removeHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)


async def test_full_payment_run_is_counted_and_leaves_no_card_data_in_logs(any_db, captured_logs):
    # The metrics remember where each sale's payment started by sale id, as one server with one database does;
    # earlier tests of this process sold under the same ids in other databases.
    with payment_metrics._lock:
        payment_metrics._sale_started.clear()
        payment_metrics._attempt_started.clear()
    env = await build_env(any_db, primary=LeakyProvider("fake"))
    orch = await env.orchestrator()
    approved_before = value(metrics.PAYMENT_ATTEMPTS, provider="fake", outcome="approved")
    not_sent_before = value(metrics.PAYMENT_ATTEMPTS, provider="fake", outcome="failed_not_sent")
    backup_before = value(metrics.PAYMENT_ATTEMPTS, provider="fakebackup", outcome="approved")
    try:
        # 1. Approved on the terminal, with the masked card data the provider may report.
        sale_a = await env.sale(12500)
        env.provider.script("charge", Step(kind=OutcomeKind.APPROVED))
        with log_context(request_id="req-a", venue_id=env.venue_id, register_id=env.setup.register_id):
            await orch.start_payment(env.venue_id, sale_a, env.setup.cashier_id)
            paid = await env.settle(orch, sale_a)
        assert paid.paid
        # 2. Terminal unavailable → backup phone, confirmed by the cashier.
        sale_b = await env.sale(8000)
        env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Puerto no encontrado"))
        with log_context(request_id="req-b", venue_id=env.venue_id, register_id=env.setup.register_id):
            await orch.start_payment(env.venue_id, sale_b, env.setup.cashier_id)
            await env.until(orch, sale_b, lambda p: p.backup_offered)
            p = await orch.start_backup(env.venue_id, sale_b, env.setup.cashier_id)
            done = await orch.confirm_manual(
                env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "ab12cd", "1111", "Visa", "debito"
            )
        assert done.paid
    finally:
        await orch.stop()

    assert value(metrics.PAYMENT_ATTEMPTS, provider="fake", outcome="approved") == approved_before + 1
    assert value(metrics.PAYMENT_ATTEMPTS, provider="fake", outcome="failed_not_sent") == not_sent_before + 1
    assert value(metrics.PAYMENT_ATTEMPTS, provider="fakebackup", outcome="approved") == backup_before + 1
    assert histogram_count(metrics.TIME_TO_APPROVAL, provider="fake") >= 1
    assert histogram_count(metrics.TIME_TO_FALLBACK, from_provider="fake", to_provider="fakebackup") >= 1

    output = captured_logs.getvalue()
    records = [json.loads(line) for line in output.splitlines()]
    assert any(r["logger"] == "caja_leaky.provider" for r in records), "the provider's logs were captured"
    for forbidden in (
        PAN,
        TRACK2,
        "=25121010000012300000",
        "9F8E7D6C5B4A3921",
        "cvv=123",
        '"123"',
        "fake-secret",
        SECRET_KEY,
    ):
        assert forbidden not in output, forbidden
    frame = next(r for r in records if r["message"].startswith("frame out"))
    assert frame["request_id"] == "req-a" and frame["venue_id"] == env.venue_id
    assert frame["register_id"] == env.setup.register_id
