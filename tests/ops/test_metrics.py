"""The metrics registry: quantiles for the dashboard, and the series the alert rules rely on."""

import math

from caja_core.ops import metrics


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert metrics.quantile(buckets, 0.5) == 0.1
    assert math.isclose(metrics.quantile(buckets, 0.7), 0.3)
    assert math.isclose(metrics.quantile(buckets, 0.95), 0.75)
    assert metrics.quantile({0.1: 0.0, math.inf: 0.0}, 0.95) is None
    assert metrics.quantile({1.0: 0.0, math.inf: 4.0}, 0.5) == 1.0  # all above the last finite bucket


def test_recording_feeds_counters_and_histograms():
    def approval_count():
        return next(
            s.value
            for m in metrics.TIME_TO_APPROVAL.collect()
            for s in m.samples
            if s.name.endswith("_count") and s.labels == {"provider": "probe"}
        )

    metrics.record_attempt("probe", "declined", 3.0)
    metrics.record_attempt("probe", "approved", 12.0)
    metrics.record_attempt("probe", "approved", None)
    assert metrics.PAYMENT_ATTEMPTS.labels(provider="probe", outcome="approved")._value.get() == 2
    assert metrics.PAYMENT_ATTEMPTS.labels(provider="probe", outcome="declined")._value.get() == 1
    assert approval_count() == 1  # declines and unknown durations are not approvals
    metrics.record_fallback("probe", "probe-backup", 61.0)
    summary = metrics.summary(
        report={"status": "ok", "problems": [], "services": {}},
        counts={"in_doubt": 0, "unresolved": 0, "open_sessions": 0},
        breakers={},
        agents={},
    )
    assert summary["payments"]["attempts"]["probe"] == {"declined": 1, "approved": 2}
    assert summary["payments"]["time_to_fallback"]["probe→probe-backup"]["count"] >= 1


def test_metric_names_lists_every_exposed_series():
    exposed = metrics.prometheus_text().decode()
    names = metrics.metric_names()
    for line in exposed.splitlines():
        if line and not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] in names, line
    assert {
        "caja_http_requests_total",
        "caja_payment_attempts_in_doubt",
        "caja_backup_age_seconds",
        "caja_breaker_state",
        "caja_agent_last_seen_age_seconds",
    } <= names
