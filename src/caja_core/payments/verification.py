"""End-of-night verification of manual backup payments against the provider's own sales report.

During the night a cashier confirms each manual attempt (``Capability.MANUAL``) with the authorization code and
last 4 digits read from the provider's device (``approved_manual``). Afterwards a supervisor either imports the
provider's sales report or checks attempts one by one. Reading a report and deciding whether a row is an
attempt are the provider's (``Capability.SALES_REPORT``: ``parse_report`` and ``report_matches``, see
plugins/README.md); the flow is the core's:

* ``read_report(provider, data)`` hands the bytes to the provider's ``parse_report``: clean rows and, for every
  bad row, its line number and why. Nothing is applied from a report with errors.
* ``apply_report(s, provider=…, venue_id=…, jornada_id=…, rows=…, user_id=…)`` matches the jornada's manual
  attempts of that provider with the rows of the jornada's window (same amount, then the provider's
  ``report_matches``; each row pays at most one attempt): matched attempts become ``verified``; unmatched
  attempts and unmatched rows become incidents (``<provider>_unmatched_attempt`` /
  ``<provider>_unmatched_report_row``) that show in the jornada report. Applying the same report again
  changes nothing and opens nothing; a corrected report resolves the incidents it explains.
* ``verify_attempt_by_hand`` / ``dispute_attempt`` for the attempt-by-attempt check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.models import Incident
from ..audit.service import open_incident, record
from ..clock import utcnow, zone
from ..db.lookup import get_in_venue
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..jornadas.models import Jornada
from ..money import format_clp
from ..sessions.models import CashSession
from ..text import clean_reason
from ..users.models import User
from ..venues.models import Venue
from . import lifecycle as lc
from .models import PaymentAttempt

MAX_REPORT_BYTES = 5_000_000
#: Report rows this long before the jornada opened or after it closed still belong to it (clock skew).
WINDOW_MARGIN = timedelta(hours=1)
MANUAL_STATES = (lc.APPROVED_MANUAL, lc.VERIFIED, lc.DISPUTED)


def unmatched_attempt_kind(provider_id: str) -> str:
    """The incident kind of a manual attempt the provider's report does not have."""
    return f"{provider_id}_unmatched_attempt"


def unmatched_row_kind(provider_id: str) -> str:
    """The incident kind of a report row with no attempt in the jornada."""
    return f"{provider_id}_unmatched_report_row"


def disputed_kind(provider_id: str) -> str:
    """The incident kind of a disputed manual attempt."""
    return f"{provider_id}_disputed"


class ReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One approved sale of a provider's sales report, as its ``parse_report`` read it."""

    line: int  # line in the file (the header is its own line)
    day: date  # local date of the sale
    local_time: time | None  # local time, when the report has it
    amount: int
    authorization_code: str
    last4: str
    brand: str | None = None
    card_type: str | None = None
    operation_id: str | None = None

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
    rows: list[ReportRow]
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
    provider_id: str
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


def read_report(provider: Any, data: bytes) -> ReportParse:
    """The provider's reading of its sales report; a file over the limit is one error, never read."""
    if len(data) > MAX_REPORT_BYTES:
        return ReportParse(
            rows=[],
            errors=[RowError(line=0, message=f"El archivo supera {MAX_REPORT_BYTES // 1_000_000} MB.")],
            skipped=[],
            columns={},
        )
    parsed: ReportParse = provider.parse_report(data)
    return parsed


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
    return await get_in_venue(s, Jornada, jornada_id, venue_id, "La jornada no existe.", "jornada.not_found")


def _manual_attempts_query(venue_id: int, jornada_id: int, provider_id: str | None = None) -> Any:
    query = (
        select(PaymentAttempt)
        .join(CashSession, CashSession.id == PaymentAttempt.session_id)
        .where(
            PaymentAttempt.venue_id == venue_id,
            CashSession.jornada_id == jornada_id,
            PaymentAttempt.state.in_(MANUAL_STATES),
        )
        .order_by(PaymentAttempt.finished_at, PaymentAttempt.id)
    )
    if provider_id is not None:
        query = query.where(PaymentAttempt.provider_id == provider_id)
    return query


def _attempt_out(a: PaymentAttempt) -> ManualAttemptOut:
    return ManualAttemptOut(
        id=a.id,
        sale_id=a.sale_id,
        session_id=a.session_id,
        register_id=a.register_id,
        provider_id=a.provider_id,
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


def _row_marker(provider_id: str, row: ReportRow) -> str:
    """What names a report row in its incident, written in letters only: the card-data scrubber masks long runs
    of digits, so a marker made of the row's numbers would not read back the same."""
    raw = f"{provider_id}|{row.authorization_code}|{row.amount}|{row.last4}|{row.day.isoformat()}"
    digest = hashlib.sha256(raw.encode()).hexdigest()[:20]
    return "[reporte " + digest.translate(str.maketrans("0123456789", "ghijklmnop")) + "]"


def _in_window(row: ReportRow, start: datetime, end: datetime, tz: str) -> bool:
    if row.local_time is None:
        local_start, local_end = start.astimezone(zone(tz)).date(), end.astimezone(zone(tz)).date()
        return local_start <= row.day <= local_end
    instant = datetime.combine(row.day, row.local_time, tzinfo=zone(tz))
    return start <= instant <= end


async def apply_report(
    s: AsyncSession,
    *,
    provider: Any,
    venue_id: int,
    jornada_id: int,
    rows: Sequence[ReportRow] | ReportParse,
    user_id: int,
) -> VerificationResult:
    """Match the provider's report against the jornada's manual attempts of that provider (see the module
    docstring)."""
    if isinstance(rows, ReportParse):
        if not rows.ok:
            raise ValidationFailed(
                f"El reporte tiene {len(rows.errors)} fila(s) con errores; corríjalas y "
                "vuelva a subirlo. No se aplicó nada.",
                code="report.invalid",
                details={"errors": [msgspec.to_builtins(e) for e in rows.errors]},
            )
        rows = rows.rows
    if not all(isinstance(r, ReportRow) for r in rows):
        raise ValidationFailed("Filas de reporte inválidas.", code="report.invalid")
    pid: str = provider.id
    await _supervisor(s, venue_id, user_id)
    jornada = await _jornada(s, venue_id, jornada_id)
    venue = await s.get(Venue, venue_id)
    start = jornada.opened_at - WINDOW_MARGIN
    end = (jornada.closed_at or utcnow()) + WINDOW_MARGIN

    attempts = list(
        (await s.scalars(_manual_attempts_query(venue_id, jornada_id, pid).with_for_update(of=PaymentAttempt))).all()
    )
    by_amount: dict[int, list[tuple[PaymentAttempt, ManualAttemptOut]]] = {}
    for attempt in attempts:
        by_amount.setdefault(attempt.amount, []).append((attempt, _attempt_out(attempt)))
    attempt_kind, row_kind = unmatched_attempt_kind(pid), unmatched_row_kind(pid)
    open_incidents = list(
        (
            await s.scalars(
                select(Incident).where(
                    Incident.venue_id == venue_id,
                    Incident.jornada_id == jornada_id,
                    Incident.resolved.is_(False),
                    Incident.kind.in_((attempt_kind, row_kind)),
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
    unmatched_rows: list[ReportRow] = []
    now = utcnow()
    tz = venue.timezone if venue else "America/Santiago"
    for row in rows:
        if not _in_window(row, start, end, tz):
            result.outside_jornada.append(row.line)
            continue
        attempt = next(
            (
                a
                for a, view in by_amount.get(row.amount, [])
                if a.id not in matched_ids and provider.report_matches(row, view)
            ),
            None,
        )
        if attempt is None:
            unmatched_rows.append(row)
            continue
        matched_ids.add(attempt.id)
        if attempt.state == lc.APPROVED_MANUAL:
            lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.VERIFY), now)
            attempt.verified_at = now
            attempt.verification_note = f"Conciliado con el reporte {provider.name} (fila {row.line})."[:300]
            result.verified.append(attempt.id)
        else:
            result.already_verified.append(attempt.id)

    def resolve(incident: Incident, how: str) -> None:
        incident.resolved, incident.resolved_by, incident.resolved_at = True, user_id, now
        incident.resolution = how
        result.incidents_resolved += 1

    unmatched_markers = {_row_marker(pid, r) for r in unmatched_rows}
    report_markers = {_row_marker(pid, r) for r in rows}

    def marker_of(incident: Incident) -> str | None:
        return next((m for m in report_markers if m in incident.description), None)

    for incident in open_incidents:
        if incident.kind == attempt_kind and incident.attempt_id in matched_ids:
            resolve(incident, f"El reporte {provider.name} corregido incluye este cobro.")
        elif incident.kind == row_kind and (marker := marker_of(incident)) and marker not in unmatched_markers:
            resolve(incident, f"La venta del reporte {provider.name} ya tiene su cobro en la caja.")

    open_attempt_incidents = {i.attempt_id for i in open_incidents if i.kind == attempt_kind and not i.resolved}
    open_row_descriptions = [i.description for i in open_incidents if i.kind == row_kind and not i.resolved]
    for attempt in attempts:
        if attempt.id in matched_ids or attempt.state != lc.APPROVED_MANUAL:
            continue
        result.unmatched_attempts.append(attempt.id)
        if attempt.id in open_attempt_incidents:
            continue
        hint = ""
        same_code = [r for r in unmatched_rows if r.authorization_code == (attempt.authorization_code or "").upper()]
        if same_code:
            hint = f" El reporte tiene la autorización {same_code[0].authorization_code} con {same_code[0].label()}."
        await open_incident(
            s,
            venue_id=venue_id,
            kind=attempt_kind,
            jornada_id=jornada_id,
            session_id=attempt.session_id,
            register_id=attempt.register_id,
            attempt_id=attempt.id,
            user_id=user_id,
            description=(
                f"Cobro manual {provider.name} sin respaldo en el reporte: intento {attempt.id}, "
                f"{format_clp(attempt.amount)}, autorización {attempt.authorization_code or '—'}, "
                f"tarjeta ****{attempt.last4 or '----'}.{hint}"
            ),
        )
        result.incidents_opened += 1
    for row in unmatched_rows:
        result.unmatched_rows.append(row.line)
        marker = _row_marker(pid, row)
        if any(marker in d for d in open_row_descriptions):
            continue
        await open_incident(
            s,
            venue_id=venue_id,
            kind=row_kind,
            jornada_id=jornada_id,
            user_id=user_id,
            description=(
                f"Venta del reporte {provider.name} sin cobro registrado en caja (fila {row.line}): "
                f"{row.label()}. {marker}"
            ),
        )
        result.incidents_opened += 1
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="verification.report_applied",
        entity="jornada",
        entity_id=jornada_id,
        payload={
            "provider": pid,
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
    if attempt.state not in MANUAL_STATES:
        raise Conflict("Solo se verifican cobros manuales de respaldo ya confirmados.", code="verification.not_manual")
    return attempt


async def _resolve_unmatched(s: AsyncSession, attempt: PaymentAttempt, user_id: int, how: str) -> None:
    for incident in (
        await s.scalars(
            select(Incident).where(
                Incident.attempt_id == attempt.id,
                Incident.kind == unmatched_attempt_kind(attempt.provider_id),
                Incident.resolved.is_(False),
            )
        )
    ).all():
        incident.resolved, incident.resolved_by, incident.resolved_at = True, user_id, utcnow()
        incident.resolution = how


async def verify_attempt_by_hand(
    s: AsyncSession, *, venue_id: int, attempt_id: int, user_id: int, note: str
) -> ManualAttemptOut:
    """A supervisor saw the sale in the provider's app or portal: the attempt becomes verified."""
    user = await _supervisor(s, venue_id, user_id)
    note = clean_reason(note, "La nota de verificación (qué se revisó)", field="note", maximum=250)
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
            action="verification.verified_by_hand",
            entity="attempt",
            entity_id=attempt.id,
            payload={"note": note},
        )
    return _attempt_out(attempt)


async def dispute_attempt(
    s: AsyncSession, *, venue_id: int, attempt_id: int, user_id: int, reason: str
) -> ManualAttemptOut:
    """The cashier's confirmation does not hold (not in the provider's records, other amount or card): disputed
    + incident."""
    await _supervisor(s, venue_id, user_id)
    reason = clean_reason(reason, "El motivo de la disputa", field="note", maximum=250)
    attempt = await _manual_attempt(s, venue_id, attempt_id)
    if attempt.state == lc.VERIFIED:
        raise Conflict("El cobro ya fue verificado.", code="verification.already_verified")
    if attempt.state == lc.APPROVED_MANUAL:
        lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.DISPUTE), utcnow())
        attempt.verification_note = f"En disputa: {reason}"[:300]
        jornada_id = await s.scalar(select(CashSession.jornada_id).where(CashSession.id == attempt.session_id))
        await open_incident(
            s,
            venue_id=venue_id,
            kind=disputed_kind(attempt.provider_id),
            jornada_id=jornada_id,
            session_id=attempt.session_id,
            register_id=attempt.register_id,
            attempt_id=attempt.id,
            user_id=user_id,
            description=(
                f"Cobro manual en disputa: intento {attempt.id}, "
                f"{format_clp(attempt.amount)}, autorización "
                f"{attempt.authorization_code or '—'}. Motivo: {reason}"
            ),
        )
        await _resolve_unmatched(s, attempt, user_id, "Pasó a disputa.")
    return _attempt_out(attempt)
