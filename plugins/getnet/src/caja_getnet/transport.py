"""How bytes reach the terminal: TCP or a serial port, behind one small interface.

A ``Transport`` opens a ``Connection`` per command. ``open()`` raises ``TerminalUnavailable`` when nothing
can have been sent (port missing or busy, connection refused, connect time-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from typing import Protocol

import serial


class TerminalUnavailable(Exception):
    """The terminal could not be reached at all: nothing was sent."""


class Connection(Protocol):
    async def read(self) -> bytes:
        """The next chunk of bytes; ``b""`` when the other side closed or the device went away."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    description: str

    async def open(self) -> Connection: ...


# --- TCP ------------------------------------------------------------------------------------------------


class TcpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(65536)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class TcpTransport:
    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 3.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.description = f"tcp://{host}:{port}"

    async def open(self) -> TcpConnection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout_s
            )
        except TimeoutError as exc:
            raise TerminalUnavailable(f"El terminal {self.host}:{self.port} no responde (sin conexión).") from exc
        except ConnectionRefusedError as exc:
            raise TerminalUnavailable(f"El terminal {self.host}:{self.port} rechazó la conexión.") from exc
        except OSError as exc:
            raise TerminalUnavailable(
                f"No se pudo conectar al terminal {self.host}:{self.port}: {exc.strerror or exc}."
            ) from exc
        return TcpConnection(reader, writer)


# --- serial ---------------------------------------------------------------------------------------------


class SerialConnection:
    """A serial port (115200 8N1, no flow control) read through the event loop (``add_reader`` on its fd)."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port
        self._fd = port.fileno()
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the device went away (unplugged)
        if not data:
            self._loop.remove_reader(self._fd)
        self._chunks.put_nowait(data)

    async def read(self) -> bytes:
        if self._closed:
            return b""
        data = await self._chunks.get()
        if not data:
            self._closed = True
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            except OSError as exc:
                raise ConnectionError(f"Error escribiendo al puerto serie: {exc.strerror or exc}") from exc
            view = view[n:]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()


class ThreadedSerialConnection:
    """The same, for systems without ``add_reader`` on serial ports (Windows COM ports): a reader thread."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._reader, name="caja-getnet-serial", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError, TypeError):
                data = None  # the device went away
            if data is None:
                self._loop.call_soon_threadsafe(self._chunks.put_nowait, b"")
                return
            if data:
                self._loop.call_soon_threadsafe(self._chunks.put_nowait, data)

    async def read(self) -> bytes:
        if self._closed:
            return b""
        data = await self._chunks.get()
        if not data:
            self._closed = True
        return data

    async def write(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._port.write, data)
        except (serial.SerialException, OSError) as exc:
            raise ConnectionError(f"Error escribiendo al puerto serie: {exc}") from exc

    async def close(self) -> None:
        self._closed = True
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 1.0)
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()


class SerialTransport:
    """A serial port, opened per command with exclusive access. ``threaded`` reads in a thread (the default
    where the event loop cannot watch the port, i.e. Windows)."""

    def __init__(self, path: str, *, baudrate: int = 115200, threaded: bool | None = None) -> None:
        self.path = path
        self.baudrate = baudrate
        self.threaded = (os.name != "posix") if threaded is None else threaded
        self.description = f"serial:{path}"

    async def open(self) -> SerialConnection | ThreadedSerialConnection:
        if os.name == "posix" and not await asyncio.to_thread(os.path.exists, self.path):
            raise TerminalUnavailable(f"No existe el puerto serie {self.path} (¿terminal desconectado?).")
        options = {"exclusive": True} if os.name == "posix" else {}
        try:
            port = serial.Serial(
                self.path,
                baudrate=self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                xonxoff=False,
                rtscts=False,
                dsrdtr=False,
                timeout=0.05 if self.threaded else 0,
                **options,
            )
        except serial.SerialException as exc:
            text = str(exc)
            if getattr(exc, "errno", None) in (errno.EBUSY, errno.EAGAIN) or "lock" in text.lower() or "busy" in text:
                raise TerminalUnavailable(f"El puerto serie {self.path} está ocupado por otro programa.") from exc
            if getattr(exc, "errno", None) == errno.ENOENT or "FileNotFoundError" in text:
                raise TerminalUnavailable(f"No existe el puerto serie {self.path} (¿terminal desconectado?).") from exc
            raise TerminalUnavailable(f"No se pudo abrir el puerto serie {self.path}: {text}") from exc
        if self.threaded:
            return ThreadedSerialConnection(port)
        os.set_blocking(port.fileno(), False)
        return SerialConnection(port)


def make_transport(
    *, host: str | None = None, port: int | None = None, serial_path: str | None = None, connect_timeout_s: float = 3.0
) -> Transport:
    if serial_path:
        return SerialTransport(serial_path)
    if host and port:
        return TcpTransport(host, int(port), connect_timeout_s=connect_timeout_s)
    raise ValueError("Se necesita host y puerto TCP, o la ruta del puerto serie.")
