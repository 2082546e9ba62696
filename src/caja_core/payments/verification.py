"""End-of-night verification of manual backup payments (KLAP tap-on-phone).

During the night a cashier confirms each manual attempt with the authorization code and last 4 digits read
from the KLAP phone (``approved_manual``). Afterwards a supervisor either imports KLAP's sales report (the
CSV export of the KLAP portal) or checks attempts one by one:

* ``parse_klap_report(data)`` reads the CSV tolerantly and returns the clean rows and, for every bad row,
  its line number and why. Nothing is applied from a report with errors.
* ``apply_klap_report(s, venue_id=…, jornada_id=…, rows=…, user_id=…)`` matches the jornada's manual
  attempts with the rows by authorization code + amount + last 4: matched attempts become ``verified``;
  unmatched attempts and unmatched rows become incidents (``klap_unmatched_attempt`` /
  ``klap_unmatched_report_row``) that show in the jornada report. Applying the same report again changes
  nothing; a corrected report resolves the incidents it explains.
* ``verify_attempt_by_hand`` / ``dispute_attempt`` for the attempt-by-attempt check.

Accepted columns (any order; headers are matched without case, accents or punctuation; ``;``, ``,`` or tab
delimited; UTF-8 with or without BOM, or Windows-1252; title lines above the header are skipped):

======================  =========================================================================  ========
column                  accepted headers                                                           required
======================  =========================================================================  ========
date (and time)         Fecha, Fecha venta, Fecha transacción, Fecha y hora, Fecha operación, Date  yes
time                    Hora, Hora venta, Hora transacción, Time                                    no
amount                  Monto, Monto venta, Monto total, Monto transacción, Total, Importe, Amount  yes
authorization code      Código de autorización, Código autorización, Cód. autorización,             yes
                        Autorización, N° autorización, Authorization code
last 4 digits           Últimos 4 dígitos, Últimos 4, 4 últimos dígitos, Tarjeta, N° tarjeta,       yes
                        Last4, Last digits
brand                   Marca, Marca tarjeta, Brand                                                 no
card type               Tipo, Tipo de tarjeta, Tipo tarjeta, Card type                             no
status                  Estado, Estado transacción, Status                                          no
operation number        N° operación, Número de operación, ID transacción, ID operación, ID         no
======================  =========================================================================  ========

Values: dates ``dd-mm-yyyy``, ``dd/mm/yyyy`` or ``yyyy-mm-dd`` with an optional ``HH:MM[:SS]`` (venue local
time); amounts in whole pesos with optional ``$`` and ``.`` (or ``,``) thousands separators (``$12.500``,
``12500``, ``12.500,00``); authorization codes of 6 letters/digits (digit-only codes shortened by a
spreadsheet get their leading zeros back); card numbers masked (``****1234``) or just the 4 digits. A
cell with a full card number is refused and never stored. Rows whose status is not approved (Anulada,
Rechazada, …) and total lines are skipped and listed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from datetime import date, datetime, time, timedelta
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.models import Incident
from ..audit.service import open_incident, record
from ..clock import utcnow, zone
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..jornadas.models import Jornada
from ..money import MAX_AMOUNT, format_clp
from ..sessions.models import CashSession
from ..users.models import User
from ..venues.models import Venue
from . import lifecycle as lc
from .models import PaymentAttempt

MANUAL_PROVIDER = "klap"
MAX_REPORT_BYTES = 5_000_000
MAX_REPORT_ROWS = 50_000
#: Report rows this long before the jornada opened or after it closed still belong to it (clock skew).
WINDOW_MARGIN = timedelta(hours=1)

UNMATCHED_ATTEMPT = "klap_unmatched_attempt"
UNMATCHED_ROW = "klap_unmatched_report_row"
DISPUTED = "klap_disputed"

_ALIASES: dict[str, tuple[str, ...]] = {
    "date": (
        "fecha",
        "fecha venta",
        "fecha de venta",
        "fecha transaccion",
        "fecha de transaccion",
        "fecha y hora",
        "fecha hora",
        "fecha operacion",
        "fecha de operacion",
        "date",
        "fecha pago",
    ),
    "time": ("hora", "hora venta", "hora de venta", "hora transaccion", "hora de transaccion", "time"),
    "amount": (
        "monto",
        "monto venta",
        "monto de venta",
        "monto total",
        "monto transaccion",
        "monto de transaccion",
        "total",
        "importe",
        "amount",
        "monto clp",
        "monto $",
        "monto pagado",
    ),
    "authorization_code": (
        "codigo de autorizacion",
        "codigo autorizacion",
        "cod autorizacion",
        "cod de autorizacion",
        "autorizacion",
        "n autorizacion",
        "no autorizacion",
        "numero de autorizacion",
        "codigo aut",
        "authorization code",
        "auth code",
        "authorization_code",
    ),
    "last4": (
        "ultimos 4 digitos",
        "ultimos 4",
        "ultimos cuatro digitos",
        "4 ultimos digitos",
        "tarjeta",
        "n tarjeta",
        "numero de tarjeta",
        "numero tarjeta",
        "last4",
        "last 4",
        "last digits",
        "last_digits",
        "ultimos digitos",
    ),
    "brand": ("marca", "marca tarjeta", "marca de tarjeta", "brand"),
    "card_type": ("tipo", "tipo de tarjeta", "tipo tarjeta", "card type", "card_type", "tipo de pago"),
    "status": ("estado", "estado transaccion", "estado de la transaccion", "status"),
    "operation_id": (
        "n operacion",
        "no operacion",
        "numero de operacion",
        "numero operacion",
        "id transaccion",
        "id operacion",
        "id",
        "operacion",
    ),
}
REQUIRED = ("date", "amount", "authorization_code", "last4")
LABELS = {
    "date": "Fecha",
    "time": "Hora",
    "amount": "Monto",
    "authorization_code": "Código de autorización",
    "last4": "Últimos 4 dígitos",
    "brand": "Marca",
    "card_type": "Tipo",
    "status": "Estado",
    "operation_id": "N° operación",
}
APPROVED_STATUSES = {
    "",
    "aprobada",
    "aprobado",
    "approved",
    "exitosa",
    "exitoso",
    "pagada",
    "pagado",
    "ok",
    "autorizada",
    "autorizado",
    "completada",
    "completed",
}

_DATE_RE = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{2}|\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_ISO_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_AUTH_RE = re.compile(r"^[A-Z0-9]{6}$")


class KlapReportRow(msgspec.Struct, frozen=True, kw_only=True):
    line: int  # line in the file (the header is its own line)
    day: date  # local date of the sale
    local_time: time | None  # local time, when the report has it
    amount: int
    authorization_code: str
    last4: str
    brand: str | None = None
    card_type: str | None = None
    operation_id: str | None = None

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.authorization_code, self.amount, self.last4)

    def label(self) -> str:
        when = self.day.strftime("%d-%m-%Y") + (f" {self.local_time:%H:%M}" if self.local_time else "")
        return (
            f"{when}, {format_clp(self.amount)}, autorización {self.authorization_code}, "
            f"tarjeta ****{self.last4}" + (f" {self.brand}" if self.brand else "")
        )


class RowError(msgspec.Struct, frozen=True, kw_only=True):
    line: int
    message: str


class ReportParse(msgspec.Struct, kw_only=True):
    rows: list[KlapReportRow]
    errors: list[RowError]
    skipped: list[RowError]  # not errors: voided/declined rows, total lines
    columns: dict[str, str]  # column -> header as found in the file

    @property
    def ok(self) -> bool:
        return not self.errors


class VerificationResult(msgspec.Struct, kw_only=True):
    verified: list[int]  # attempts verified by this report
    already_verified: list[int]  # attempts the report confirms that were verified (or disputed) before
    unmatched_attempts: list[int]  # manual attempts of the jornada that the report does not have
    unmatched_rows: list[int]  # report lines with no attempt in the jornada
    outside_jornada: list[int]  # report lines from other nights (ignored)
    incidents_opened: int
    incidents_resolved: int


class ManualAttemptOut(msgspec.Struct, kw_only=True):
    id: int
    sale_id: int
    session_id: int
    register_id: int
    amount: int
    state: str
    reference: str | None
    authorization_code: str | None
    last4: str | None
    card_brand: str | None
    card_type: str | None
    confirmed_at: datetime | None
    verified_at: datetime | None
    verification_note: str


# -- parsing ---------------------------------------------------------------------------------------------
def _norm(header: str) -> str:
    text = unicodedata.normalize("NFKD", header.replace("\ufeff", "")).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9$_]+", " ", text.lower()).split())


_LOOKUP = {alias: column for column, aliases in _ALIASES.items() for alias in aliases}


def _columns(header: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, cell in enumerate(header):
        column = _LOOKUP.get(_norm(cell))
        if column and column not in found:
            found[column] = index
    return found


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_amount_cell(raw: str) -> int:
    text = raw.replace("$", "").replace("\xa0", "").replace(" ", "").strip()
    if text.startswith("-"):
        raise ValueError("el monto es negativo")
    if re.fullmatch(r"\d{1,3}(\.\d{3})+(,0{1,2})?", text):
        value = int(text.split(",")[0].replace(".", ""))
    elif re.fullmatch(r"\d{1,3}(,\d{3})+(\.0{1,2})?", text):
        value = int(text.split(".")[0].replace(",", ""))
    elif re.fullmatch(r"\d+([.,]0{1,2})?", text):
        value = int(re.split(r"[.,]", text)[0])
    else:
        raise ValueError(f"monto ilegible ({raw.strip()[:20]!r}); se espera un entero de pesos como $12.500")
    if value <= 0:
        raise ValueError("el monto debe ser mayor que cero")
    if value > MAX_AMOUNT:
        raise ValueError(f"el monto supera el máximo ({format_clp(MAX_AMOUNT)})")
    return value


def _parse_date(raw: str) -> tuple[date, time | None]:
    text = raw.strip()
    m = _DATE_RE.match(text)
    if m:
        d, mo, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        y = y + 2000 if y < 100 else y
        hh, mm, ss = m.group(4), m.group(5), m.group(6)
    else:
        m = _ISO_RE.match(text)
        if not m:
            raise ValueError(f"fecha ilegible ({text[:25]!r}); se espera dd-mm-aaaa o aaaa-mm-dd")
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        hh, mm, ss = m.group(4), m.group(5), m.group(6)
    try:
        day = date(y, mo, d)
        at = time(int(hh), int(mm), int(ss or 0)) if hh is not None else None
    except ValueError:
        raise ValueError(f"fecha inexistente ({text[:25]!r})") from None
    return day, at


def _parse_time(raw: str) -> time:
    m = _TIME_RE.match(raw.strip())
    if not m:
        raise ValueError(f"hora ilegible ({raw.strip()[:10]!r}); se espera HH:MM")
    try:
        return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    except ValueError:
        raise ValueError(f"hora inexistente ({raw.strip()[:10]!r})") from None


def normalise_authorization_code(raw: str) -> str:
    code = re.sub(r"\s+", "", raw or "").upper()
    if code.isdigit() and 0 < len(code) < 6:
        code = code.zfill(6)  # a spreadsheet dropped the leading zeros
    if not _AUTH_RE.match(code):
        raise ValueError("el código de autorización debe tener 6 letras o dígitos")
    return code


def normalise_last4(raw: str) -> str:
    text = (raw or "").strip()
    if re.search(r"\d{13,}", re.sub(r"[\s-]", "", text)):
        raise ValueError(
            "la columna de tarjeta trae un número completo: exporte el reporte con la tarjeta "
            "enmascarada (solo los últimos 4 dígitos)"
        )
    if text.isdigit() and 0 < len(text) < 4:
        return text.zfill(4)
    m = re.search(r"(\d{4})\D*$", text)
    if not m:
        raise ValueError("faltan los últimos 4 dígitos de la tarjeta")
    return m.group(1)


def _card_type(raw: str) -> str | None:
    text = _norm(raw)
    if not text:
        return None
    if text.startswith(("deb", "db")) or text in ("debit", "redcompra"):
        return "debito"
    if text.startswith(("cred", "cr")) or text == "credit":
        return "credito"
    if text.startswith("prep"):
        return "prepago"
    return text[:20]


def parse_klap_report(data: bytes) -> ReportParse:
    """Read KLAP's sales report export. Never raises for bad content: problems come back as ``errors``."""
    if len(data) > MAX_REPORT_BYTES:
        return ReportParse(
            rows=[], errors=[RowError(line=0, message="El archivo supera 5 MB.")], skipped=[], columns={}
        )
    text = _decode(data)
    lines = text.splitlines()
    header_index, columns, delimiter = None, {}, ","
    for index, header_line in enumerate(lines[:15]):
        if not header_line.strip():
            continue
        delim = max((";", ",", "\t"), key=header_line.count)
        cells = next(csv.reader([header_line], delimiter=delim))
        found = _columns(cells)
        if all(c in found for c in REQUIRED):
            header_index, columns, delimiter = index, found, delim
            header_cells = cells
            break
    if header_index is None:
        first = next((line for line in lines if line.strip()), "")
        delim = max((";", ",", "\t"), key=first.count)
        found = _columns(next(csv.reader([first], delimiter=delim))) if first else {}
        missing = [LABELS[c] for c in REQUIRED if c not in found]
        return ReportParse(
            rows=[],
            errors=[
                RowError(
                    line=1,
                    message="No se encontró la fila de encabezados. Faltan las columnas: "
                    + ", ".join(missing)
                    + ". Columnas aceptadas: Fecha, Monto, Código de autorización, Últimos 4 dígitos (y opcionales Hora, "
                    "Marca, Tipo, Estado, N° operación).",
                )
            ],
            skipped=[],
            columns={},
        )

    reader = csv.reader(io.StringIO("\n".join(lines[header_index + 1 :])), delimiter=delimiter)
    rows: list[KlapReportRow] = []
    errors: list[RowError] = []
    skipped: list[RowError] = []
    seen: dict[tuple[str, int, str], int] = {}
    for cells in reader:
        line = header_index + 1 + reader.line_num
        if len(rows) + len(errors) + len(skipped) >= MAX_REPORT_ROWS:
            errors.append(RowError(line=line, message=f"El reporte supera {MAX_REPORT_ROWS} filas."))
            break
        if not any(c.strip() for c in cells):
            continue

        def cell(column: str, cells: list[str] = cells) -> str:
            index = columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        if _norm(cells[0]).startswith("total") or _norm(cell("date")).startswith("total"):
            skipped.append(RowError(line=line, message="Fila de totales."))
            continue
        status = _norm(cell("status"))
        if status not in APPROVED_STATUSES:
            skipped.append(RowError(line=line, message=f"Transacción no aprobada ({cell('status')[:30]})."))
            continue
        problems: list[str] = []
        missing = [LABELS[c] for c in REQUIRED if not cell(c)]
        if missing:
            problems.append("falta " + ", ".join(missing))
        values: dict[str, Any] = {}
        for column, parse in (
            ("date", _parse_date),
            ("amount", parse_amount_cell),
            ("authorization_code", normalise_authorization_code),
            ("last4", normalise_last4),
        ):
            if cell(column):
                try:
                    values[column] = parse(cell(column))
                except ValueError as exc:
                    problems.append(f"{LABELS[column]}: {exc}")
        day_time = values.get("date")
        local_time = day_time[1] if day_time else None
        if cell("time") and day_time:
            try:
                local_time = _parse_time(cell("time"))
            except ValueError as exc:
                problems.append(f"Hora: {exc}")
        if problems:
            errors.append(RowError(line=line, message="; ".join(problems)))
            continue
        row = KlapReportRow(
            line=line,
            day=values["date"][0],
            local_time=local_time,
            amount=values["amount"],
            authorization_code=values["authorization_code"],
            last4=values["last4"],
            brand=cell("brand").upper()[:20] or None,
            card_type=_card_type(cell("card_type")),
            operation_id=cell("operation_id")[:40] or None,
        )
        if row.key in seen:
            errors.append(
                RowError(
                    line=line,
                    message=f"Fila duplicada: igual a la fila {seen[row.key]} "
                    f"(autorización {row.authorization_code}, "
                    f"{format_clp(row.amount)}, ****{row.last4}).",
                )
            )
            continue
        seen[row.key] = line
        rows.append(row)
    if not rows and not errors:
        errors.append(RowError(line=header_index + 1, message="El reporte no tiene ventas aprobadas."))
    return ReportParse(
        rows=rows, errors=errors, skipped=skipped, columns={c: header_cells[i].strip() for c, i in columns.items()}
    )


# -- applying --------------------------------------------------------------------------------------------
async def _supervisor(s: AsyncSession, venue_id: int, user_id: int) -> User:
    user = await s.get(User, user_id)
    if user is None or user.venue_id != venue_id or not user.active:
        raise NotFound("El usuario no existe.", code="user.not_found")
    if user.role not in ("admin", "supervisor"):
        raise Forbidden(
            "Solo un supervisor o administrador verifica los cobros de respaldo.", code="verification.forbidden"
        )
    return user


async def _jornada(s: AsyncSession, venue_id: int, jornada_id: int) -> Jornada:
    jornada = await s.get(Jornada, jornada_id)
    if jornada is None or jornada.venue_id != venue_id:
        raise NotFound("La jornada no existe.", code="jornada.not_found")
    return jornada


def _manual_attempts_query(venue_id: int, jornada_id: int):
    return (
        select(PaymentAttempt)
        .join(CashSession, CashSession.id == PaymentAttempt.session_id)
        .where(
            PaymentAttempt.venue_id == venue_id,
            CashSession.jornada_id == jornada_id,
            PaymentAttempt.provider_id == MANUAL_PROVIDER,
            PaymentAttempt.state.in_((lc.APPROVED_MANUAL, lc.VERIFIED, lc.DISPUTED)),
        )
        .order_by(PaymentAttempt.finished_at, PaymentAttempt.id)
    )


def _attempt_out(a: PaymentAttempt) -> ManualAttemptOut:
    return ManualAttemptOut(
        id=a.id,
        sale_id=a.sale_id,
        session_id=a.session_id,
        register_id=a.register_id,
        amount=a.amount,
        state=a.state,
        reference=a.reference,
        authorization_code=a.authorization_code,
        last4=a.last4,
        card_brand=a.card_brand,
        card_type=a.card_type,
        confirmed_at=a.finished_at,
        verified_at=a.verified_at,
        verification_note=a.verification_note,
    )


async def list_manual_attempts(s: AsyncSession, venue_id: int, jornada_id: int) -> list[ManualAttemptOut]:
    """The jornada's manual backup payments with their verification state (for the verification page)."""
    await _jornada(s, venue_id, jornada_id)
    return [_attempt_out(a) for a in (await s.scalars(_manual_attempts_query(venue_id, jornada_id))).all()]


def _row_marker(row: KlapReportRow) -> str:
    return f"[KLAP {row.authorization_code} {row.amount} {row.last4} {row.day.isoformat()}]"


def _in_window(row: KlapReportRow, start: datetime, end: datetime, tz: str) -> bool:
    if row.local_time is None:
        local_start, local_end = start.astimezone(zone(tz)).date(), end.astimezone(zone(tz)).date()
        return local_start <= row.day <= local_end
    instant = datetime.combine(row.day, row.local_time, tzinfo=zone(tz))
    return start <= instant <= end


async def apply_klap_report(
    s: AsyncSession, *, venue_id: int, jornada_id: int, rows: list[KlapReportRow] | ReportParse, user_id: int
) -> VerificationResult:
    """Match the report against the jornada's manual KLAP attempts (see the module docstring)."""
    if isinstance(rows, ReportParse):
        if not rows.ok:
            raise ValidationFailed(
                f"El reporte tiene {len(rows.errors)} fila(s) con errores; corríjalas y "
                "vuelva a subirlo. No se aplicó nada.",
                code="klap_report.invalid",
                details={"errors": [msgspec.to_builtins(e) for e in rows.errors]},
            )
        rows = rows.rows
    if not all(isinstance(r, KlapReportRow) for r in rows):
        raise ValidationFailed("Filas de reporte inválidas.", code="klap_report.invalid")
    await _supervisor(s, venue_id, user_id)
    jornada = await _jornada(s, venue_id, jornada_id)
    venue = await s.get(Venue, venue_id)
    start = jornada.opened_at - WINDOW_MARGIN
    end = (jornada.closed_at or utcnow()) + WINDOW_MARGIN

    attempts = list(
        (await s.scalars(_manual_attempts_query(venue_id, jornada_id).with_for_update(of=PaymentAttempt))).all()
    )
    by_key: dict[tuple[str | None, int, str | None], list[PaymentAttempt]] = {}
    for attempt in attempts:
        by_key.setdefault(((attempt.authorization_code or "").upper(), attempt.amount, attempt.last4), []).append(
            attempt
        )
    open_incidents = list(
        (
            await s.scalars(
                select(Incident).where(
                    Incident.venue_id == venue_id,
                    Incident.jornada_id == jornada_id,
                    Incident.resolved.is_(False),
                    Incident.kind.in_((UNMATCHED_ATTEMPT, UNMATCHED_ROW)),
                )
            )
        ).all()
    )

    result = VerificationResult(
        verified=[],
        already_verified=[],
        unmatched_attempts=[],
        unmatched_rows=[],
        outside_jornada=[],
        incidents_opened=0,
        incidents_resolved=0,
    )
    matched_ids: set[int] = set()
    unmatched_rows: list[KlapReportRow] = []
    now = utcnow()
    tz = venue.timezone if venue else "America/Santiago"
    for row in rows:
        if not _in_window(row, start, end, tz):
            result.outside_jornada.append(row.line)
            continue
        candidates = [a for a in by_key.get(row.key, []) if a.id not in matched_ids]
        if not candidates:
            unmatched_rows.append(row)
            continue
        attempt = candidates[0]
        matched_ids.add(attempt.id)
        if attempt.state == lc.APPROVED_MANUAL:
            lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.VERIFY), utcnow())
            attempt.verified_at = now
            attempt.verification_note = f"Conciliado con el reporte KLAP (fila {row.line})."[:300]
            result.verified.append(attempt.id)
        else:
            result.already_verified.append(attempt.id)

    def resolve(incident: Incident, how: str) -> None:
        incident.resolved, incident.resolved_by, incident.resolved_at = True, user_id, now
        incident.resolution = how
        result.incidents_resolved += 1

    for incident in open_incidents:
        if incident.kind == UNMATCHED_ATTEMPT and incident.attempt_id in matched_ids:
            resolve(incident, "El reporte KLAP corregido incluye este cobro.")
        elif (
            incident.kind == UNMATCHED_ROW
            and not any(_row_marker(r) in incident.description for r in unmatched_rows)
            and any(_row_marker(r) in incident.description for r in rows)
        ):
            resolve(incident, "La venta del reporte KLAP ya tiene su cobro en la caja.")

    open_attempt_incidents = {i.attempt_id for i in open_incidents if i.kind == UNMATCHED_ATTEMPT and not i.resolved}
    open_row_markers = [i.description for i in open_incidents if i.kind == UNMATCHED_ROW and not i.resolved]
    for attempt in attempts:
        if attempt.id in matched_ids or attempt.state != lc.APPROVED_MANUAL:
            continue
        result.unmatched_attempts.append(attempt.id)
        if attempt.id in open_attempt_incidents:
            continue
        hint = ""
        same_code = [r for r in unmatched_rows if r.authorization_code == (attempt.authorization_code or "")]
        if same_code:
            hint = f" El reporte tiene la autorización {same_code[0].authorization_code} con {same_code[0].label()}."
        await open_incident(
            s,
            venue_id=venue_id,
            kind=UNMATCHED_ATTEMPT,
            jornada_id=jornada_id,
            session_id=attempt.session_id,
            register_id=attempt.register_id,
            attempt_id=attempt.id,
            user_id=user_id,
            description=(
                f"Cobro manual KLAP sin respaldo en el reporte: intento {attempt.id}, "
                f"{format_clp(attempt.amount)}, autorización {attempt.authorization_code or '—'}, "
                f"tarjeta ****{attempt.last4 or '----'}.{hint}"
            ),
        )
        result.incidents_opened += 1
    for row in unmatched_rows:
        result.unmatched_rows.append(row.line)
        marker = _row_marker(row)
        if any(marker in d for d in open_row_markers):
            continue
        await open_incident(
            s,
            venue_id=venue_id,
            kind=UNMATCHED_ROW,
            jornada_id=jornada_id,
            user_id=user_id,
            description=(
                f"Venta del reporte KLAP sin cobro registrado en caja (fila {row.line}): {row.label()}. {marker}"
            ),
        )
        result.incidents_opened += 1
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="klap.report_applied",
        entity="jornada",
        entity_id=jornada_id,
        payload={
            "rows": len(rows),
            "verified": len(result.verified),
            "unmatched_attempts": len(result.unmatched_attempts),
            "unmatched_rows": len(result.unmatched_rows),
            "outside_jornada": len(result.outside_jornada),
        },
    )
    return result


async def _manual_attempt(s: AsyncSession, venue_id: int, attempt_id: int) -> PaymentAttempt:
    attempt = (await s.scalars(select(PaymentAttempt).where(PaymentAttempt.id == attempt_id).with_for_update())).first()
    if attempt is None or attempt.venue_id != venue_id:
        raise NotFound("El cobro no existe.", code="attempt.not_found")
    if attempt.state not in (lc.APPROVED_MANUAL, lc.VERIFIED, lc.DISPUTED):
        raise Conflict("Solo se verifican cobros manuales de respaldo ya confirmados.", code="verification.not_manual")
    return attempt


def _note(text: str, label: str) -> str:
    note = " ".join((text or "").split())
    if len(note) < 3:
        raise ValidationFailed(f"{label} es obligatorio (mínimo 3 caracteres).", field="note")
    if len(note) > 250 or re.search(r"[\x00-\x1f\x7f<>]", note):
        raise ValidationFailed(f"{label} es demasiado largo o tiene caracteres no permitidos.", field="note")
    return note


async def _resolve_unmatched(s: AsyncSession, attempt: PaymentAttempt, user_id: int, how: str) -> None:
    for incident in (
        await s.scalars(
            select(Incident).where(
                Incident.attempt_id == attempt.id, Incident.kind == UNMATCHED_ATTEMPT, Incident.resolved.is_(False)
            )
        )
    ).all():
        incident.resolved, incident.resolved_by, incident.resolved_at = True, user_id, utcnow()
        incident.resolution = how


async def verify_attempt_by_hand(
    s: AsyncSession, *, venue_id: int, attempt_id: int, user_id: int, note: str
) -> ManualAttemptOut:
    """A supervisor saw the sale in the KLAP app or portal: the attempt becomes verified."""
    user = await _supervisor(s, venue_id, user_id)
    note = _note(note, "La nota de verificación (qué se revisó)")
    attempt = await _manual_attempt(s, venue_id, attempt_id)
    if attempt.state == lc.DISPUTED:
        raise Conflict("El cobro está en disputa; resuelva la incidencia primero.", code="verification.disputed")
    if attempt.state == lc.APPROVED_MANUAL:
        lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.VERIFY), utcnow())
        attempt.verified_at = utcnow()
        attempt.verification_note = f"Verificado a mano por {user.display_name}: {note}"[:300]
        await _resolve_unmatched(s, attempt, user_id, f"Verificado a mano: {note}")
        await record(
            s,
            venue_id=venue_id,
            user_id=user_id,
            action="klap.verified_by_hand",
            entity="attempt",
            entity_id=attempt.id,
            payload={"note": note},
        )
    return _attempt_out(attempt)


async def dispute_attempt(
    s: AsyncSession, *, venue_id: int, attempt_id: int, user_id: int, reason: str
) -> ManualAttemptOut:
    """The cashier's confirmation does not hold (not in KLAP, other amount or card): disputed + incident."""
    await _supervisor(s, venue_id, user_id)
    reason = _note(reason, "El motivo de la disputa")
    attempt = await _manual_attempt(s, venue_id, attempt_id)
    if attempt.state == lc.VERIFIED:
        raise Conflict("El cobro ya fue verificado contra KLAP.", code="verification.already_verified")
    if attempt.state == lc.APPROVED_MANUAL:
        lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.DISPUTE), utcnow())
        attempt.verification_note = f"En disputa: {reason}"[:300]
        jornada_id = await s.scalar(select(CashSession.jornada_id).where(CashSession.id == attempt.session_id))
        await open_incident(
            s,
            venue_id=venue_id,
            kind=DISPUTED,
            jornada_id=jornada_id,
            session_id=attempt.session_id,
            register_id=attempt.register_id,
            attempt_id=attempt.id,
            user_id=user_id,
            description=(
                f"Cobro manual KLAP en disputa: intento {attempt.id}, "
                f"{format_clp(attempt.amount)}, autorización "
                f"{attempt.authorization_code or '—'}. Motivo: {reason}"
            ),
        )
        await _resolve_unmatched(s, attempt, user_id, "Pasó a disputa.")
    return _attempt_out(attempt)
