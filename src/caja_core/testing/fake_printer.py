"""A fake ESC/POS network printer on a loopback socket: it keeps the bytes of every job (one connection
= one job) and answers the real-time status queries (DLE EOT n) like a printer with or without paper.

    with FakeNetworkPrinter() as printer:
        ... point a register at printer.host, printer.port ...
        job = printer.wait_for_jobs(1)[0]
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Self

#: DLE EOT 4 answers: paper present, near its end, out.
PAPER = {"ok": 0x12, "low": 0x1E, "out": 0x72}


def closed_port() -> int:
    """A loopback port nothing listens on (a printer that is switched off)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeNetworkPrinter:
    def __init__(self, paper: str = "ok", *, answers_status: bool = True, held: bool = False) -> None:
        self.paper = paper
        self.answers_status = answers_status
        #: A held printer answers no status query until ``release()`` (a printer busy or slow to wake).
        self._released = threading.Event()
        if not held:
            self._released.set()
        self.jobs: list[bytes] = []
        self.status_queries = 0
        self._cond = threading.Condition()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.host, self.port = self._sock.getsockname()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> Self:
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name="fake-printer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def settings(self) -> dict[str, Any]:
        """Settings for the ``escpos_network`` printer pointing here."""
        return {"host": self.host, "port": self.port, "timeout_s": 2.0}

    def wait_for_jobs(self, count: int, timeout_s: float = 15.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.jobs) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the printer got {len(self.jobs)} jobs, expected {count}")
                self._cond.wait(left)
            return list(self.jobs)

    def release(self) -> None:
        self._released.set()

    async def jobs_after(self, count: int, timeout_s: float = 15.0) -> list[bytes]:
        """``wait_for_jobs`` from async code (the event loop keeps running the jobs being waited for)."""
        return await asyncio.to_thread(self.wait_for_jobs, count, timeout_s)

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._job, args=(conn,), daemon=True).start()

    def _job(self, conn: socket.socket) -> None:
        data = bytearray()
        conn.settimeout(10)
        with conn:
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
                while (at := data.find(b"\x10\x04")) >= 0 and len(data) > at + 2:
                    n = data[at + 2]
                    del data[at : at + 3]
                    self.status_queries += 1
                    self._released.wait(30)
                    if self.answers_status:
                        conn.sendall(bytes([PAPER[self.paper] if n == 4 else 0x12]))
        with self._cond:
            if data:
                self.jobs.append(bytes(data))
            self._cond.notify_all()
