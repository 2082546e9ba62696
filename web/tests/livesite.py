"""A real caja server for browser tests: uvicorn on a free loopback port in a thread of its own, with the
GETNET simulator on another port of the same event loop and a migrated SQLite file prepared with the core's
test factories."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from caja_core.db import Database
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.settings import load_settings
from caja_core.testing.factories import make_setup
from caja_web.app import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveSite:
    def __init__(self, database_url: str, *plugins, open_jornada: bool = True, sim_step_delay_s: float = 0.4) -> None:
        self.database_url = database_url
        self.plugins = plugins
        self.open_jornada = open_jornada
        self.sim_step_delay_s = sim_step_delay_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.simulator = None
        self.sim_address: tuple[str, int] | None = None
        self.setup = None
        self.server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name="caja-live-site", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc

    async def _main(self) -> None:
        from caja_getnet.simulator import Simulator

        self.simulator = Simulator(step_delay_s=self.sim_step_delay_s)
        self.sim_address = await self.simulator.start_tcp()
        pm = make_plugin_manager(*self.plugins)
        db = Database(self.database_url)
        self.setup = await make_setup(db, ProviderRegistry.from_plugin_manager(pm), open_jornada=self.open_jornada)
        settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": self.database_url})
        app = create_app(settings, db=db, pm=pm)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        try:
            await self.server.serve()
        finally:
            await self.simulator.stop()
            await db.dispose()

    def start(self) -> LiveSite:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self.server and self.server.started):
            if self._error or time.monotonic() > deadline:
                raise RuntimeError(f"el servidor no arrancó: {self._error!r}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.should_exit = True
        self._thread.join(timeout=15)

    def add_fault(self, **fault) -> None:
        """Inject a GETNET simulator fault for the next sale (thread-safe)."""
        self.loop.call_soon_threadsafe(self.simulator.add_fault, fault)
