"""A scriptable payment provider for tests, rehearsals and benchmarks.

Script each call with ``Step``s: the outcome kind, a delay, a hang (never answers until cancelled), a transport
fault (an exception) or a crash point (the process kills itself with SIGKILL at a named moment, for kill -9
tests in a subprocess). Unscripted calls use sensible defaults (charge approves, status reports what the
ledger says, cancel/refund/health succeed).

The provider keeps a **ledger** of what it really charged, keyed by ticket: the provider's truth. With
``ledger_path`` the ledger lives in a JSON file written atomically, so it survives the app process being
killed, exactly as a real terminal's memory does. Tests check charges == approved attempts == paid sales.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from ..errors import ValidationFailed
from ..providers import (
    Capability,
    CardData,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressCallback,
    ProviderContext,
    WebhookNotice,
)

CrashPoint = Literal["before_send", "after_send"]

RECEIPT_MESSAGE = "Terminal recibió la venta"


class FakeSettings(msgspec.Struct, kw_only=True):
    device: str = "fake-1"
    webhook_secret: str = "fake-secret"
    #: Like a real terminal's sale deadline: a charge with no answer by then is UNKNOWN (in doubt).
    timeout_s: float = 120.0


class Step(msgspec.Struct, kw_only=True):
    """What one call does.

    * ``kind`` — the outcome returned (APPROVED, DECLINED, PENDING, UNAVAILABLE, UNKNOWN).
    * ``charged`` — whether the provider really took the money. By default an APPROVED charge is charged and
      anything else is not; ``UNKNOWN`` with ``charged=True`` models "approved, but the answer was lost".
    * ``delay_s`` — wait before answering; ``hang`` — never answer (until the caller gives up).
    * ``receipt`` — a charge reports "received" through the progress callback before anything else (the
      terminal confirmed receipt); ``progress`` — further intermediate messages, in order.
    * ``amount`` — report a different amount than requested; ``ticket`` — report another ticket.
    * ``raise_exc`` — raise ``ConnectionError`` (a transport fault) instead of answering.
    * ``crash_at`` — SIGKILL the whole process: ``before_send`` (nothing reached the provider) or
      ``after_send`` (the provider got the request and, if ``charged``, charged it — a refund: returned it;
      the answer never comes back). ``crash=True`` is the same as ``crash_at="after_send"``.
    """

    kind: OutcomeKind = OutcomeKind.APPROVED
    delay_s: float = 0.0
    hang: bool = False
    code: str | None = None
    message: str = ""
    charged: bool | None = None
    amount: int | None = None
    ticket: str | None = None
    receipt: bool = True
    progress: list[str] = msgspec.field(default_factory=list)
    raise_exc: bool = False
    crash_at: CrashPoint | None = None
    crash: bool = False


class Ledger:
    """Tickets the provider charged (ticket → amount), tickets it ever saw, and every refund request it received
    (in order, repeats included); optionally file-backed."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.charges: dict[str, int] = {}
        self.seen: set[str] = set()
        self.refunded: dict[str, int] = {}
        self.refund_requests: list[str] = []
        self.load()

    def load(self) -> None:
        if self.path and self.path.exists():
            data = json.loads(self.path.read_text() or "{}")
            self.charges = {k: int(v) for k, v in data.get("charges", {}).items()}
            self.seen = set(data.get("seen", []))
            self.refunded = {k: int(v) for k, v in data.get("refunded", {}).items()}
            self.refund_requests = list(data.get("refund_requests", []))

    def save(self) -> None:
        if not self.path:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(
                {
                    "charges": self.charges,
                    "seen": sorted(self.seen),
                    "refunded": self.refunded,
                    "refund_requests": self.refund_requests,
                },
                fh,
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def saw(self, ticket: str) -> None:
        self.seen.add(ticket)
        self.save()

    def charge(self, ticket: str, amount: int) -> None:
        self.seen.add(ticket)
        self.charges[ticket] = amount
        self.save()

    def asked_refund(self, ticket: str) -> None:
        self.refund_requests.append(ticket)
        self.save()

    def refund(self, ticket: str) -> bool:
        if ticket not in self.charges:
            return False
        self.refunded[ticket] = self.charges.pop(ticket)
        self.save()
        return True


def _kill_self() -> None:  # pragma: no cover - the process ends here
    os.kill(os.getpid(), signal.SIGKILL)


class ScriptableProvider:
    """A payment provider whose every call is scripted; see the module docstring."""

    Settings = FakeSettings
    min_amount = 1
    DEFAULT_CAPABILITIES = frozenset(
        {Capability.INTEGRATED, Capability.CANCEL, Capability.STATUS, Capability.REFUND, Capability.WEBHOOK}
    )

    def __init__(
        self,
        provider_id: str = "fake",
        name: str | None = None,
        *,
        capabilities: Iterable[Capability] | None = None,
        min_amount: int = 1,
        ledger_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.id = provider_id
        self.name = name or f"Proveedor de prueba ({provider_id})"
        self.capabilities = frozenset(capabilities) if capabilities is not None else self.DEFAULT_CAPABILITIES
        self.min_amount = min_amount
        self.scripts: dict[str, deque[Step]] = {m: deque() for m in ("charge", "status", "cancel", "refund", "health")}
        self.default_steps: dict[str, Step] = {}
        self.ledger_store = Ledger(ledger_path)
        self.calls: list[tuple[str, str | None]] = []
        self.tips: dict[str, int] = {}  # ticket → the tip its charge request carried
        self.in_flight = 0
        self.max_in_flight = 0

    # scripting -------------------------------------------------------------------------------------
    def script(self, method: str, *steps: Step) -> ScriptableProvider:
        """Queue ``steps`` for the next calls of ``method`` (charge/status/cancel/refund/health)."""
        self.scripts[method].extend(steps)
        return self

    def set_default(self, method: str, step: Step | None) -> ScriptableProvider:
        """What ``method`` does once its queue is empty (None: the built-in default)."""
        if step is None:
            self.default_steps.pop(method, None)
        else:
            self.default_steps[method] = step
        return self

    def _next(self, method: str, default: Step | None) -> Step | None:
        queue = self.scripts[method]
        if queue:
            return queue.popleft()
        return self.default_steps.get(method, default)

    @property
    def ledger(self) -> dict[str, int]:
        """ticket → amount the provider really charged (and did not refund)."""
        return self.ledger_store.charges

    @property
    def refunded(self) -> dict[str, int]:
        return self.ledger_store.refunded

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    async def _wait(self, step: Step) -> None:
        if step.hang:
            await asyncio.Event().wait()
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.raise_exc:
            raise ConnectionError("falla de transporte (guionizada)")

    @staticmethod
    def ledger_key(settings: FakeSettings, ticket: str) -> str:
        """The ledger's key: the ticket on the default device, ``device:ticket`` on any other (each terminal
        has its own memory, and ticket numbers are per device)."""
        return ticket if settings.device == FakeSettings().device else f"{settings.device}:{ticket}"

    # protocol --------------------------------------------------------------------------------------
    def device_key(self, settings: FakeSettings, register_code: str) -> str:
        return f"{self.id}:{settings.device}"

    async def charge(
        self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext, progress: ProgressCallback
    ) -> Outcome:
        try:
            return await asyncio.wait_for(self._charge(request, settings, progress), settings.timeout_s)
        except TimeoutError:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                ticket=request.ticket,
                code="timeout",
                message="Sin respuesta final del terminal",
            )

    async def _charge(self, request: ChargeRequest, settings: FakeSettings, progress: ProgressCallback) -> Outcome:
        step = self._next("charge", Step()) or Step()
        key = self.ledger_key(settings, request.ticket)
        crash_at = step.crash_at or ("after_send" if step.crash else None)
        if crash_at == "before_send":
            _kill_self()
        self.calls.append(("charge", request.ticket))
        self.tips[request.ticket] = request.tip
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            charged = step.charged if step.charged is not None else step.kind is OutcomeKind.APPROVED
            if step.kind is OutcomeKind.UNAVAILABLE and not step.raise_exc:
                # Provably not processed: the device never saw the request.
                await self._wait(step)
                return self._outcome(step, request)
            self.ledger_store.saw(key)
            if crash_at == "after_send":
                if charged:
                    self.ledger_store.charge(key, step.amount or request.amount)
                _kill_self()
            if step.receipt:
                await progress(Progress(message=RECEIPT_MESSAGE, code=0))
            for text in step.progress:
                await progress(Progress(message=text))
            await self._wait(step)
            if charged:
                self.ledger_store.charge(key, step.amount or request.amount)
            return self._outcome(step, request)
        finally:
            self.in_flight -= 1

    def _outcome(self, step: Step, request: ChargeRequest) -> Outcome:
        card = None
        if step.kind is OutcomeKind.APPROVED:
            card = CardData(
                brand="VI",
                card_type="DB",
                last4="4242",
                authorization_code="A1B2C3",
                operation_id="0",
                terminal_id="FAKE0001",
            )
        code = step.code
        if code is None:
            code = {OutcomeKind.APPROVED: "0", OutcomeKind.DECLINED: "5"}.get(step.kind)
        return Outcome(
            kind=step.kind,
            code=code,
            message=step.message,
            ticket=step.ticket or request.ticket,
            amount=step.amount or request.amount,
            card=card,
        )

    async def status(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("status", request.ticket))
        step = self._next("status", None)
        if step is not None:
            await self._wait(step)
            return self._outcome(step, request)
        key = self.ledger_key(settings, request.ticket)
        if key in self.ledger_store.charges:
            return self._outcome(Step(kind=OutcomeKind.APPROVED, amount=self.ledger[key]), request)
        return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message="Ticket no encontrado")

    async def cancel(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("cancel", request.ticket))
        step = self._next("cancel", Step(kind=OutcomeKind.APPROVED)) or Step()
        await self._wait(step)
        return Outcome(kind=step.kind, ticket=request.ticket, message=step.message or "Cancelado")

    async def refund(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        step = self._next("refund", Step(kind=OutcomeKind.APPROVED)) or Step()
        crash_at = step.crash_at or ("after_send" if step.crash else None)
        if crash_at == "before_send":
            _kill_self()
        self.calls.append(("refund", request.ticket))
        key = self.ledger_key(settings, request.ticket)
        self.ledger_store.asked_refund(key)
        if crash_at == "after_send":
            self.ledger_store.refund(key)
            _kill_self()
        await self._wait(step)
        if step.kind is OutcomeKind.APPROVED:
            self.ledger_store.refund(key)
        return Outcome(kind=step.kind, ticket=request.ticket, amount=request.amount, message=step.message or "Anulado")

    async def health(self, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("health", None))
        step = self._next("health", Step(kind=OutcomeKind.APPROVED)) or Step()
        await self._wait(step)
        return Outcome(kind=step.kind, message=step.message or "ok")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        try:
            data = msgspec.json.decode(body)
            kind = OutcomeKind(data.get("status", "approved"))
            return WebhookNotice(
                external_id=str(data["order_id"]),
                reference=str(data["reference_id"]),
                outcome=Outcome(
                    kind=kind,
                    amount=int(data["amount"]),
                    code=str(data.get("code", "0" if kind == "approved" else "")),
                    reference=str(data["order_id"]),
                ),
            )
        except (msgspec.DecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValidationFailed("Notificación mal formada.", code="webhook.malformed") from exc

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: FakeSettings) -> bool:
        return headers.get("x-fake-secret") == settings.webhook_secret


#: The name the test kit has always used.
FakeProvider = ScriptableProvider


def manual_provider(provider_id: str = "respaldo", name: str = "Respaldo manual (prueba)") -> ScriptableProvider:
    """A backup provider with the MANUAL capability (a phone a person charges on, like a tap-on-phone app)."""
    return ScriptableProvider(provider_id, name, capabilities={Capability.MANUAL, Capability.STATUS})
