"""Metrics: one Prometheus registry for the process, a JSON summary for the admin dashboard.

Two kinds of series:

* counted in this process as things happen: HTTP requests and latency (the web middleware), payment attempts
  by provider and outcome, time to approval, time to fallback (the payment orchestrator calls
  :func:`record_attempt` / :func:`record_fallback`), backup runs;
* read from the database and the backup folder at scrape time (:func:`collect`): breaker states, attempts
  in doubt, open sessions, agents' last heartbeat, backup age and last failure, workers, overall health.
  Every instance reports the same values for these: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from ..clock import utcnow
from ..db.engine import Database

disable_created_metrics()  # no ``*_created`` series: they double the exposition for nothing we alert on
REGISTRY = CollectorRegistry(auto_describe=True)
#: The classic text exposition format, which every Prometheus 2 and 3 accepts without a warning.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
PAYMENT_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)

HTTP_REQUESTS = Counter(
    "caja_http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "caja_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
PAYMENT_ATTEMPTS = Counter(
    "caja_payment_attempts",
    "Payment attempts that reached an outcome, by provider.",
    ["provider", "outcome"],
    registry=REGISTRY,
)
TIME_TO_APPROVAL = Histogram(
    "caja_payment_time_to_approval_seconds",
    "From Pay to approval of the attempt that was approved.",
    ["provider"],
    buckets=PAYMENT_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FALLBACK = Histogram(
    "caja_payment_time_to_fallback_seconds",
    "From Pay on the primary provider to the switch to the backup.",
    ["from_provider", "to_provider"],
    buckets=PAYMENT_BUCKETS,
    registry=REGISTRY,
)
BREAKER_OPENINGS = Counter(
    "caja_breaker_openings", "Times a device's circuit breaker opened.", ["device"], registry=REGISTRY
)
PLUGIN_LISTENER_FAILURES = Counter(
    "caja_plugin_listener_failures",
    "on_payment_event listeners that raised, by plugin (the other listeners still ran).",
    ["plugin"],
    registry=REGISTRY,
)
PLUGIN_LISTENER_SLOW = Counter(
    "caja_plugin_listener_slow",
    "on_payment_event listeners of plugins that did not finish within their bound, or whose queue was full (the "
    "payment went on without waiting), by plugin.",
    ["plugin"],
    registry=REGISTRY,
)
BACKUP_RUNS = Counter(
    "caja_backup_runs", "Scheduled backup runs, by result (ok / failed).", ["result"], registry=REGISTRY
)
BACKUP_DURATION = Histogram(
    "caja_backup_duration_seconds",
    "Backup + verification time.",
    buckets=(1, 5, 15, 60, 300, 900, 3600),
    registry=REGISTRY,
)

# Read at scrape time (from the database, the heartbeats and the backup runner's report) by ``collect``;
# exported by ``ScrapeCollector`` only when known: a series with no value is absent, never a misleading 0.
SCRAPE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "caja_health_status": ("Overall health: 0 ok, 1 degraded, 2 error.", ()),
    "caja_database_up": ("1 when the database answers and is migrated to head.", ()),
    "caja_breaker_state": ("Circuit breaker per device: 0 closed, 1 half-open, 2 open.", ("register", "device")),
    "caja_breakers_open": ("Devices whose breaker is open or half-open.", ()),
    "caja_payment_attempts_in_doubt": ("Attempts nobody knows were charged (in doubt or reconciling).", ()),
    "caja_payment_attempts_unresolved": ("Attempts not finished (in flight, in doubt, manual pending).", ()),
    "caja_cash_sessions_open": ("Register sessions open or closing.", ()),
    "caja_agent_last_seen_age_seconds": (
        "Seconds since the register agent's last heartbeat (registers with an agent).",
        ("register",),
    ),
    "caja_agents_missing": ("Register agents stale or never seen.", ()),
    "caja_backup_last_success_timestamp_seconds": (
        "Unix time of the newest backup (only where a process takes scheduled backups).",
        (),
    ),
    "caja_backup_age_seconds": (
        "Age of the newest backup, +Inf when there is none (only where a process takes scheduled backups).",
        (),
    ),
    "caja_backup_last_run_failed": ("1 when the last backup run, its verification or the folder failed.", ()),
    "caja_backups_damaged": ("Backups in the folder whose manifest cannot be read.", ()),
    "caja_worker_up": (
        "1 when the background worker beats and its last turn succeeded, per process (app instance or caja worker).",
        ("process", "worker"),
    ),
    "caja_process_up": (
        "1 when the process (app instance or caja worker) beats; 0 when it went silent.",
        ("process", "kind"),
    ),
    "caja_process_last_beat_age_seconds": ("Seconds since the process's last heartbeat.", ("process", "kind")),
    "caja_tls_certificate_expiry_timestamp_seconds": (
        "Unix time when the certificate in CAJA_TLS_CERT_FILE expires.",
        (),
    ),
}


class ScrapeCollector:
    """Exports the values computed by :func:`collect` for the last scrape, and only those."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[dict[str, str], float]]] = {}

    def describe(self):
        return [
            GaugeMetricFamily(name, help_text, labels=list(labels))
            for name, (help_text, labels) in SCRAPE_METRICS.items()
        ]

    def collect(self):
        for name, samples in self.values.items():
            help_text, labels = SCRAPE_METRICS[name]
            family = GaugeMetricFamily(name, help_text, labels=list(labels))
            for sample_labels, value in samples:
                family.add_metric([sample_labels[label] for label in labels], value)
            yield family


SCRAPE = ScrapeCollector()
REGISTRY.register(SCRAPE)

BUILD_INFO = Gauge("caja_build_info", "The running caja version (value 1).", ["version"], registry=REGISTRY)

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
HEALTH_VALUES = {"ok": 0, "degraded": 1, "error": 2}


# ------------------------------------------------------------------------------ recording (callers)


def record_request(method: str, route: str, status: int, duration_s: float) -> None:
    HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    HTTP_LATENCY.labels(method=method, route=route).observe(duration_s)


def record_attempt(provider: str, outcome: str, duration_s: float | None = None) -> None:
    """An attempt reached ``outcome`` (approved, declined, failed_not_sent, in_doubt, cancelled…) after
    ``duration_s`` seconds since Pay. Approvals also feed the time-to-approval histogram."""
    PAYMENT_ATTEMPTS.labels(provider=provider, outcome=outcome).inc()
    if duration_s is not None and outcome in ("approved", "approved_manual"):
        TIME_TO_APPROVAL.labels(provider=provider).observe(max(duration_s, 0.0))


def record_fallback(from_provider: str, to_provider: str, duration_s: float) -> None:
    """The cashier switched from ``from_provider`` to ``to_provider`` ``duration_s`` seconds after Pay."""
    TIME_TO_FALLBACK.labels(from_provider=from_provider, to_provider=to_provider).observe(max(duration_s, 0.0))


# ------------------------------------------------------------------------------- scrape-time values


async def _database_counts(db: Database, venue_id: int | None = None) -> dict[str, int]:
    from ..payments.models import PaymentAttempt
    from ..payments.states import DOUBTFUL, UNRESOLVED
    from ..sessions.models import CashSession

    def scoped(query, model):
        return query if venue_id is None else query.where(model.venue_id == venue_id)

    async with db.reader() as s:
        in_doubt = (
            await s.execute(
                scoped(
                    select(func.count()).select_from(PaymentAttempt).where(PaymentAttempt.state.in_(DOUBTFUL)),
                    PaymentAttempt,
                )
            )
        ).scalar_one()
        unresolved = (
            await s.execute(
                scoped(
                    select(func.count()).select_from(PaymentAttempt).where(PaymentAttempt.state.in_(UNRESOLVED)),
                    PaymentAttempt,
                )
            )
        ).scalar_one()
        sessions = (
            await s.execute(
                scoped(select(func.count()).select_from(CashSession).where(CashSession.status != "closed"), CashSession)
            )
        ).scalar_one()
    return {"in_doubt": int(in_doubt), "unresolved": int(unresolved), "open_sessions": int(sessions)}


async def collect(db: Database, **health_kwargs: Any) -> dict[str, Any]:
    """Refresh the scrape-time series and return the JSON summary (see :func:`summary`).

    With ``venue_id`` (a venue admin's view) the summary covers that venue only and leaves out the
    instance's own figures (requests, payment counters of this process); the Prometheus series are not
    refreshed (they are the install's, for the metrics token)."""
    from .health import check_health

    venue_id = health_kwargs.get("venue_id")
    report = await check_health(db, **health_kwargs)
    services = report.services
    values: dict[str, list[tuple[dict[str, str], float]]] = {}

    def put(name: str, value: float, **labels: str) -> None:
        values.setdefault(name, []).append((labels, float(value)))

    put("caja_health_status", HEALTH_VALUES[report.status])
    db_ok = services.get("database") == "connected" and services["migrations"]["status"] == "at_head"
    put("caja_database_up", 1 if db_ok else 0)

    counts = {"in_doubt": 0, "unresolved": 0, "open_sessions": 0}
    if db_ok:
        with contextlib.suppress(Exception):  # the health report already says what is wrong
            counts = await _database_counts(db, venue_id)
        put("caja_payment_attempts_in_doubt", counts["in_doubt"])
        put("caja_payment_attempts_unresolved", counts["unresolved"])
        put("caja_cash_sessions_open", counts["open_sessions"])

    open_breakers = 0
    missing_agents = 0
    breakers: dict[str, dict[str, str]] = {}
    agents: dict[str, Any] = {}
    for code, register in (services.get("registers") or {}).items():
        for device, state in register["breakers"].items():
            put("caja_breaker_state", BREAKER_VALUES.get(state, 2), register=code, device=device)
            if state != "closed":
                open_breakers += 1
            breakers.setdefault(code, {})[device] = state
        agent = register["agent"]
        if agent["status"] != "not_used":
            agents[code] = agent
            if agent["status"] in ("stale", "never_seen"):
                missing_agents += 1
            put("caja_agent_last_seen_age_seconds", agent.get("age_s", math.inf), register=code)
    if "registers" in services:
        put("caja_breakers_open", open_breakers)
        put("caja_agents_missing", missing_agents)

    backups = services.get("backups")
    if backups is not None and backups.get("status") != "not_scheduled" and venue_id is None:
        last = backups.get("last_success_at")
        if isinstance(last, str):
            put("caja_backup_last_success_timestamp_seconds", datetime.fromisoformat(last).timestamp())
        age_hours = backups.get("age_hours")
        put("caja_backup_age_seconds", age_hours * 3600 if age_hours is not None else math.inf)
        put("caja_backup_last_run_failed", 1 if backups["status"] == "failed" else 0)
        put("caja_backups_damaged", backups.get("damaged") or 0)

    instance = health_kwargs.get("instance") or ""
    local = {
        name: worker["status"] if isinstance(worker, dict) else worker
        for name, worker in services.get("workers", {}).items()
    }
    for name, state in local.items():
        put("caja_worker_up", 1 if state == "ok" else 0, process=instance or "local", worker=name)
    for name, process in (services.get("processes") or {}).items():
        if process["status"] == "stopped":
            continue
        live = process["status"] != "stale"
        put("caja_process_up", 1 if live else 0, process=name, kind=process["kind"])
        put("caja_process_last_beat_age_seconds", process["age_s"], process=name, kind=process["kind"])
        if name == instance:
            continue  # this instance's workers come from its own registry (above), not its last beat
        for worker, state in process["workers"].items():
            put("caja_worker_up", 1 if live and state == "ok" else 0, process=name, worker=worker)

    certificate = services.get("tls_certificate")
    if certificate and certificate.get("not_after"):
        put(
            "caja_tls_certificate_expiry_timestamp_seconds",
            datetime.fromisoformat(certificate["not_after"]).timestamp(),
        )

    if venue_id is None:
        SCRAPE.values = values
        BUILD_INFO.clear()
        BUILD_INFO.labels(version=report.version).set(1)
    return summary(
        report=report.to_dict(), counts=counts, breakers=breakers, agents=agents, instance_figures=venue_id is None
    )


def prometheus_text() -> bytes:
    """The text exposition of every caja series (call :func:`collect` first to refresh gauges)."""
    return generate_latest(REGISTRY)


# ------------------------------------------------------------------------------------ JSON summary


def _histogram_groups(histogram: Histogram, group_by: tuple[str, ...]) -> dict[tuple[str, ...], dict]:
    """Bucket counts, sum and count of a histogram, summed over the labels not in ``group_by``."""
    groups: dict[tuple[str, ...], dict] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            key = tuple(sample.labels.get(name, "") for name in group_by)
            group = groups.setdefault(key, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                group["buckets"][le] = group["buckets"].get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                group["sum"] += sample.value
            elif sample.name.endswith("_count"):
                group["count"] += sample.value
    return groups


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Estimate a quantile from cumulative buckets (linear inside the bucket, like histogram_quantile)."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total == 0:
        return None
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return previous_le
            if count == previous_count:
                return le
            return previous_le + (le - previous_le) * (rank - previous_count) / (count - previous_count)
        previous_le, previous_count = le, count
    return previous_le


def _latency(group: dict) -> dict[str, Any]:
    return {
        "count": int(group["count"]),
        "mean_s": round(group["sum"] / group["count"], 4) if group["count"] else None,
        "p50_s": _round(quantile(group["buckets"], 0.5)),
        "p95_s": _round(quantile(group["buckets"], 0.95)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summary(
    *, report: dict[str, Any], counts: dict[str, int], breakers: dict, agents: dict, instance_figures: bool = True
) -> dict[str, Any]:
    """The JSON of ``/metrics``. ``instance_figures=False`` (a venue admin) leaves out what this process
    counted for every venue (requests, payment counters and latencies)."""
    by_status: dict[str, int] = {}
    by_route: dict[str, int] = {}
    total = 0
    for metric in HTTP_REQUESTS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            cls = f"{sample.labels['status'][0]}xx"
            by_status[cls] = by_status.get(cls, 0) + int(sample.value)
            route = f"{sample.labels['method']} {sample.labels['route']}"
            by_route[route] = by_route.get(route, 0) + int(sample.value)
            total += int(sample.value)
    overall = _histogram_groups(HTTP_LATENCY, ())
    attempts: dict[str, dict[str, int]] = {}
    for metric in PAYMENT_ATTEMPTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                attempts.setdefault(sample.labels["provider"], {})[sample.labels["outcome"]] = int(sample.value)
    approval = {key[0]: _latency(g) for key, g in _histogram_groups(TIME_TO_APPROVAL, ("provider",)).items()}
    fallback = {
        f"{k[0]}→{k[1]}": _latency(g)
        for k, g in _histogram_groups(TIME_TO_FALLBACK, ("from_provider", "to_provider")).items()
    }
    services = report["services"]
    data = {
        "generated_at": utcnow().isoformat(),
        "status": report["status"],
        "problems": report["problems"],
        "requests": {
            "total": total,
            "by_status": dict(sorted(by_status.items())),
            "error_rate_5xx": round(by_status.get("5xx", 0) / total, 4) if total else 0.0,
            "latency": _latency(overall[()]) if () in overall else _latency({"buckets": {}, "sum": 0, "count": 0}),
            "top_routes": dict(sorted(by_route.items(), key=lambda kv: -kv[1])[:15]),
        },
        "payments": {
            "attempts": attempts,
            "time_to_approval": approval,
            "time_to_fallback": fallback,
            "in_doubt": counts["in_doubt"],
            "unresolved": counts["unresolved"],
        },
        "breakers": {
            "open": sum(1 for reg in breakers.values() for s in reg.values() if s != "closed"),
            "by_register": breakers,
        },
        "sessions": {"open": counts["open_sessions"]},
        "registers": {
            code: {
                "mode": r["mode"],
                "allowed_methods": r["allowed_methods"],
                "operational_status": r["operational_status"],
            }
            for code, r in (services.get("registers") or {}).items()
        },
        "agents": agents,
        "backups": services.get("backups"),
        "workers": services.get("workers", {}),
        "database": services.get("database"),
        "migrations": services.get("migrations"),
    }
    if "processes" in services:
        data["processes"] = services["processes"]
    if not instance_figures:
        del data["requests"]
        data["payments"] = {"in_doubt": counts["in_doubt"], "unresolved": counts["unresolved"]}
    return data


def metric_names() -> set[str]:
    """Every series name this registry exposes (as written in the text exposition)."""
    names: set[str] = set()
    for metric in REGISTRY.collect():
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
        elif metric.type == "histogram":
            names.update({f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"})
        else:
            names.add(metric.name)
    return names | set(SCRAPE_METRICS)
