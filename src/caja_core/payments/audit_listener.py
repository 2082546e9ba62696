"""The built-in ``on_payment_event`` listener: every payment event becomes an audit event.

Hooks are synchronous and must be fast, so the listener only queues the event; a task owned by the
orchestrator writes the queue to ``audit_events`` in small batches. Events the orchestrator already audited in
their own transaction (supervisor overrides, refunds) are not written twice. The orchestrator installs it under
the plugin name ``caja-payment-audit``; an application that wants no audit of payment events blocks that name
(``pm.set_blocked("caja-payment-audit")``) before starting the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..hookspecs import hookimpl
from .events import PaymentEvent

log = logging.getLogger("caja.payments.audit")

PLUGIN_NAME = "caja-payment-audit"


class PaymentAuditListener:
    def __init__(self, db: Any) -> None:
        self.db = db
        self.queue: asyncio.Queue[PaymentEvent | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    @classmethod
    def install(cls, pm: Any, db: Any) -> PaymentAuditListener | None:
        if pm.is_blocked(PLUGIN_NAME) or pm.get_plugin(PLUGIN_NAME) is not None:
            return None
        listener = cls(db)
        pm.register(listener, name=PLUGIN_NAME)
        listener.task = asyncio.create_task(listener._writer(), name="caja-payment-audit")
        return listener

    async def uninstall(self, pm: Any) -> None:
        if pm.get_plugin(PLUGIN_NAME) is self:
            pm.unregister(self)
        if self.task is not None:
            self.queue.put_nowait(None)  # write what is queued, then stop
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 10)
            except Exception:  # noqa: BLE001 - a writer that failed or hangs is cancelled; shutdown goes on
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.task

    @hookimpl
    def on_payment_event(self, event: Any) -> None:
        if isinstance(event, PaymentEvent) and not event.audited:
            self.queue.put_nowait(event)

    async def _writer(self) -> None:
        stopping = False
        while not stopping:
            first = await self.queue.get()
            batch = [first]
            while not self.queue.empty() and len(batch) < 100:
                batch.append(self.queue.get_nowait())
            stopping = None in batch
            events = [e for e in batch if e is not None]
            if not events:
                continue
            try:
                await self._write(events)
            except Exception:
                log.exception("could not write %d payment audit events", len(events))

    async def _write(self, batch: list[PaymentEvent]) -> None:
        from ..audit.service import record

        async with self.db.session() as s:
            for e in batch:
                payload = {
                    "sale_id": e.sale_id,
                    "session_id": e.session_id,
                    "register_id": e.register_id,
                    "provider": e.provider_id,
                    "role": e.role,
                    "amount": e.amount,
                    "state": e.state,
                    "reason": e.reason[:300],
                }
                await record(
                    s,
                    venue_id=e.venue_id,
                    user_id=e.user_id,
                    action=f"payment.{e.kind}",
                    entity="payment_attempt",
                    entity_id=e.attempt_id or "",
                    payload=payload,
                )
