"""Printing: receipts, copies, comandas, reports, drawer kicks and test pages, as print jobs.

Printing never blocks or fails a sale. A paid sale's tickets are planned and printed after the sale's
transaction has committed, in a background task, each send bounded by the printer's time-out. A printer
that is off, unreachable or out of paper leaves the job ``failed`` with a Spanish reason, opens one
``printer_down`` incident on the session, and the POS shows a warning with a retry button; the sale stays
paid. Automatic jobs are keyed (``sale:<id>:receipt``…) so a receipt prints once however often it is asked
for, by however many app instances.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import datetime, timedelta
from typing import Any

import msgspec
from escpos.constants import RT_STATUS_PAPER
from escpos.exceptions import DeviceNotFoundError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.models import AuditEvent, Incident
from ..audit.service import open_incident, record
from ..catalog.models import Category
from ..clock import utcnow
from ..db.lookup import get_in_venue
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..hookspecs import hookimpl
from ..permissions import Action
from ..permissions import service as permissions
from ..registers.models import CashRegister
from ..reports import service as reports
from ..sales.models import Sale
from ..sessions.models import CashSession
from ..text import clean_reason
from ..users.models import User
from ..venues.models import Venue
from . import tickets
from .config import PrinterConfig, load_config, validate_config
from .document import Document, render_escpos, render_kick
from .drivers import Printer, PrinterRegistry, validate_printer_settings
from .links import receipt_url, sale_for_token
from .models import PrintJob

log = logging.getLogger("caja.printing")

KIND_LABELS = {
    "receipt": "Ticket",
    "copy": "Copia del ticket",
    "comanda": "Comanda",
    "session_report": "Informe de sesión",
    "jornada_report": "Informe Z de jornada",
    "drawer": "Apertura del cajón",
    "test": "Prueba de impresión",
}
SALE_KINDS = ("receipt", "comanda", "drawer")
SUPERVISOR_ROLES = ("supervisor", "admin")
#: A job still pending this long after its creation is shown as failed (its instance died mid-print).
STALE_AFTER_S = 45.0


class PrinterProblem(Exception):
    """The printer answered, and the answer means it cannot print (no paper)."""


class JobOut(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    target: str
    status: str  # pending / printed / failed / browser
    error: str
    printer: str
    sale_id: int | None
    session_id: int | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


class DrawerOpening(msgspec.Struct, kw_only=True):
    at: datetime
    user_name: str
    reason: str


class SalePrint(msgspec.Struct, kw_only=True):
    """What the POS shows under a paid sale's receipt."""

    sale_id: int
    configured: bool  # the register has a printer
    browser: bool  # the POS's browser prints (auto_print: right away)
    auto_print: bool
    paper_width: int
    jobs: list[JobOut]

    @property
    def pending(self) -> bool:
        return any(j.status == "pending" for j in self.jobs)

    @property
    def failed(self) -> list[JobOut]:
        return [j for j in self.jobs if j.status == "failed"]


def job_out(job: PrintJob, now: datetime | None = None) -> JobOut:
    status, error = job.status, job.error
    now = now or utcnow()
    if status == "pending" and job.created_at < now - timedelta(seconds=STALE_AFTER_S):
        status, error = "failed", "La impresión no terminó (sin respuesta de la impresora)."
    return JobOut(
        id=job.id,
        kind=job.kind,
        target=job.target,
        status=status,
        error=error,
        printer=job.printer,
        sale_id=job.sale_id,
        session_id=job.session_id,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def describe_error(exc: BaseException, where: str) -> str:
    """A cashier-readable reason for a failed print."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, DeviceNotFoundError) and isinstance(cause, OSError):
        return describe_error(cause, where)
    if isinstance(exc, PrinterProblem):
        return f"{exc} ({where})."
    if isinstance(exc, ConnectionRefusedError):
        return f"La impresora no responde en {where} (¿apagada o desconectada?)."
    if isinstance(exc, TimeoutError):
        return f"La impresora no respondió a tiempo ({where})."
    if isinstance(exc, DeviceNotFoundError | FileNotFoundError):
        return f"No se encontró la impresora ({where}): ¿apagada o desconectada?"
    if isinstance(exc, OSError):
        return f"Error de la impresora ({where}): {exc.strerror or type(exc).__name__}."
    return f"Error al imprimir ({where}): {type(exc).__name__}."


def _paper_status(device: Any, wait_s: float) -> int | None:
    """2 paper, 1 near end, 0 none; None when the printer does not answer status queries."""
    inner = getattr(device, "device", None)
    old = inner.gettimeout() if isinstance(inner, socket.socket) else None
    try:
        if isinstance(inner, socket.socket):
            inner.settimeout(wait_s)
        device._raw(RT_STATUS_PAPER)
        status = device._read()
    except (NotImplementedError, TimeoutError):
        return None
    finally:
        if isinstance(inner, socket.socket):
            inner.settimeout(old)
    if not status:
        return None
    byte = status[0]
    if byte & 0x60 == 0x60:
        return 0
    if byte & 0x0C == 0x0C:
        return 1
    return 2


def send(printer: Printer, settings: Any, data: bytes) -> None:
    """Open the printer, check it has paper when it can tell, send ``data``, close. Blocking: run it in a
    worker thread. Every step is bounded by the printer's own time-out."""
    device = printer.connect(settings)
    try:
        if getattr(settings, "check_status", False) and _paper_status(device, min(2.0, settings.timeout_s)) == 0:
            raise PrinterProblem("La impresora no tiene papel")
        device._raw(data)
    finally:
        try:
            device.close()
        except Exception:  # closing a dead connection must not hide why it died
            log.debug("closing the printer failed", exc_info=True)


class PrintService:
    """Owned by the app (one per process). Jobs are rows; sending happens in worker threads."""

    def __init__(
        self,
        db: Any,
        printers: PrinterRegistry,
        *,
        secret_key: str,
        public_url: str | None = None,
        provider_names: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.printers = printers
        self.secret_key = secret_key
        self.public_url = (public_url or "").rstrip("/") or None
        self.provider_names = dict(provider_names or {})
        self._last_base_url: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- links ------------------------------------------------------------------------------------------
    def base_url(self, request_base: str | None = None) -> str | None:
        """Where customers reach caja: ``CAJA_PUBLIC_URL``, else the address the POS itself uses."""
        if request_base:
            self._last_base_url = request_base.rstrip("/")
        return self.public_url or self._last_base_url

    def receipt_url(self, sale_id: int, request_base: str | None = None) -> str | None:
        base = self.base_url(request_base)
        return receipt_url(base, self.secret_key, sale_id) if base else None

    # ---- background -------------------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def sale_paid(self, venue_id: int, sale_id: int, *, base_url: str | None = None) -> None:
        """A sale was paid (its transaction committed): print what the register prints, in the background."""
        self.base_url(base_url)
        self._spawn(self._sale_paid(venue_id, sale_id))

    def cash_movement(self, venue_id: int, session_id: int, user_id: int | None = None) -> None:
        """Cash went in or out of the drawer: kick it open when the register says so, in the background."""
        self._spawn(self._movement(venue_id, session_id, user_id))

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for the background jobs in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def stop(self) -> None:
        await self.drain(10.0)
        for task in list(self._tasks):
            task.cancel()

    @hookimpl
    def on_payment_event(self, event: Any) -> None:
        """A card sale paid by the orchestrator prints like a cash sale (the event comes after its commit)."""
        if getattr(event, "kind", None) not in ("approved", "reconciled") or not getattr(event, "sale_id", None):
            return
        if getattr(event, "state", None) not in tickets.APPROVED_STATES:
            return
        try:
            self.sale_paid(event.venue_id, event.sale_id)
        except RuntimeError:  # no running loop: nothing to print from here
            log.warning("payment event outside an event loop: sale %s not printed", event.sale_id)

    async def _sale_paid(self, venue_id: int, sale_id: int) -> None:
        try:
            ids = await self._plan_sale(venue_id, sale_id)
            await asyncio.gather(*(self._execute(job_id) for job_id in ids))
        except Exception:
            log.exception("printing sale %s failed", sale_id)

    async def _movement(self, venue_id: int, session_id: int, user_id: int | None) -> None:
        try:
            async with self.db.session() as s:
                session = await self._session(s, venue_id, session_id)
                register = await s.get(CashRegister, session.register_id)
                config = load_config(register.printer_config if register else None)
                if not (config.enabled and config.drawer_on_movements):
                    return
                job = self._new_job(s, venue_id, "drawer", session=session, user_id=user_id, config=config)
                await s.flush()
                job_id = job.id
            await self._execute(job_id)
        except Exception:
            log.exception("drawer kick for session %s failed", session_id)

    # ---- planning ---------------------------------------------------------------------------------------
    def _new_job(
        self,
        s: AsyncSession,
        venue_id: int,
        kind: str,
        *,
        config: PrinterConfig,
        session: CashSession | None = None,
        register_id: int | None = None,
        sale_id: int | None = None,
        jornada_id: int | None = None,
        target: str = "main",
        dedupe_key: str | None = None,
        user_id: int | None = None,
    ) -> PrintJob:
        printer_id = config.printer
        if target.startswith("comanda:"):
            printer_id = config.comandas[int(target.split(":")[1])].printer
        browser = printer_id in self.printers and self.printers.get(printer_id).browser
        job = PrintJob(
            venue_id=venue_id,
            register_id=register_id or (session.register_id if session else None),
            session_id=session.id if session else None,
            sale_id=sale_id,
            jornada_id=jornada_id,
            kind=kind,
            target=target,
            dedupe_key=dedupe_key,
            status="browser" if browser else "pending",
            printer=printer_id,
            error="",
            created_by=user_id,
            created_at=utcnow(),
        )
        s.add(job)
        return job

    async def _plan_sale(self, venue_id: int, sale_id: int, user_id: int | None = None) -> list[int]:
        """Create the paid sale's automatic jobs (once each); the ids of those this call must send. With
        ``user_id``, someone asked for them late (a retry): the drawer opens only as ``_retry_opens_drawer``
        says."""
        # The register's printers first, in one statement with no transaction: a register that prints nothing
        # costs one read, and never takes SQLite's write lock (the next sale's request would wait on it).
        async with self.db.autocommit() as conn:
            stored = await conn.scalar(
                select(CashRegister.printer_config)
                .join(Sale, Sale.register_id == CashRegister.id)
                .where(Sale.id == sale_id, Sale.venue_id == venue_id)
            )
        config = load_config(stored)
        if not (config.enabled or config.comandas):
            return []
        async with self.db.session() as s:
            data = await tickets.load_sale(s, venue_id, sale_id)
            if data.status != "paid":
                return []
            session = await s.get(CashSession, data.session_id)
            planned: list[tuple[str, str]] = []
            cash = data.payment_method == "cash" and not data.no_revenue
            if config.enabled and config.auto_print:
                planned.append(("receipt", "main"))
            elif (
                config.enabled
                and cash
                and config.open_drawer
                and (user_id is None or await self._retry_opens_drawer(s, data, user_id))
            ):
                planned.append(("drawer", "main"))
            for n, route in enumerate(config.comandas):
                if tickets.comanda(data, route, config) is not None:
                    planned.append(("comanda", f"comanda:{n}"))
            ids: list[int] = []
            for kind, target in planned:
                key = f"sale:{sale_id}:{kind}" + (f":{target.split(':')[1]}" if kind == "comanda" else "")
                try:
                    async with s.begin_nested():
                        job = self._new_job(
                            s,
                            venue_id,
                            kind,
                            config=config,
                            session=session,
                            sale_id=sale_id,
                            target=target,
                            dedupe_key=key,
                            user_id=user_id,
                        )
                        await s.flush()
                except IntegrityError:  # another caller planned it first: it prints it
                    continue
                if job.status == "pending":
                    ids.append(job.id)
        return ids

    # ---- sending ----------------------------------------------------------------------------------------
    async def _document(self, s: AsyncSession, job: PrintJob, config: PrinterConfig) -> tuple[Document | None, bool]:
        """The job's document (None: a bare drawer kick) and whether the drawer opens with it."""
        if job.kind in ("receipt", "copy", "comanda"):
            data = await tickets.load_sale(s, job.venue_id, job.sale_id or 0)
            if job.kind == "comanda":
                route = config.comandas[int(job.target.split(":")[1])]
                return tickets.comanda(data, route, config), False
            doc = tickets.sale_receipt(
                data,
                config,
                copy=job.kind == "copy",
                url=self.receipt_url(data.sale_id),
                provider_names=self.provider_names,
            )
            kick = job.kind == "receipt" and config.open_drawer and data.payment_method == "cash"
            kick = kick and not data.no_revenue
            if kick and job.created_by is not None:  # asked for by someone after the sale: a retry
                kick = await self._retry_opens_drawer(s, data, job.created_by)
            return doc, kick
        if job.kind == "drawer":
            return None, True
        venue = await s.get(Venue, job.venue_id)
        venue_name, tz = (venue.name, venue.timezone) if venue else ("", "America/Santiago")
        if job.kind == "session_report":
            report = await reports.session_report(s, job.venue_id, job.session_id or 0)
            return tickets.session_report(
                report, venue_name=venue_name, timezone=tz, config=config, names=self.provider_names
            ), False
        if job.kind == "jornada_report":
            jreport = await reports.jornada_report(s, job.venue_id, job.jornada_id or 0)
            return tickets.jornada_report(
                jreport, venue_name=venue_name, timezone=tz, config=config, names=self.provider_names
            ), False
        register = await s.get(CashRegister, job.register_id) if job.register_id else None
        printer, settings = self._printer_for(config, job.target)
        return tickets.printer_test_page(
            venue_name=venue_name,
            register_name=register.name if register else "",
            printer_label=printer.describe(settings),
            config=config,
            tz=tz,
        ), False

    def _printer_for(self, config: PrinterConfig, target: str) -> tuple[Printer, Any]:
        printer_id, raw = config.printer, config.settings
        if target.startswith("comanda:"):
            route = config.comandas[int(target.split(":")[1])]
            printer_id, raw = route.printer, route.settings
        printer = self.printers.get(printer_id)
        settings, problems = validate_printer_settings(printer, raw)
        if settings is None or problems:
            raise ValidationFailed(
                "La configuración de la impresora no es válida; revísela en la caja.", code="printer.invalid"
            )
        return printer, settings

    async def _execute(self, job_id: int) -> JobOut:
        """Send one pending job and record how it ended. Never raises for a printer problem."""
        async with self.db.session() as s:
            job = await s.get(PrintJob, job_id)
            if job is None:
                raise NotFound("El trabajo de impresión no existe.", code="print.not_found")
            register = await s.get(CashRegister, job.register_id) if job.register_id else None
            config = load_config(register.printer_config if register else None)
            where = job.printer
            try:
                printer, settings = self._printer_for(config, job.target)
                where = printer.describe(settings)
                doc, kick = await self._document(s, job, config)
                codepage = getattr(settings, "codepage", "CP858")
                if doc is None:
                    data = render_kick()
                else:
                    doc.kick_drawer = kick
                    data = render_escpos(doc, codepage=codepage, cut=config.cut_paper)
            except Exception as exc:  # a job that cannot even be built is a failed job, not a crash
                log.exception("print job %s could not be prepared", job_id)
                return await self._finish(job_id, error=f"No se pudo preparar la impresión: {exc}")
        bound = float(getattr(settings, "timeout_s", 5.0)) * 3 + 1
        lock = self._locks.setdefault(where, asyncio.Lock())
        try:
            async with lock:
                await asyncio.wait_for(asyncio.to_thread(send, printer, settings, data), timeout=bound)
        except Exception as exc:  # noqa: BLE001 - any printer failure ends the job as failed, with its reason
            log.warning("print job %s (%s) failed: %s", job_id, where, exc)
            return await self._finish(job_id, error=describe_error(exc, where))
        return await self._finish(job_id)

    async def _finish(self, job_id: int, *, error: str = "") -> JobOut:
        async with self.db.session() as s:
            job = await s.get(PrintJob, job_id)
            assert job is not None
            job.status = "failed" if error else "printed"
            job.error = error[:300]
            job.finished_at = utcnow()
            if error and job.session_id is not None and job.kind != "test":
                await self._incident(s, job, error)
            return job_out(job)

    async def _incident(self, s: AsyncSession, job: PrintJob, error: str) -> None:
        """One open ``printer_down`` incident per session and register, however many jobs fail (the
        session row is locked so two failing jobs cannot both open one)."""
        session = await s.scalar(select(CashSession).where(CashSession.id == job.session_id).with_for_update())
        existing = await s.scalar(
            select(Incident.id).where(
                Incident.venue_id == job.venue_id,
                Incident.session_id == job.session_id,
                Incident.kind == "printer_down",
                Incident.resolved.is_(False),
            )
        )
        if existing is not None:
            return
        what = KIND_LABELS.get(job.kind, job.kind) + (f" de la venta #{job.sale_id}" if job.sale_id else "")
        await open_incident(
            s,
            venue_id=job.venue_id,
            kind="printer_down",
            description=f"{what}: {error}",
            jornada_id=session.jornada_id if session else None,
            session_id=job.session_id,
            register_id=job.register_id,
        )

    async def _run_now(self, job_id: int) -> JobOut:
        """Send a job the person is waiting for (copy, retry, drawer, report, test), still bounded."""
        return await self._execute(job_id)

    # ---- what people ask for ----------------------------------------------------------------------------
    async def _session(self, s: AsyncSession, venue_id: int, session_id: int) -> CashSession:
        session = await s.scalar(
            select(CashSession).where(CashSession.id == session_id, CashSession.venue_id == venue_id)
        )
        if session is None:
            raise NotFound("La sesión de caja no existe.", code="session.not_found")
        return session

    async def _register_config(self, s: AsyncSession, venue_id: int, register_id: int) -> PrinterConfig:
        register = await get_in_venue(
            s, CashRegister, register_id, venue_id, "La caja no existe.", "register.not_found"
        )
        return load_config(register.printer_config)

    def _require_printer(self, config: PrinterConfig) -> None:
        if not config.enabled:
            raise Conflict(
                "Esta caja no tiene impresora configurada (Administración → Cajas → Impresora).",
                code="printer.not_configured",
            )

    async def sale_status(self, venue_id: int, sale_id: int) -> SalePrint:
        async with self.db.session() as s:
            data = await tickets.load_sale(s, venue_id, sale_id)
            config = load_config(data.printer_config)
            rows = list(
                await s.scalars(
                    select(PrintJob)
                    .where(PrintJob.sale_id == sale_id, PrintJob.venue_id == venue_id)
                    .order_by(PrintJob.id)
                )
            )
        latest: dict[tuple[str, str], JobOut] = {}
        now = utcnow()
        for row in rows:
            if row.kind == "copy":  # a copy's result is shown to whoever asked for it, never as the sale's
                continue
            latest[(row.kind, row.target)] = job_out(row, now)
        browser = config.printer in self.printers and self.printers.get(config.printer).browser
        return SalePrint(
            sale_id=sale_id,
            configured=config.enabled,
            browser=bool(browser),
            auto_print=config.auto_print,
            paper_width=config.paper_width,
            jobs=list(latest.values()),
        )

    async def retry_sale(self, venue_id: int, sale_id: int, user_id: int, *, base_url: str | None = None) -> SalePrint:
        """Send again what failed for this sale (the receipt opens the drawer again for cash: the cashier
        still needs it). A sale whose tickets were never planned is planned now."""
        self.base_url(base_url)
        status = await self.sale_status(venue_id, sale_id)
        if not status.jobs:
            for job_id in await self._plan_sale(venue_id, sale_id, user_id):
                await self._run_now(job_id)
            return await self.sale_status(venue_id, sale_id)
        async with self.db.session() as s:
            data = await tickets.load_sale(s, venue_id, sale_id)
            config = load_config(data.printer_config)
            session = await s.get(CashSession, data.session_id)
            opens_drawer = await self._retry_opens_drawer(s, data, user_id)
            ids = []
            for failed in status.failed:
                if failed.target.startswith("comanda:") and int(failed.target.split(":")[1]) >= len(config.comandas):
                    continue
                if failed.kind == "drawer" and not opens_drawer:
                    continue
                try:
                    async with s.begin_nested():
                        job = self._new_job(
                            s,
                            venue_id,
                            failed.kind,
                            config=config,
                            session=session,
                            sale_id=sale_id,
                            target=failed.target,
                            dedupe_key=f"retry:{failed.id}",  # a failed job is sent again once
                            user_id=user_id,
                        )
                        await s.flush()
                except IntegrityError:  # a double tap, or another tab: that retry sends it
                    continue
                ids.append(job.id)
            await record(
                s,
                venue_id=venue_id,
                user_id=user_id,
                action="print.retried",
                entity="sale",
                entity_id=sale_id,
                payload={"jobs": [f.kind for f in status.failed]},
            )
        for job_id in ids:
            await self._run_now(job_id)
        return await self.sale_status(venue_id, sale_id)

    async def _retry_opens_drawer(self, s: AsyncSession, data: tickets.SaleData, user_id: int) -> bool:
        """Whether a retried receipt (or drawer kick) of a cash sale still opens the drawer: only for the
        drawer's holder, in its open session, on that session's last paid sale (the kick that sale never
        had). Any other retry prints the ticket alone; a drawer opened for no sale goes through
        ``open_drawer``, with its reason and, for a cashier, a supervisor's authorization."""
        session = await s.get(CashSession, data.session_id)
        if session is None or session.status != "open" or session.cashier_id != user_id:
            return False
        last = await s.scalar(select(func.max(Sale.id)).where(Sale.session_id == session.id, Sale.status == "paid"))
        return last == data.sale_id

    async def reprint(self, venue_id: int, sale_id: int, user_id: int, *, base_url: str | None = None) -> JobOut:
        """A copy of the sale's ticket, marked "COPIA" (audited: copies are how a receipt gets reused)."""
        self.base_url(base_url)
        async with self.db.session() as s:
            data = await tickets.load_sale(s, venue_id, sale_id)
            config = load_config(data.printer_config)
            self._require_printer(config)
            if data.status != "paid":
                raise Conflict("Solo se reimprimen ventas pagadas.", code="print.sale_not_paid")
            session = await s.get(CashSession, data.session_id)
            job = self._new_job(s, venue_id, "copy", config=config, session=session, sale_id=sale_id, user_id=user_id)
            await s.flush()
            await record(
                s, venue_id=venue_id, user_id=user_id, action="sale.reprinted", entity="sale", entity_id=sale_id
            )
            out = job_out(job)
        return out if out.status == "browser" else await self._run_now(out.id)

    async def open_drawer(
        self, venue_id: int, session_id: int, user_id: int, reason: str, authorization_id: int | None = None
    ) -> JobOut:
        """A manual drawer opening by the drawer's holder (a cashier: with a supervisor's authorization, see
        ``caja_core.permissions``): audited with its reason before the drawer is kicked."""
        reason = clean_reason(
            reason,
            "El motivo para abrir el cajón",
            missing="Indique el motivo para abrir el cajón (3 a 200 caracteres).",
        )
        async with self.db.session() as s:
            session = await self._session(s, venue_id, session_id)
            if session.status != "open":
                raise Conflict("La sesión de caja no está abierta.", code="session.closed")
            decision = await permissions.require(
                s,
                venue_id=venue_id,
                action=Action.OPEN_DRAWER,
                actor_id=user_id,
                session_id=session_id,
                authorization_id=authorization_id,
            )
            config = await self._register_config(s, venue_id, session.register_id)
            self._require_printer(config)
            if self.printers.get(config.printer).browser:
                raise Conflict(
                    "El cajón de esta caja no se abre desde el sistema (impresora del navegador): ábralo con llave.",
                    code="printer.no_drawer",
                )
            job = self._new_job(s, venue_id, "drawer", config=config, session=session, user_id=user_id)
            await s.flush()
            await record(
                s,
                venue_id=venue_id,
                user_id=user_id,
                action="drawer.opened",
                entity="session",
                entity_id=session_id,
                payload={
                    "reason": reason,
                    "register_id": session.register_id,
                    "job_id": job.id,
                    "authorized_by": decision.authorized_by,
                },
            )
            job_id = job.id
        return await self._run_now(job_id)

    async def _may_see_session_report(self, s: AsyncSession, session: CashSession, user_id: int) -> None:
        """Supervisors and admins see any session's report; the cashier who opened the session or holds its
        drawer sees it once the session is closed (its Z). The X report of an open session shows the cash
        the drawer should hold, and the cashier counts it blind: on screen and on paper alike."""
        user = await s.get(User, user_id)
        if user is None or user.venue_id != session.venue_id or not user.active:
            raise Forbidden("Su usuario no está activo en este local.", code="auth.inactive")
        if user.role in SUPERVISOR_ROLES:
            return
        if user_id not in (session.opened_by, session.cashier_id):
            raise Forbidden(
                "Solo quien abrió la sesión, quien tiene el cajón o un supervisor ve su informe.",
                code="print.forbidden",
            )
        if session.status != "closed":
            raise Forbidden(
                "El informe X de una sesión abierta lo ve un supervisor: el cierre de caja es a ciegas.",
                code="print.forbidden",
            )

    async def _may_see_jornada_report(self, s: AsyncSession, venue_id: int, user_id: int) -> None:
        user = await s.get(User, user_id)
        if user is None or user.venue_id != venue_id or not user.active or user.role not in SUPERVISOR_ROLES:
            raise Forbidden("El informe de la jornada lo ve un supervisor.", code="print.forbidden")

    async def print_session_report(self, venue_id: int, session_id: int, user_id: int) -> JobOut:
        async with self.db.session() as s:
            session = await self._session(s, venue_id, session_id)
            await self._may_see_session_report(s, session, user_id)
            config = await self._register_config(s, venue_id, session.register_id)
            self._require_printer(config)
            job = self._new_job(s, venue_id, "session_report", config=config, session=session, user_id=user_id)
            await s.flush()
            out = job_out(job)
        return out if out.status == "browser" else await self._run_now(out.id)

    async def print_jornada_report(self, venue_id: int, jornada_id: int, register_id: int, user_id: int) -> JobOut:
        async with self.db.session() as s:
            await self._may_see_jornada_report(s, venue_id, user_id)
            config = await self._register_config(s, venue_id, register_id)
            self._require_printer(config)
            await reports.jornada_report(s, venue_id, jornada_id)  # exists in this venue
            job = self._new_job(
                s,
                venue_id,
                "jornada_report",
                config=config,
                register_id=register_id,
                jornada_id=jornada_id,
                user_id=user_id,
            )
            await s.flush()
            out = job_out(job)
        return out if out.status == "browser" else await self._run_now(out.id)

    async def test_print(self, venue_id: int, register_id: int, user_id: int, target: str = "main") -> JobOut:
        """The admin's "Imprimir prueba": a test page on the saved printer (or a comanda printer)."""
        async with self.db.session() as s:
            config = await self._register_config(s, venue_id, register_id)
            if target == "main":
                self._require_printer(config)
            elif not (
                target.startswith("comanda:")
                and target[8:].isascii()
                and target[8:].isdigit()
                and int(target[8:]) < len(config.comandas)
            ):
                raise NotFound("Esa impresora de comandas no existe.", code="printer.not_found")
            job = self._new_job(
                s, venue_id, "test", config=config, register_id=register_id, target=target, user_id=user_id
            )
            await s.flush()
            out = job_out(job)
        return out if out.status == "browser" else await self._run_now(out.id)

    # ---- documents for the browser ------------------------------------------------------------------------
    async def receipt_document(
        self, venue_id: int, sale_id: int, *, copy: bool = False, base_url: str | None = None
    ) -> tuple[Document, tickets.SaleData]:
        async with self.db.session() as s:
            data = await tickets.load_sale(s, venue_id, sale_id)
        config = load_config(data.printer_config)
        doc = tickets.sale_receipt(
            data, config, copy=copy, url=self.receipt_url(sale_id, base_url), provider_names=self.provider_names
        )
        return doc, data

    async def public_receipt(self, token: str) -> tuple[Document, tickets.SaleData]:
        """The customer's digital receipt for a signed link; forged or unknown links are not found."""
        sale_id = sale_for_token(self.secret_key, token)
        if sale_id is None:
            raise NotFound("La boleta no existe.", code="receipt.not_found")
        async with self.db.session() as s:
            venue_id = await s.scalar(select(Sale.venue_id).where(Sale.id == sale_id))
            if venue_id is None:
                raise NotFound("La boleta no existe.", code="receipt.not_found")
            data = await tickets.load_sale(s, venue_id, sale_id)
        if data.status == "pending_payment":
            raise NotFound("La boleta no existe.", code="receipt.not_found")
        config = load_config(data.printer_config)
        config.paper_width = 80
        return tickets.sale_receipt(data, config, public=True, provider_names=self.provider_names), data

    async def report_document(
        self, venue_id: int, viewer_id: int, *, session_id: int | None = None, jornada_id: int | None = None
    ) -> Document:
        """A session's X/Z report or a jornada's Z report as the page the browser prints, for ``viewer_id``
        (who may see which report: ``_may_see_session_report``)."""
        async with self.db.session() as s:
            venue = await s.get(Venue, venue_id)
            assert venue is not None
            if session_id is not None:
                await self._may_see_session_report(s, await self._session(s, venue_id, session_id), viewer_id)
                report = await reports.session_report(s, venue_id, session_id)
                config = await self._register_config(s, venue_id, report.summary.session.register_id)
                return tickets.session_report(
                    report, venue_name=venue.name, timezone=venue.timezone, config=config, names=self.provider_names
                )
            await self._may_see_jornada_report(s, venue_id, viewer_id)
            jreport = await reports.jornada_report(s, venue_id, jornada_id or 0)
        return tickets.jornada_report(
            jreport, venue_name=venue.name, timezone=venue.timezone, config=PrinterConfig(), names=self.provider_names
        )

    # ---- configuration ------------------------------------------------------------------------------------
    async def get_config(self, venue_id: int, register_id: int) -> PrinterConfig:
        async with self.db.session() as s:
            return await self._register_config(s, venue_id, register_id)

    async def save_config(
        self, venue_id: int, register_id: int, raw: dict[str, Any] | PrinterConfig, actor_id: int | None
    ) -> PrinterConfig:
        """Validate and store a register's printer configuration (audited)."""
        async with self.db.session() as s:
            register = await s.scalar(
                select(CashRegister)
                .where(CashRegister.id == register_id, CashRegister.venue_id == venue_id)
                .with_for_update()
            )
            if register is None:
                raise NotFound("La caja no existe.", code="register.not_found")
            categories = set(await s.scalars(select(Category.id).where(Category.venue_id == venue_id)))
            config = validate_config(raw, self.printers, categories)
            before = dict(register.printer_config or {})
            register.printer_config = msgspec.to_builtins(config)
            register.updated_at = utcnow()
            await record(
                s,
                venue_id=venue_id,
                user_id=actor_id,
                action="register.printer_changed",
                entity="register",
                entity_id=register_id,
                payload={"before": _public(before), "after": _public(register.printer_config)},
            )
            return config

    async def drawer_openings(self, venue_id: int, session_id: int) -> list[DrawerOpening]:
        """The session's manual drawer openings (who, when, why), for its report."""
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(AuditEvent.created_at, User.display_name, AuditEvent.payload)
                    .outerjoin(User, User.id == AuditEvent.user_id)
                    .where(
                        AuditEvent.venue_id == venue_id,
                        AuditEvent.action == "drawer.opened",
                        AuditEvent.entity == "session",
                        AuditEvent.entity_id == str(session_id),
                    )
                    .order_by(AuditEvent.id)
                )
            ).all()
        return [
            DrawerOpening(at=at, user_name=name or "—", reason=str((payload or {}).get("reason", "")))
            for at, name, payload in rows
        ]

    async def jobs(self, venue_id: int, *, session_id: int | None = None, limit: int = 50) -> list[JobOut]:
        async with self.db.session() as s:
            q = select(PrintJob).where(PrintJob.venue_id == venue_id)
            if session_id is not None:
                q = q.where(PrintJob.session_id == session_id)
            rows = await s.scalars(q.order_by(PrintJob.id.desc()).limit(limit))
            now = utcnow()
            return [job_out(r, now) for r in rows]


def _public(config: dict[str, Any]) -> dict[str, Any]:
    """For the audit log: which printer and options, not every setting."""
    return {k: v for k, v in config.items() if k not in ("settings", "comandas")} | {
        "comandas": [c.get("name") for c in config.get("comandas", [])]
    }
