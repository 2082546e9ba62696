"""/admin/cajas/reportes/verificacion: end-of-night verification of the KLAP backup payments (supervisors and
admins). Upload KLAP's sales report (CSV), see what matched and what became an incident, and check the
jornada's manual payments one by one ("verificar a mano" with the authorization code, or "disputar")."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from caja_core.errors import NotFound, ValidationFailed
from caja_core.jornadas import service as jornadas
from caja_core.payments import verification
from caja_core.registers import service as registers

from ..auth import FORM
from ..context import Web

PAGE = "admin/verification.html"
UPLOAD_FIELD = "reporte"
#: The report itself may be up to verification.MAX_REPORT_BYTES; the multipart envelope adds a little.
MAX_UPLOAD_BODY_BYTES = verification.MAX_REPORT_BYTES + 64 * 1024


class VerifyForm(msgspec.Struct, kw_only=True):
    authorization_code: str = ""
    note: str = ""


class DisputeForm(msgspec.Struct, kw_only=True):
    note: str = ""


def page_url(jornada_id: int) -> str:
    return f"/admin/cajas/reportes/verificacion?jornada={jornada_id}"


async def verification_context(web: Web, jornada_id: int | None) -> dict:
    recent = await web.call(jornadas.list_jornadas, web.venue_id)
    if jornada_id is None:
        current = await web.call(jornadas.current_jornada, web.venue_id)
        jornada_id = current.id if current else (recent[0].id if recent else None)
    if jornada_id is None:
        return {"jornadas": recent, "selected": None, "attempts": [], "register_names": {}}
    selected = await web.call(jornadas.get_jornada, web.venue_id, jornada_id)
    return {
        "jornadas": recent,
        "selected": selected,
        "attempts": await web.call(verification.list_manual_attempts, web.venue_id, jornada_id),
        "register_names": {r.id: r.name for r in await web.call(registers.list_registers, web.venue_id)},
        "max_mb": verification.MAX_REPORT_BYTES // 1_000_000,
    }


async def read_report(request: Request) -> bytes:
    """The uploaded CSV, or a Spanish field error (missing, empty, too large, not a file upload)."""
    try:
        form = await request.form()
    except ClientException as exc:
        if exc.status_code == 413:
            raise ValidationFailed(
                f"El archivo supera {verification.MAX_REPORT_BYTES // 1_000_000} MB.",
                field=UPLOAD_FIELD,
                code="klap_report.too_large",
            ) from exc
        raise ValidationFailed("No se pudo leer el archivo enviado.", field=UPLOAD_FIELD) from exc
    upload = form.get(UPLOAD_FIELD)
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationFailed("Elija el archivo CSV del reporte de ventas de KLAP.", field=UPLOAD_FIELD)
    data = await upload.read()
    if len(data) > verification.MAX_REPORT_BYTES:
        raise ValidationFailed(
            f"El archivo supera {verification.MAX_REPORT_BYTES // 1_000_000} MB.",
            field=UPLOAD_FIELD,
            code="klap_report.too_large",
        )
    if not data.strip():
        raise ValidationFailed("El archivo está vacío.", field=UPLOAD_FIELD)
    return data


async def import_report(
    s: AsyncSession, *, venue_id: int, jornada_id: int, data: bytes, user_id: int
) -> tuple[verification.ReportParse, verification.VerificationResult]:
    """Parse KLAP's report and apply it in one transaction; a report with bad rows changes nothing."""
    parsed = verification.parse_klap_report(data)
    if not parsed.ok:
        raise ValidationFailed(
            f"El reporte tiene {len(parsed.errors)} fila(s) con errores; corríjalas y vuelva a "
            "subirlo. No se aplicó nada.",
            field=UPLOAD_FIELD,
            code="klap_report.invalid",
            details={"errors": [msgspec.to_builtins(e) for e in parsed.errors]},
        )
    result = await verification.apply_klap_report(
        s, venue_id=venue_id, jornada_id=jornada_id, rows=parsed, user_id=user_id
    )
    return parsed, result


async def jornada_attempt(
    s: AsyncSession, venue_id: int, jornada_id: int, attempt_id: int
) -> verification.ManualAttemptOut:
    attempt = next(
        (a for a in await verification.list_manual_attempts(s, venue_id, jornada_id) if a.id == attempt_id), None
    )
    if attempt is None:
        raise NotFound("El cobro no existe en esta jornada.", code="attempt.not_found")
    return attempt


async def dispute_in_jornada(
    s: AsyncSession, *, venue_id: int, jornada_id: int, attempt_id: int, reason: str, user_id: int
) -> verification.ManualAttemptOut:
    """ "Disputar": the cashier's confirmation does not hold; the attempt is disputed and an incident opens."""
    await jornada_attempt(s, venue_id, jornada_id, attempt_id)
    return await verification.dispute_attempt(
        s, venue_id=venue_id, attempt_id=attempt_id, user_id=user_id, reason=reason
    )


async def verify_with_code(
    s: AsyncSession,
    *,
    venue_id: int,
    jornada_id: int,
    attempt_id: int,
    authorization_code: str,
    note: str,
    user_id: int,
) -> verification.ManualAttemptOut:
    """ "Verificar a mano": the supervisor types the authorization code seen in the KLAP app or portal; it must
    be the one the cashier confirmed, then the attempt becomes verified."""
    attempt = await jornada_attempt(s, venue_id, jornada_id, attempt_id)
    try:
        code = verification.normalise_authorization_code(authorization_code)
    except ValueError:
        raise ValidationFailed(
            "Escriba el código de autorización que muestra KLAP (6 letras o dígitos).", field="authorization_code"
        ) from None
    if code != (attempt.authorization_code or "").upper():
        raise ValidationFailed(
            "El código no coincide con el que confirmó el cajero. Revise la venta en KLAP o dispute el cobro.",
            field="authorization_code",
            code="verification.code_mismatch",
        )
    extra = " ".join(note.split())
    text = f"código {code} visto en KLAP" + (f": {extra}" if extra else "")
    return await verification.verify_attempt_by_hand(
        s, venue_id=venue_id, attempt_id=attempt_id, user_id=user_id, note=text
    )


@get("/cajas/reportes/verificacion")
async def verification_page(request: Request, jornada: FromQuery[int | None] = None) -> Template:
    web = Web(request)
    return await web.page(PAGE, **await verification_context(web, jornada))


@post("/cajas/reportes/verificacion/{jornada_id:int}/reporte", request_max_body_size=MAX_UPLOAD_BODY_BYTES)
async def upload_report(request: Request, jornada_id: FromPath[int]) -> Template:
    web = Web(request)
    async with web.form(PAGE, lambda: verification_context(web, jornada_id)):
        data = await read_report(request)
        parsed, result = await web.venue_call(import_report, jornada_id=jornada_id, data=data, user_id=web.user_id)
    return await web.page(PAGE, **await verification_context(web, jornada_id), parsed=parsed, result=result)


@post("/cajas/reportes/verificacion/{jornada_id:int}/intentos/{attempt_id:int}/verificar")
async def verify_attempt(
    request: Request, jornada_id: FromPath[int], attempt_id: FromPath[int], data: Annotated[VerifyForm, FORM]
) -> Response:
    web = Web(request)
    async with web.form(
        PAGE,
        lambda: verification_context(web, jornada_id),
        form=msgspec.to_builtins(data),
        acting_on=attempt_id,
        action="verificar",
    ):
        await web.venue_call(
            verify_with_code,
            jornada_id=jornada_id,
            attempt_id=attempt_id,
            authorization_code=data.authorization_code,
            note=data.note,
            user_id=web.user_id,
        )
    return web.redirect(page_url(jornada_id) + f"&verificado={attempt_id}")


@post("/cajas/reportes/verificacion/{jornada_id:int}/intentos/{attempt_id:int}/disputar")
async def dispute_attempt(
    request: Request, jornada_id: FromPath[int], attempt_id: FromPath[int], data: Annotated[DisputeForm, FORM]
) -> Response:
    web = Web(request)
    async with web.form(
        PAGE,
        lambda: verification_context(web, jornada_id),
        form=msgspec.to_builtins(data),
        acting_on=attempt_id,
        action="disputar",
    ):
        await web.venue_call(
            dispute_in_jornada, jornada_id=jornada_id, attempt_id=attempt_id, reason=data.note, user_id=web.user_id
        )
    return web.redirect(page_url(jornada_id) + f"&disputado={attempt_id}")


route_handlers = [verification_page, upload_report, verify_attempt, dispute_attempt]
