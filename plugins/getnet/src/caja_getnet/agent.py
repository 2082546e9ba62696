"""``caja agent``: the register-PC side of a GETNET terminal that hangs off the register PC by USB.

The agent owns the local serial port (or reaches a terminal by TCP) and talks to the caja server over HTTP(S)
with the register's token (``Authorization: Bearer <token>``):

* ``GET  /api/agent/v1/commands/next?wait=25`` → 200 ``{"command_id", "attempt_id", "payload", "deadline_s",
  "fence", "expires_in_s"}`` or 204 (long poll). ``payload`` is the terminal command (``{"Command": 100, …}``).
* ``POST /api/agent/v1/commands/{id}/claim`` ``{"fence": n}`` — right before the command touches the terminal:
  200 → run it; 409 → never run it (revoked, expired, a newer delivery exists, or already started).
* ``POST /api/agent/v1/commands/{id}/progress`` ``{"message", "code"}`` — the terminal's receipt (code null)
  and each intermediate message.
* ``POST /api/agent/v1/commands/{id}/result`` ``{"result": {...}}`` — idempotent on the server. ``result`` is the
  terminal's final response (card data masked), or ``{"AgentError": "unavailable"|"no_receipt"|"in_doubt"|
  "invalid", "Detail": "…"}`` when there is none.
* ``POST /api/agent/v1/heartbeat`` ``{"terminal": "ok"|"unreachable", "detail": "…"}`` every few seconds.

Every request carries ``X-Caja-Agent-Instance``: a random id this process draws when it starts. The server lets
one process serve a register; another one (a second agent started with the same token, or this one restarted
before the old one's lease ran out) gets 409 ``agent.other_instance`` on its polls, claims and heartbeats. It logs
that and asks again every ``other_instance_retry_s``: when the other one stopped, it takes over after the lease.

Fencing: a command received from the server may only be started before it expires — ``expires_in_s`` counted
on this process's monotonic clock from the moment the command arrived (a wall-clock step changes nothing) —
and only after the server confirmed the claim. The check and the claim happen with the terminal already
reserved for the command (after any command ahead of it), right before the first byte is written. An expired
command, or one whose claim the server refuses, is never sent to the terminal; when the server's answer to a
claim never arrives, the command is not run either and the agent reports ``{"AgentError": "refused"}``.

Never losing a result: each command is journalled on disk before it is claimed (``inflight/<id>.json``,
phase ``claiming`` then ``running``), its result is written to ``outbox/<id>.json`` before it is posted, and the
outbox is re-posted until the server accepts it. A command that was running when the agent died is never sent
to the terminal again: on start-up it is reported ``in_doubt`` (the server then reconciles with
LastVoucher/Details); one that was only being claimed is reported ``refused`` (it never touched the terminal).
A command id already run is never executed twice: if the server sends it again, its stored result is posted
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec

from .client import GateFn, GetnetClient, InDoubt, NoReceipt, Refused
from .protocol import Command, Deadlines, Response, mask_response
from .transport import TerminalUnavailable, Transport

log = logging.getLogger("caja.getnet.agent")

API = "/api/agent/v1"
INSTANCE_HEADER = "X-Caja-Agent-Instance"


class AgentConfig(msgspec.Struct, kw_only=True):
    server_url: str
    token: str
    state_dir: str
    wait_s: int = 25  # long-poll wait asked from the server
    heartbeat_s: float = 5.0
    poll_terminal_every_s: float = 30.0
    receipt_timeout_s: float = 3.0
    retry_max_s: float = 10.0
    token_file: str | None = None  # read again when the server refuses the token (it was rotated)
    other_instance_retry_s: float = 1.0  # another agent serves the register: ask again this often


class TokenAuth(httpx.Auth):
    """``Authorization: Bearer <token>``. When the server answers 401 (the token was rotated) and the token
    file now holds another token (the installer pasted the new one), the request is sent again with it: no
    restart needed."""

    def __init__(self, token: str, token_file: str | None) -> None:
        self.token, self.token_file = token, token_file

    def reload(self) -> bool:
        if not self.token_file:
            return False
        try:
            token = Path(self.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.error("agente: no se pudo leer %s (%s)", self.token_file, exc.strerror)
            return False
        if not token or token == self.token:
            return False
        self.token = token
        log.warning("agente: token nuevo leído de %s", self.token_file)
        return True

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code == 401 and self.reload():
            request.headers["Authorization"] = f"Bearer {self.token}"
            yield request


REFUSED_DETAIL = "El comando no se envió al terminal (vencido, revocado o sin confirmación del servidor)."


async def run_command(
    client: GetnetClient,
    payload: dict[str, Any],
    *,
    deadline_s: float | None,
    progress=None,
    before_send: GateFn | None = None,
) -> dict[str, Any]:
    """Send one command to the terminal; return its final response (masked) or an ``AgentError`` dict.
    ``before_send`` is the fence: it runs with the terminal reserved, right before the first byte; if it says
    no, nothing is sent and the result is ``{"AgentError": "refused"}``."""
    try:
        code = int(payload["Command"])
        Command(code)
    except (KeyError, TypeError, ValueError):
        return {"AgentError": "invalid", "Detail": "Comando desconocido o mal formado."}
    try:
        if code == Command.SALE:
            ticket = str(payload.get("TicketNumber", ""))

            def accept(data: dict[str, Any]) -> bool:
                return Response(data).function_code in (None, Command.SALE) and str(data.get("Ticket", "")) == ticket

            data = await client.exchange(
                payload, accept=accept, progress=progress, deadline_s=deadline_s, before_send=before_send
            )
        elif code == Command.CANCEL_SALE:
            data = await client.cancel_sale(before_send=before_send)
        else:
            data = await client.exchange(payload, deadline_s=deadline_s, before_send=before_send)
    except Refused:
        return {"AgentError": "refused", "Detail": REFUSED_DETAIL}
    except TerminalUnavailable as exc:
        return {"AgentError": "unavailable", "Detail": str(exc)}
    except NoReceipt as exc:
        return {"AgentError": "no_receipt", "Detail": str(exc)}
    except InDoubt as exc:
        return {"AgentError": "in_doubt", "Detail": str(exc)}
    return mask_response(data)


class InProcessAgentChannel:
    """An ``AgentChannel`` whose "agent" runs in this process on a local client: the same ``run_command`` and
    the same ``AgentError`` results as ``caja agent``, without the HTTP hop (rehearsals, tests, a server that
    has the terminal attached itself)."""

    def __init__(self, client: GetnetClient) -> None:
        self.client = client
        self.commands: list[dict[str, Any]] = []

    async def exchange(self, command: dict[str, Any], *, deadline_s: float, progress=None) -> dict[str, Any]:
        from caja_core.providers import Progress

        self.commands.append(mask_response(command))

        async def on_message(code: int | None, text: str) -> None:
            if progress is not None:
                await progress(Progress(message=text, code=code))

        return await run_command(self.client, command, deadline_s=deadline_s, progress=on_message)


class Journal:
    """Commands in flight and results not yet accepted by the server, as small JSON files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for sub in ("inflight", "outbox", "done"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _path(self, sub: str, command_id: str) -> Path:
        safe = "".join(ch for ch in str(command_id) if ch.isalnum() or ch in "-_")
        if not safe:
            raise ValueError("command_id vacío")
        return self.root / sub / f"{safe}.json"

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def seen(self, command_id: str) -> bool:
        return any(self._path(sub, command_id).exists() for sub in ("inflight", "outbox", "done"))

    def start(self, command_id: str, command: dict[str, Any]) -> None:
        """About to claim the command (it has not touched the terminal yet)."""
        self._write(
            self._path("inflight", command_id), {"command_id": command_id, "command": command, "phase": "claiming"}
        )

    def running(self, command_id: str) -> None:
        """The server confirmed the claim: the command is about to reach the terminal."""
        path = self._path("inflight", command_id)
        data = json.loads(path.read_text(encoding="utf-8"))
        self._write(path, data | {"phase": "running"})

    def forget(self, command_id: str) -> None:
        """The claim was refused: the command never touched the terminal and never will (with this delivery)."""
        self._path("inflight", command_id).unlink(missing_ok=True)

    def finish(self, command_id: str, result: dict[str, Any]) -> None:
        self._write(self._path("outbox", command_id), {"command_id": command_id, "result": result})
        self._path("inflight", command_id).unlink(missing_ok=True)

    def delivered(self, command_id: str) -> None:
        """The server accepted the result: keep it in done/ (a re-delivered command gets it again)."""
        outbox = self._path("outbox", command_id)
        if outbox.exists():
            os.replace(outbox, self._path("done", command_id))

    def requeue_done(self, command_id: str) -> bool:
        """The server sent an already finished command again (it lost our result): post the result again."""
        done = self._path("done", command_id)
        if not done.exists():
            return False
        os.replace(done, self._path("outbox", command_id))
        return True

    def outbox(self) -> list[dict[str, Any]]:
        items = []
        for path in sorted((self.root / "outbox").glob("*.json")):
            try:
                items.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                log.error("agente: resultado ilegible en %s", path)
        return items

    def prune_done(self, older_than_s: float = 7 * 24 * 3600) -> int:
        """Forget delivered results after a week (the server will not send those commands again)."""
        limit = time.time() - older_than_s
        removed = 0
        for path in (self.root / "done").glob("*.json"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def recover_inflight(self) -> list[str]:
        """Commands that were in flight when the agent stopped, never resent: a running one is reported in
        doubt; one that was only being claimed never touched the terminal and is reported refused."""
        ids = []
        for path in sorted((self.root / "inflight").glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                command_id = data["command_id"]
            except (OSError, ValueError, KeyError):
                continue
            if data.get("phase") == "claiming":
                result = {"AgentError": "refused", "Detail": "El agente se reinició antes de iniciar el comando."}
            else:
                result = {"AgentError": "in_doubt", "Detail": "El agente se reinició con este comando en curso."}
            self.finish(command_id, result)
            ids.append(command_id)
        return ids


class Delivery(msgspec.Struct, kw_only=True):
    """One delivery of a command: the fence to claim it with, and until when (this process's monotonic clock)
    it may be started."""

    command_id: str
    payload: Any
    deadline_s: float | None
    fence: int
    expires_at: float


class Agent:
    def __init__(self, config: AgentConfig, transport: Transport, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = GetnetClient(transport, deadlines=Deadlines(receipt_s=config.receipt_timeout_s))
        self.journal = Journal(config.state_dir)
        self.instance = uuid.uuid4().hex  # who this process is, for the server: a new one at every start
        if http is not None:
            http.headers[INSTANCE_HEADER] = self.instance
        self._http = http
        self._other_since: float | None = None  # since when the server says another agent serves the register
        self._tasks: set[asyncio.Task] = set()
        self._waiting: dict[str, Delivery] = {}  # received, not started yet: the newest delivery of each
        self._terminal_status = ("ok", "")
        self._last_terminal_check = float("-inf")

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.config.server_url.rstrip("/"),
                auth=TokenAuth(self.config.token, self.config.token_file),
                timeout=httpx.Timeout(10.0, read=self.config.wait_s + 15.0),
                headers={INSTANCE_HEADER: self.instance},
            )
        return self._http

    async def run(self, stop: asyncio.Event) -> None:
        self.journal.prune_done()
        recovered = self.journal.recover_inflight()
        if recovered:
            log.warning("agente: %s comando(s) quedaron en curso al detenerse; se informan en duda", len(recovered))
        await self.flush_outbox()
        heartbeat = asyncio.create_task(self._heartbeat_loop(stop))
        try:
            await self._command_loop(stop)
        finally:
            heartbeat.cancel()
            for task in list(self._tasks):
                # Commands in flight may finish (their result is journalled); one that fails or hangs must not
                # stop the shutdown.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), 130)
            await self.flush_outbox()
            await self.http.aclose()

    # --- commands -----------------------------------------------------------------------------------
    async def _command_loop(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                response = await _until(
                    stop, self.http.get(f"{API}/commands/next", params={"wait": self.config.wait_s})
                )
            except httpx.HTTPError as exc:
                log.warning("agente: servidor no disponible (%s); reintento en %.0f s", type(exc).__name__, backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
                continue
            if response is None:
                break
            if response.status_code == 409 and _error_code(response) == "agent.other_instance":
                self._another_agent(response)
                await _sleep(stop, self.config.other_instance_retry_s)
                continue
            self._serving()
            if response.status_code == 204:
                backoff = 1.0
                await self.flush_outbox()
                continue
            if response.status_code != 200:
                log.error(
                    "agente: el servidor respondió %s a la espera de comandos: %s",
                    response.status_code,
                    response.text[:200],
                )
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
                continue
            backoff = 1.0
            received_at = time.monotonic()
            try:
                body = response.json()
                command_id = str(body["command_id"])
                payload = body["payload"]
                deadline_s = float(body.get("deadline_s") or 0) or None
                fence = int(body.get("fence", 0))
                expires_in_s = float(body["expires_in_s"])
            except (ValueError, KeyError, TypeError):
                log.error("agente: comando mal formado del servidor")
                continue
            if self.journal.seen(command_id):
                log.warning("agente: el comando %s ya fue ejecutado; no se repite, se reenvía su resultado", command_id)
                self.journal.requeue_done(command_id)
                await self.flush_outbox()
                continue
            delivery = Delivery(
                command_id=command_id,
                payload=payload,
                deadline_s=deadline_s,
                fence=fence,
                expires_at=received_at + max(0.0, expires_in_s),
            )
            if command_id in self._waiting:
                self._waiting[command_id] = delivery  # a newer delivery of a command still waiting its turn
                continue
            self._waiting[command_id] = delivery
            task = asyncio.create_task(self._execute(command_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _gate(self, command_id: str, payload: dict[str, Any]) -> bool:
        """The fence, with the terminal reserved for this command: not expired on our clock, not already run,
        and the server confirms the claim. Anything else: the command is not sent."""
        delivery = self._waiting.get(command_id)
        if delivery is None or self.journal.seen(command_id):
            return False
        if time.monotonic() >= delivery.expires_at:
            log.warning("agente: el comando %s venció antes de llegar al terminal; no se ejecuta", command_id)
            return False
        self.journal.start(command_id, mask_response(payload))
        verdict = await self._claim(delivery)
        if verdict == "claimed":
            self.journal.running(command_id)
            return True
        if verdict == "refused":
            self.journal.forget(command_id)
            return False
        log.error("agente: el servidor no confirmó el inicio del comando %s; no se ejecuta", command_id)
        self.journal.finish(
            command_id,
            {"AgentError": "refused", "Detail": "El servidor no confirmó el inicio del comando: no se ejecutó."},
        )
        return False

    async def _claim(self, delivery: Delivery) -> str:
        """``claimed``, ``refused`` (the server said no: never run it) or ``unknown`` (no answer before the
        command expired on our clock). A repeated claim with the same fence is answered ``claimed`` again."""
        pause = 0.2
        while True:
            remaining = delivery.expires_at - time.monotonic()
            if remaining <= 0:
                return "unknown"
            try:
                response = await self.http.post(
                    f"{API}/commands/{delivery.command_id}/claim",
                    json={"fence": delivery.fence},
                    timeout=max(0.5, min(5.0, remaining)),
                )
            except httpx.HTTPError as exc:
                log.warning("agente: sin respuesta al reclamar %s (%s)", delivery.command_id, type(exc).__name__)
            else:
                if response.status_code == 200:
                    return "claimed"
                if 400 <= response.status_code < 500:
                    log.warning(
                        "agente: el servidor no autoriza el comando %s (%s): %s",
                        delivery.command_id,
                        response.status_code,
                        response.text[:200],
                    )
                    return "refused"
            await asyncio.sleep(min(pause, max(0.0, delivery.expires_at - time.monotonic())))
            pause = min(pause * 2, 1.0)

    async def _execute(self, command_id: str) -> None:
        delivery = self._waiting[command_id]
        payload = delivery.payload
        # Intermediate messages are posted in order by a helper task, so a slow server never delays reading
        # (and acknowledging) what the terminal says.
        messages: asyncio.Queue[tuple[int | None, str] | None] = asyncio.Queue()

        async def post_progress() -> None:
            while (item := await messages.get()) is not None:
                with contextlib.suppress(httpx.HTTPError):  # progress is best effort
                    await self.http.post(
                        f"{API}/commands/{command_id}/progress", json={"message": item[1], "code": item[0]}, timeout=3.0
                    )

        async def progress(code: int | None, text: str) -> None:
            messages.put_nowait((code, text))

        asked = started = False

        async def gate() -> bool:
            nonlocal asked, started
            asked = True
            started = await self._gate(command_id, payload)
            return started

        poster = asyncio.create_task(post_progress())
        try:
            if not isinstance(payload, dict):
                result: dict[str, Any] = {"AgentError": "invalid", "Detail": "El comando no es un objeto JSON."}
            else:
                deadline_s = self._waiting[command_id].deadline_s
                result = await run_command(
                    self.client, payload, deadline_s=deadline_s, progress=progress, before_send=gate
                )
            if not asked:  # refused before the fence (malformed): the server hears why
                self.journal.start(command_id, {})
                started = True
            if started:
                self.journal.finish(command_id, result)
        finally:
            self._waiting.pop(command_id, None)
            messages.put_nowait(None)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(poster, 5.0)
        if not started:
            await self.flush_outbox()  # a start the server never confirmed is reported "refused"
            return
        self._terminal_status = (
            ("unreachable", result["Detail"]) if result.get("AgentError") == "unavailable" else ("ok", "")
        )
        log.info(
            "agente: comando %s terminado (%s)",
            command_id,
            result.get("AgentError") or f"código {result.get('ResponseCode')}",
        )
        await self.flush_outbox()

    async def flush_outbox(self) -> None:
        for item in self.journal.outbox():
            command_id = item["command_id"]
            try:
                response = await self.http.post(
                    f"{API}/commands/{command_id}/result", json={"result": item["result"]}, timeout=10.0
                )
            except httpx.HTTPError as exc:
                log.warning(
                    "agente: no se pudo entregar el resultado de %s (%s); se reintentará",
                    command_id,
                    type(exc).__name__,
                )
                return
            if response.status_code < 300:
                self.journal.delivered(command_id)
            elif response.status_code in (404, 409, 410, 422):
                log.error(
                    "agente: el servidor rechazó el resultado de %s (%s): %s",
                    command_id,
                    response.status_code,
                    response.text[:200],
                )
                self.journal.delivered(command_id)
            else:
                log.warning(
                    "agente: el servidor respondió %s al resultado de %s; se reintentará",
                    response.status_code,
                    command_id,
                )
                return

    def _another_agent(self, response: httpx.Response) -> None:
        """Logged when it starts, then once a minute while it lasts (the loop asks every second)."""
        now = time.monotonic()
        if self._other_since is None or now - self._other_since >= 60:
            first = self._other_since is None
            self._other_since = now
            log.error(
                "agente: %s (409). Este agente (%s) no ejecuta comandos%s.",
                _error_text(response),
                self.instance[:8],
                "" if first else "; sigue así",
            )

    def _serving(self) -> None:
        if self._other_since is not None:
            log.warning("agente: este agente (%s) atiende ahora la caja", self.instance[:8])
            self._other_since = None

    # --- heartbeat ----------------------------------------------------------------------------------
    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._check_terminal()
            status, detail = self._terminal_status
            with contextlib.suppress(httpx.HTTPError):
                await self.http.post(f"{API}/heartbeat", json={"terminal": status, "detail": detail}, timeout=5.0)
            await _sleep(stop, self.config.heartbeat_s)

    async def _check_terminal(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_terminal_check < self.config.poll_terminal_every_s or self._tasks:
            return  # a command in flight says more than a Poll would
        self._last_terminal_check = loop.time()
        try:
            data = await self.client.poll()
            ok = Response(data).response_code == 0
            self._terminal_status = ("ok", "") if ok else ("unreachable", str(data.get("ResponseMessage", "")))
        except (TerminalUnavailable, NoReceipt, InDoubt) as exc:
            self._terminal_status = ("unreachable", str(exc))


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", ""))[:300] if isinstance(body, dict) else response.text[:200]


async def _until(stop: asyncio.Event, coro):
    """Await ``coro`` unless ``stop`` is set first (then None)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stopper.cancel()
        return task.result()
    task.cancel()
    return None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def run_agent(config: AgentConfig, transport: Transport) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl+C ends the process instead
                loop.add_signal_handler(sig, stop.set)
        await Agent(config, transport).run(stop)

    asyncio.run(main())
