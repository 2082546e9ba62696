"""A server restart in the middle of a card sale, through the real stack: `caja serve` as a real process (killed
with SIGKILL and started again on the same port and database), the GETNET simulator over a real socket in a
thread of its own, and a venue prepared with the core's test factories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from caja_core.db import Database
from caja_core.fallback.policy import FallbackPolicy
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.testing.factories import make_setup
from caja_getnet.simulator import Simulator

CAJA = str(Path(sys.executable).with_name("caja"))

POLICY = {
    "max_wait_s": 60,
    "triggers": ["unavailable", "transport_error", "timeout", "decline"],
    "decline_codes": ["51"],
    "backup_phones_required": 1,
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class Server:
    """`caja serve` on a fixed port; ``kill()`` is a SIGKILL, ``start()`` again is the restart. Without
    ``instance_id`` each start has the default name (host-pid), so the new process is another instance."""

    def __init__(self, folder: Path, url: str, instance_id: str | None = None) -> None:
        self.folder, self.database_url, self.instance_id = folder, url, instance_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 90) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
        env.update(
            {
                "CAJA_ENV": "demo",
                "CAJA_DATABASE_URL": self.database_url,
                "CAJA_DATA_DIR": str(self.folder),
                "CAJA_BACKUP_DIR": str(self.folder / "backups"),
                "CAJA_BACKUP_INTERVAL_HOURS": "0",
                "CAJA_LOG_LEVEL": "WARNING",
                "CAJA_LOG_FORMAT": "text",
            }
        )
        if self.instance_id:
            env["CAJA_INSTANCE_ID"] = self.instance_id
        self.starts += 1
        log = (self.folder / f"serve-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [CAJA, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"caja serve terminó:\n{self.log()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health/live", timeout=5).status_code == 200:
                    return self
            assert time.monotonic() < deadline, f"caja serve no respondió:\n{self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        return (self.folder / f"serve-{self.starts}.log").read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
