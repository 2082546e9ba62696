"""The built-in ``on_payment_event`` listener that feeds the payment metrics.

* ``caja_payment_attempts_total{provider, outcome}``: approved, declined, failed_not_sent, in_doubt,
  cancelled, refunded, and the state a reconciliation ended in;
* ``caja_payment_time_to_approval_seconds{provider}``: from the attempt's start to its approval;
* ``caja_payment_time_to_fallback_seconds{from_provider, to_provider}``: from the sale's first attempt to the
  switch to the backup;
* ``caja_breaker_openings_total{device}``.

Times are measured between events seen by this instance (start and outcome of an attempt happen in the
instance that runs it); the maps are bounded so attempts finished elsewhere cannot grow them.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from ..hookspecs import hookimpl

OUTCOME_OF_KIND = {
    "approved": "approved",
    "declined": "declined",
    "not_sent": "failed_not_sent",
    "in_doubt": "in_doubt",
    "cancelled": "cancelled",
    "refunded": "refunded",
}
MAX_TRACKED = 10_000


class _Bounded(OrderedDict):
    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > MAX_TRACKED:
            self.popitem(last=False)


_lock = threading.Lock()
_attempt_started: _Bounded = _Bounded()  # attempt id -> start instant
_sale_started: _Bounded = _Bounded()  # sale id -> (first provider, start instant)


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


def observe(event: Any) -> None:
    """Update the metrics for one payment event (``caja_core.payments.events.PaymentEvent``)."""
    from . import metrics  # imported on first use: the CLI loads this plugin and should start fast

    kind = event.kind
    provider = event.provider_id or "?"
    with _lock:
        if kind == "attempt_started":
            if event.attempt_id is not None:
                _attempt_started.remember(event.attempt_id, event.at)
            if event.sale_id is not None and event.sale_id not in _sale_started:
                _sale_started.remember(event.sale_id, (provider, event.at))
            return
        if kind == "fell_back":
            first = _sale_started.get(event.sale_id)
            if first is not None:
                metrics.record_fallback(first[0], provider, _seconds(first[1], event.at))
            return
        if kind == "breaker_opened":
            metrics.BREAKER_OPENINGS.labels(device=event.device_key or "?").inc()
            return
        if kind == "reconciled":
            outcome = event.state or "reconciled"
        else:
            outcome = OUTCOME_OF_KIND.get(kind)
        if outcome is None:
            return
        started = _attempt_started.get(event.attempt_id)
        duration = _seconds(started, event.at) if started is not None else None
        if outcome in ("approved", "declined", "failed_not_sent", "cancelled", "refunded"):
            _attempt_started.pop(event.attempt_id, None)
        if outcome in ("approved", "refunded"):
            _sale_started.pop(event.sale_id, None)
    metrics.record_attempt(provider, outcome, duration)


@hookimpl
def on_payment_event(event: Any) -> None:
    with contextlib.suppress(Exception):  # a metrics problem must never touch the money path
        observe(event)
