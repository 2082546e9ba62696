"""/admin/cajas/reportes/verificacion: end-of-night verification of the manual backup payments (supervisors and
admins). Upload the sales report of a provider that reads one (``Capability.SALES_REPORT``), see what matched
and what became an incident, and check the jornada's manual payments one by one ("verificar a mano" with the
authorization code, or "disputar")."""

from __future__ import annotations

from typing import Annotated, Any

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
from caja_core.providers import Capability
from caja_core.registers import service as registers

from ..auth import FORM
from ..context import Web

PAGE = "admin/verification.html"
UPLOAD_FIELD = "reporte"
PROVIDER_FIELD = "proveedor"
#: The report itself may be up to verification.MAX_REPORT_BYTES; the multipart envelope adds a little.
MAX_UPLOAD_BODY_BYTES = verification.MAX_REPORT_BYTES + 64 * 1024


class VerifyForm(msgspec.Struct, kw_only=True):
    authorization_code: str = ""
    note: str = ""


class DisputeForm(msgspec.Struct, kw_only=True):
    note: str = ""


def page_url(jornada_id: int) -> str:
    return f"/admin/cajas/reportes/verificacion?jornada={jornada_id}"


def report_providers(web: Web) -> list[Any]:
    """The providers whose sales report verifies their manual payments."""
    return list(web.registry.with_capability(Capability.SALES_REPORT))


def report_provider(web: Web, provider_id: str | None) -> Any:
    """The provider whose report is uploaded: the one named in the form, or the only one there is."""
    providers = report_providers(web)
    chosen = next((p for p in providers if p.id == provider_id), None) if provider_id else None
    if chosen is None and len(providers) == 1 and not provider_id:
        chosen = providers[0]
    if chosen is None:
        raise ValidationFailed("Elija de qué proveedor es el reporte.", field=PROVIDER_FIELD)
    return chosen


async def verification_context(web: Web, jornada_id: int | None) -> dict:
    recent = await web.call(jornadas.list_jornadas, web.venue_id)
    providers = report_providers(web)
    if jornada_id is None:
        current = await web.call(jornadas.current_jornada, web.venue_id)
        jornada_id = current.id if current else (recent[0].id if recent else None)
    if jornada_id is None:
        return {"jornadas": recent, "selected": None, "attempts": [], "register_names": {}, "providers": providers}
    selected = await web.call(jornadas.get_jornada, web.venue_id, jornada_id)
    return {
        "jornadas": recent,
        "selected": selected,
        "providers": providers,
        "attempts": await web.call(verification.list_manual_attempts, web.venue_id, jornada_id),
        "register_names": {r.id: r.name for r in await web.call(registers.list_registers, web.venue_id)},
        "max_mb": verification.MAX_REPORT_BYTES // 1_000_000,
    }


async def read_report(request: Request, web: Web) -> tuple[Any, bytes]:
    """The provider chosen and the uploaded file, or a Spanish field error (missing, empty, too large, not a
    file upload)."""
    try:
        form = await request.form()
    except ClientException as exc:
        if exc.status_code == 413:
            raise ValidationFailed(
                f"El archivo supera {verification.MAX_REPORT_BYTES // 1_000_000} MB.",
                field=UPLOAD_FIELD,
                code="report.too_large",
            ) from exc
        raise ValidationFailed("No se pudo leer el archivo enviado.", field=UPLOAD_FIELD) from exc
    chosen = form.get(PROVIDER_FIELD)
    provider = report_provider(web, chosen if isinstance(chosen, str) else None)
    upload = form.get(UPLOAD_FIELD)
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationFailed(f"Elija el archivo CSV del reporte de ventas de {provider.name}.", field=UPLOAD_FIELD)
    data = await upload.read()
    if len(data) > verification.MAX_REPORT_BYTES:
        raise ValidationFailed(
            f"El archivo supera {verification.MAX_REPORT_BYTES // 1_000_000} MB.",
            field=UPLOAD_FIELD,
            code="report.too_large",
        )
    if not data.strip():
        raise ValidationFailed("El archivo está vacío.", field=UPLOAD_FIELD)
    return provider, data


async def import_report(
    s: AsyncSession, *, provider: Any, venue_id: int, jornada_id: int, data: bytes, user_id: int
) -> tuple[verification.ReportParse, verification.VerificationResult]:
    """Read the provider's report and apply it in one transaction; a report with bad rows changes nothing."""
    parsed = verification.read_report(provider, data)
    if not parsed.ok:
        raise ValidationFailed(
            f"El reporte tiene {len(parsed.errors)} fila(s) con errores; corríjalas y vuelva a "
            "subirlo. No se aplicó nada.",
            field=UPLOAD_FIELD,
            code="report.invalid",
            details={"errors": [msgspec.to_builtins(e) for e in parsed.errors]},
        )
    result = await verification.apply_report(
        s, provider=provider, venue_id=venue_id, jornada_id=jornada_id, rows=parsed, user_id=user_id
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
    registry: Any,
    venue_id: int,
    jornada_id: int,
    attempt_id: int,
    authorization_code: str,
    note: str,
    user_id: int,
) -> verification.ManualAttemptOut:
    """ "Verificar a mano": the supervisor types the authorization code seen in the provider's app or portal
    (written the provider's way, ``normalise_authorization_code``); it must be the one the cashier confirmed,
    then the attempt becomes verified."""
    attempt = await jornada_attempt(s, venue_id, jornada_id, attempt_id)
    name = registry.name(attempt.provider_id)
    provider = registry.get(attempt.provider_id) if attempt.provider_id in registry else None
    normalise = getattr(provider, "normalise_authorization_code", None)
    try:
        code = normalise(authorization_code) if normalise else " ".join(authorization_code.split()).upper()
    except ValueError as exc:
        raise ValidationFailed(
            f"Escriba el código de autorización que muestra {name} ({exc}).", field="authorization_code"
        ) from None
    if not code or code != (attempt.authorization_code or "").upper():
        raise ValidationFailed(
            f"El código no coincide con el que confirmó el cajero. Revise la venta en {name} o dispute el cobro.",
            field="authorization_code",
            code="verification.code_mismatch",
        )
    extra = " ".join(note.split())
    text = f"código {code} visto en {name}" + (f": {extra}" if extra else "")
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
        provider, data = await read_report(request, web)
        parsed, result = await web.venue_call(
            import_report, provider=provider, jornada_id=jornada_id, data=data, user_id=web.user_id
        )
    return await web.page(
        PAGE, **await verification_context(web, jornada_id), parsed=parsed, result=result, report_provider=provider
    )


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
            registry=web.registry,
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
