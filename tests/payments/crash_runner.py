"""Run the payment orchestrator as a real process, for kill -9 tests.

    python tests/payments/crash_runner.py --url URL --ledger FILE --venue V --user U \
        [--charge JSON-LIST-OF-STEPS] [--refund JSON-LIST-OF-STEPS] [--kill-before-approved-commit] \
        pay SALE [SALE...]
    python tests/payments/crash_runner.py ... recover SALE [SALE...]

``pay`` starts the orchestrator (which first recovers whatever a previous run left behind), pays each sale and
waits until it is resolved; ``recover`` only starts and stops it. Both print one JSON object: the progress of
each sale. The primary terminal is a ``ScriptableProvider`` whose ledger is a file, so what it charged survives
the kill. A step with ``crash_at`` or ``--kill-before-approved-commit`` makes this process SIGKILL itself at
that point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

import msgspec
from sqlalchemy import event
from sqlalchemy.orm import Session

from caja_core import hookimpl
from caja_core.db.engine import Database
from caja_core.payments.models import PaymentAttempt
from caja_core.payments.service import PaymentOrchestrator
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.testing.fake import ScriptableProvider, Step, manual_provider


class Providers:
    def __init__(self, *providers) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider):
        for p in self.providers:
            add_provider(p)


def kill_before_approved_commit() -> None:
    @event.listens_for(Session, "before_commit")
    def _kill(session):  # the approval arrived and is about to be committed: die here
        for obj in list(session.identity_map.values()) + list(session.new):
            if isinstance(obj, PaymentAttempt) and obj.state == "approved":
                os.kill(os.getpid(), signal.SIGKILL)


async def run(args: argparse.Namespace) -> dict:
    provider = ScriptableProvider("fake", ledger_path=args.ledger)
    for raw in json.loads(args.charge):
        provider.script("charge", msgspec.convert(raw, Step))
    for raw in json.loads(args.refund):
        provider.script("refund", msgspec.convert(raw, Step))
    pm = make_plugin_manager(Providers(provider, manual_provider("fakebackup")), load_entrypoints=False)
    registry = ProviderRegistry.from_plugin_manager(pm)
    db = Database(args.url)
    if args.kill_before_approved_commit:
        kill_before_approved_commit()
    orch = PaymentOrchestrator(
        db,
        registry,
        pm,
        instance_id="caja-1",
        worker_interval_s=0.05,
        cancel_timeout_s=1,
        cancel_grace_s=0.2,
        status_timeout_s=2,
        health_timeout_s=1,
        reconcile_backoff_s=(0.05, 0.2),
    )
    await orch.start()
    try:
        out = {}
        for sale_id in args.sales:
            if args.mode == "pay":
                await orch.start_payment(args.venue, sale_id, args.user)
                deadline = time.monotonic() + 15
                while True:
                    p = await orch.poll(args.venue, sale_id)
                    if p.paid or (not p.in_doubt and p.state not in ("created", "sending", "awaiting")):
                        break
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.02)
            out[str(sale_id)] = msgspec.to_builtins(await orch.poll(args.venue, sale_id))
        return out
    finally:
        await orch.stop()
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--venue", type=int, required=True)
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--charge", default="[]")
    parser.add_argument("--refund", default="[]")
    parser.add_argument("--kill-before-approved-commit", action="store_true")
    parser.add_argument("mode", choices=["pay", "recover"])
    parser.add_argument("sales", type=int, nargs="+")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
