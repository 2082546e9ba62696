"""``RecordingListener``: an ``on_payment_event`` listener for tests that keeps every event it receives.

It is part of caja (it only appends to a list), so it runs inline like caja's own listeners: a test reads the
events of a payment as soon as the payment's change is committed."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


class RecordingListener:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def on_payment_event(self, event: Any) -> None:
        self.seen.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.seen]
