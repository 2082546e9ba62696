"""Exceptions → pages and partials in Spanish, with the right status and never a stack trace."""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.response import Template
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from caja_core.errors import CajaError

from .context import FormRejected, Web, is_htmx

log = logging.getLogger("caja.web")

#: Routes with their own (JSON) error format.
JSON_PREFIXES = ("/webhooks/", "/api/", "/health", "/metrics")

STATUS_TITLES = {
    400: "Solicitud inválida",
    401: "Debe iniciar sesión",
    403: "Acceso denegado",
    404: "No encontrado",
    405: "Método no permitido",
    409: "No se puede realizar",
    422: "Datos inválidos",
    429: "Demasiados intentos",
    500: "Error interno",
    503: "Servicio no disponible",
}


def wants_json(request: Request) -> bool:
    """A JSON client: a JSON route, or a request that sends JSON (the offline sync) or asks only for it."""
    if request.url.path.startswith(JSON_PREFIXES):
        return True
    if is_htmx(request):
        return False
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    accept = request.headers.get("accept", "").lower()
    return content_type == "application/json" or ("application/json" in accept and "text/html" not in accept)


def _json(request: Request, status: int, message: str, code: str) -> Response | None:
    if wants_json(request):
        return Response({"error": code, "message": message}, status_code=status, media_type=MediaType.JSON)
    return None


def _error_page(request: Request, status: int, message: str, code: str = "") -> Response:
    as_json = _json(request, status, message, code or str(status))
    if as_json is not None:
        return as_json
    web = Web(request)
    template = "errors/_error.html" if web.htmx else "errors/error.html"
    return web.error_page(
        template,
        status_code=status,
        title=STATUS_TITLES.get(status, "Error"),
        message=message,
        code=code,
        status=status,
    )


def form_rejected(request: Request, exc: FormRejected) -> Template:
    error = exc.error
    context = {
        **exc.context,
        "errors": error.fields,
        "error": error.message,
        "error_details": error.details,
        "error_code": error.code,
    }
    return Template(template_name=exc.template, context=context, status_code=error.status)


def caja_error(request: Request, exc: CajaError) -> Response:
    if exc.status >= 500:
        log.error("domain error %s: %s", exc.code, exc.message)
    return _error_page(request, exc.status, exc.message, exc.code)


def not_authorized(request: Request, exc: NotAuthorizedException) -> Response:
    as_json = _json(request, 401, "No autorizado.", "auth.required")
    if as_json is not None:
        return as_json
    target = "/login"
    if is_htmx(request):
        return Response(b"", status_code=200, headers={"HX-Redirect": target})
    return Response(b"", status_code=303, headers={"Location": target})


def permission_denied(request: Request, exc: PermissionDeniedException) -> Response:
    if "CSRF" in str(exc.detail):
        message = "El formulario expiró o no es válido. Recargue la página e intente de nuevo."
    else:
        message = "Su rol no tiene acceso a esta página."
    return _error_page(request, 403, message, "forbidden")


def not_found(request: Request, exc: NotFoundException) -> Response:
    return _error_page(request, 404, "La página o el objeto que busca no existe.", "not_found")


def validation_error(request: Request, exc: ValidationException) -> Response:
    return _error_page(request, 400, "Los datos enviados no son válidos.", "validation")


def http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = STATUS_TITLES.get(status, "Error")
    if status == 429:
        message = "Demasiados intentos. Espere un momento e intente de nuevo."
    return _error_page(request, status, message + ".", str(status))


def database_error(request: Request, exc: Exception) -> Response:
    """The database does not answer (down, restarting, out of connections): a Spanish 503, one log line
    without a traceback. Other database errors are bugs: a 500 with the traceback in the log."""
    from caja_core.ops.dbstate import database_unavailable, schema_mismatch

    if schema_mismatch(exc):
        # Not a bug of this request: the database was upgraded (or restored) under this running server. The POS
        # treats the 503 as offline and keeps selling; the operator restarts the server of the matching version.
        log.error(
            "la base de datos tiene otra versión del esquema que este servidor (%s) en %s %s: reinicie el servidor "
            "con la versión que corresponde a la base (caja db status)",
            str(getattr(exc, "orig", exc))[:200],
            request.method,
            request.url.path,
        )
        response = _error_page(request, 503, SCHEMA_MISMATCH_MESSAGE, "database.schema_mismatch")
        response.headers["Retry-After"] = "5"
        return response
    if not database_unavailable(exc):
        return internal_error(request, exc)
    log.warning("la base de datos no responde (%s) en %s %s", type(exc).__name__, request.method, request.url.path)
    from .ops.routes import DATABASE_DOWN_MESSAGE

    response = _error_page(request, 503, DATABASE_DOWN_MESSAGE, "database.unavailable")
    response.headers["Retry-After"] = "5"
    return response


SCHEMA_MISMATCH_MESSAGE = (
    "El servidor no corresponde a la versión de la base de datos (se actualizó o se restauró mientras funcionaba). "
    "Avise al supervisor: hay que reiniciar el servidor. La caja puede seguir en modo contingencia."
)


def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_page(request, 500, "Ocurrió un error inesperado. Intente de nuevo o avise al supervisor.", "internal")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    FormRejected: form_rejected,
    CajaError: caja_error,
    NotAuthorizedException: not_authorized,
    PermissionDeniedException: permission_denied,
    NotFoundException: not_found,
    ValidationException: validation_error,
    HTTPException: http_error,
    DBAPIError: database_error,
    SQLAlchemyTimeoutError: database_error,
    ConnectionError: database_error,
    Exception: internal_error,
}
