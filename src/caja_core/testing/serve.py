"""``caja serve`` as a real process for tests: on a loopback port of its own and a given database, killed with
SIGKILL (``kill``) and started again on the same port (``start`` once more) — a crash and a restart as they
happen on a venue's server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

#: The ``caja`` command of the running environment.
CAJA = str(Path(sys.executable).with_name("caja"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    """``caja serve`` on a fixed port, its output in ``folder``. Without ``instance_id`` each start has the default
    name (host-pid), so a restarted process is another instance."""

    def __init__(self, folder: Path, database_url: str, instance_id: str | None = None) -> None:
        self.folder, self.database_url, self.instance_id = folder, database_url, instance_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.instance_id or 'serve'}-{self.starts}.log"

    def start(self, timeout_s: float = 90) -> Self:
        """Start the process and wait until it answers ``/health/live`` (fails with its output if it exits)."""
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
        with self.log_path.open("wb") as log:
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
            if self._live():
                return self
            assert time.monotonic() < deadline, f"caja serve no respondió:\n{self.log()}"
            time.sleep(0.1)

    async def start_async(self, timeout_s: float = 90) -> Self:
        """``start`` without blocking the caller's event loop (a simulator on that loop keeps answering)."""
        return await asyncio.to_thread(self.start, timeout_s)

    def _live(self) -> bool:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(self.url + "/health/live", timeout=5) as response,
        ):
            return bool(response.status == 200)
        return False

    def log(self) -> str:
        """The end of the current process's output."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """kill -9."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """A clean stop (SIGTERM), SIGKILL if it does not end within 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
