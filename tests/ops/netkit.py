"""Real processes and sockets for the operations tests: a `caja serve` subprocess, free ports, and a TCP
proxy in front of PostgreSQL that a test can cut (the database "goes down": new connections are refused and
open ones reset) and restore."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

CAJA = str(Path(sys.executable).parent / "caja")
SECRET = "k7Q2vX9pL4mN8rT1wY6zB3cD5fG0hJ2sA9uE"
TOKEN = "metrics-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def caja_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({"CAJA_SECRET_KEY": SECRET, "CAJA_METRICS_TOKEN": TOKEN, "CAJA_LOG_FORMAT": "json"})
    env.update(values)
    return env


class Serve:
    """`caja serve` on a free port, its stderr (JSON logs) in a file."""

    def __init__(self, tmp: Path, name: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [CAJA, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=caja_env(CAJA_INSTANCE_ID=name, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, path: str = "/health/live", status: int = 200, timeout_s: float = 60) -> httpx.Response:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"caja serve terminó (código {self.proc.returncode}):\n{self.log()}"
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.url + path, timeout=5)
                if r.status_code == status:
                    return r
            assert time.monotonic() < deadline, f"{path} no llegó a {status}:\n{self.log()[-3000:]}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` refuses and resets, ``restore()`` forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update({client, upstream})
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.discard(a)
                self._sockets.discard(b)
