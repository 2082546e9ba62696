"""A server restart in the middle of a card sale, through the real stack: `caja serve` as a real process (killed
with SIGKILL and started again on the same port and database: ``caja_core.testing.serve``), the GETNET simulator
over a real socket in a thread of its own, and a venue prepared with the core's test factories."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from caja_core.db import Database
from caja_core.fallback.policy import FallbackPolicy
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.testing.factories import make_setup
from caja_getnet.simulator import Simulator

POLICY = {
    "max_wait_s": 60,
    "triggers": ["unavailable", "transport_error", "timeout", "decline"],
    "decline_codes": ["51"],
    "backup_phones_required": 1,
}


class Terminal:
    """The GETNET simulator on a loopback port, in a thread with its own event loop (it lives through the
    server's kill, as the real terminal does)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(terminal_id="T0001", serial_number="SN-0001", step_delay_s=0.3)
        self._thread = threading.Thread(target=self.loop.run_forever, name="getnet-sim", daemon=True)
        self._thread.start()
        self.address = self.call(self.sim.start_tcp())

    def call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def add_fault(self, **fault: Any) -> None:
        self.loop.call_soon_threadsafe(self.sim.add_fault, fault)

    def charges(self) -> dict[str, int]:
        return dict(self.sim.tickets())

    def sales_sent(self) -> int:
        return sum(1 for c in list(self.sim.commands) if c.get("Command") == 100)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def prepare(url: str, terminal: Terminal, policy: dict | None = None) -> Any:
    """The venue with one register whose primary is the simulated GETNET terminal and whose backup is KLAP."""

    async def work():
        db = Database(url)
        try:
            registry = ProviderRegistry.from_plugin_manager(make_plugin_manager())
            return await make_setup(
                db,
                registry,
                primary="getnet",
                backup="klap",
                policy=FallbackPolicy(**{**POLICY, **(policy or {})}),
                phones=1,
                provider_settings={
                    "getnet": {
                        "connection": "tcp",
                        "host": "127.0.0.1",
                        "port": terminal.address[1],
                        "receipt_timeout_s": 2.0,
                    }
                },
            )
        finally:
            await db.dispose()

    return asyncio.run(work())
