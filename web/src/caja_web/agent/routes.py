"""``/api/agent/v1``: what ``caja agent`` on the register PC talks to (see docs/agent.md).

Every call carries ``Authorization: Bearer <register token>`` (rotated in /admin/cajas/<id>/editar, stored
hashed). No session, no CSRF. Errors are JSON ``{"error": "<mensaje>", "code": "<código>"}``: 401 without a
valid token, 404 for a command of another register (or none), 400 for a malformed body or query, 409 for a
refused claim or a second, different result, 503 while the database is away (the agent retries).

Each agent process names itself with ``X-Caja-Agent-Instance`` (a random id drawn at its start). One process
serves a register at a time: another one polling, claiming or beating on the same token gets 409
``agent.other_instance`` (and two live ones open an incident), until the first has been silent for the lease."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from sqlalchemy.exc import DBAPIError

from caja_core.agents import service as agents
from caja_core.errors import CajaError
from caja_core.registers.service import RegisterOut, register_for_agent_token

from ..validation import spanish_validation

log = logging.getLogger("caja.web.agent")

#: A Details answer lists every sale since the last batch close: keep room for a very busy night.
MAX_RESULT_BYTES = 4_000_000
MAX_SMALL_BODY_BYTES = 16_000


# --- bodies and answers -----------------------------------------------------------------------------------


class ProgressIn(msgspec.Struct, kw_only=True):
    """An intermediate message of the terminal (code null: the terminal confirmed receipt)."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    code: int | None = None


class ResultIn(msgspec.Struct, kw_only=True):
    """The terminal's final response (card data masked) or ``{"AgentError": …, "Detail": …}``."""

    result: dict[str, Any]


class ClaimIn(msgspec.Struct, kw_only=True):
    """The fence of the delivery the agent is about to run."""

    fence: Annotated[int, msgspec.Meta(ge=0, lt=2**31)]


class ClaimOut(msgspec.Struct, kw_only=True):
    """``claimed``: run it now."""

    status: str


class ClaimRefusedOut(msgspec.Struct, kw_only=True):
    """Do not run it: ``code`` is ``agent.claim_revoked``, ``agent.claim_expired``, ``agent.claim_stale`` or
    ``agent.claim_taken``."""

    error: str
    code: str


class HeartbeatIn(msgspec.Struct, kw_only=True):
    terminal: Literal["ok", "unreachable"]
    detail: Annotated[str, msgspec.Meta(max_length=4000)] = ""


class AckOut(msgspec.Struct, kw_only=True):
    """``stored``, ``duplicate`` (same result again: nothing changed), ``late`` (kept, after the deadline),
    ``ignored`` (progress after the result) or ``ok`` (heartbeat)."""

    status: str


class AgentErrorOut(msgspec.Struct, kw_only=True):
    error: str
    code: str


def _error(status: int, message: str, code: str) -> Response[AgentErrorOut]:
    return Response(AgentErrorOut(error=message, code=code), status_code=status)


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=AgentErrorOut, description=description)


UNAUTHORIZED = _spec("Falta el token de la caja o no es válido")
BAD_REQUEST = _spec("Cuerpo o parámetros mal formados")
NOT_FOUND = _spec("El comando no existe para esta caja")
UNAVAILABLE = _spec("Base de datos no disponible: reintentar")
UNPROCESSABLE = _spec("Bien formado pero no aceptable (mensaje o resultado vacío)")
TOO_LARGE = _spec("Cuerpo demasiado grande")


# --- errors: always JSON, always Spanish ------------------------------------------------------------------


def _reason(message: str, key: str) -> str:
    """One Litestar/msgspec validation reason (English) in Spanish, with the field it is about."""
    if "malformed" in message:
        return "el cuerpo no es JSON válido"
    if message.strip("'\"") == "data":
        return "falta el cuerpo JSON"
    field = "" if key in ("", "data") else key
    if " - at `" in message:
        return spanish_validation(message)
    if field:
        return spanish_validation(f"{message} - at `$.{field}`")
    reason = spanish_validation(message)
    return reason if reason.startswith("falta") else f"el cuerpo: {reason}"


def _bad_request(reasons: list[str]) -> Response:
    text = "Solicitud mal formada: " + "; ".join(reasons) + "." if reasons else "Solicitud mal formada."
    return _error(400, text, "agent.bad_request")


def _on_validation(request: Request, exc: ValidationException) -> Response:
    items = [item for item in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(item, dict)]
    return _bad_request([_reason(str(i.get("message", "")), str(i.get("key") or "")) for i in items[:3]])


def _on_unauthorized(request: Request, exc: NotAuthorizedException) -> Response:
    return _error(
        401,
        str(exc.detail) if exc.detail and exc.detail != "Unauthorized" else "Token de agente ausente o inválido.",
        "agent.unauthorized",
    )


def _on_caja_error(request: Request, exc: CajaError) -> Response:
    return _error(exc.status, exc.message, exc.code)


def _on_http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400:
        return _bad_request([_reason(str(exc.detail), "")] if "JSON" in str(exc.detail) else [])
    messages = {
        413: "El cuerpo es demasiado grande.",
        405: "Método no permitido.",
        404: "No encontrado.",
        400: "Solicitud mal formada.",
    }
    return _error(
        exc.status_code, messages.get(exc.status_code, "Solicitud rechazada."), f"agent.http_{exc.status_code}"
    )


def _on_database_error(request: Request, exc: Exception) -> Response:
    log.warning("agent API: database unavailable on %s: %s", request.url.path, type(exc).__name__)
    return _error(503, "La base de datos no está disponible; reintente en unos segundos.", "agent.unavailable")


# --- authentication -----------------------------------------------------------------------------------------


async def agent_register(
    request: Request,
    authorization: Annotated[
        str | None, HeaderParameter(name="Authorization", required=False, description="`Bearer <token de la caja>`")
    ] = None,
) -> RegisterOut:
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization:
        raise NotAuthorizedException(detail="Falta el token de agente (Authorization: Bearer <token>).")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(detail="Encabezado Authorization inválido: se espera «Bearer <token>».")
    async with request.app.state.db.reader() as s:
        register = await register_for_agent_token(s, token.strip())
    if register is None:
        raise NotAuthorizedException(
            detail="Token de agente inválido o reemplazado: genere uno nuevo en la ficha de la caja."
        )
    return register


def _timing(request: Request) -> agents.AgentTiming:
    return getattr(request.app.state, "agent_timing", None) or agents.AgentTiming()


def _instance(request: Request) -> str | None:
    """Which agent process asks (409 ``agent.other_instance`` unless it is the one serving the register)."""
    return request.headers.get(agents.INSTANCE_HEADER)


OTHER_AGENT = _spec("Otro agente atiende esta caja (dos agentes con el mismo token): no se entrega nada")


# --- handlers -----------------------------------------------------------------------------------------------


def _watch_disconnect(request: Request) -> tuple[asyncio.Task, list[bool]]:
    """A task that notes when the agent hangs up during a long poll."""
    gone = [False]

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone[0] = True
                return

    return asyncio.create_task(watch()), gone


@get(
    "/commands/next",
    status_code=200,
    include_in_schema=True,
    cache=False,
    summary="Siguiente comando para el terminal de la caja (long poll)",
    description="Espera hasta `wait` segundos (máximo 30) un comando para el terminal. 200 con el comando, "
    "204 si no llegó ninguno. Un comando entregado cuyo resultado nunca llegó se vuelve a entregar: "
    "el agente decide con su diario (no lo repite si ya lo ejecutó).",
    responses={
        204: ResponseSpec(data_container=None, description="Sin comandos en la espera"),
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        409: OTHER_AGENT,
        503: UNAVAILABLE,
    },
)
async def next_command(
    request: Request,
    register: NamedDependency[RegisterOut],
    wait: Annotated[
        float, QueryParameter(name="wait", ge=0, le=3600, description="Segundos de espera (máximo 30)")
    ] = 25.0,
) -> Response[agents.AgentCommandOut]:
    watcher, gone = _watch_disconnect(request)
    try:
        command = await agents.next_for_agent(
            request.app.state.db,
            register.id,
            _instance(request),
            min(wait, agents.MAX_WAIT_S),
            timing=_timing(request),
            gone=lambda: gone[0],
        )
    finally:
        watcher.cancel()
    if command is None:
        return Response[Any](content=None, status_code=204)
    return Response(command, status_code=200)


@post(
    "/commands/{command_id:int}/claim",
    status_code=200,
    include_in_schema=True,
    request_max_body_size=MAX_SMALL_BODY_BYTES,
    summary="Reclamar el comando justo antes de enviarlo al terminal",
    description="El agente presenta el `fence` de la entrega que recibió. 200 `claimed`: puede ejecutarlo. "
    "409: no debe ejecutarlo nunca (revocado, vencido, entrega reemplazada o ya iniciado). Repetir el mismo "
    "reclamo responde otra vez `claimed`.",
    responses={
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: ResponseSpec(
            data_container=ClaimRefusedOut, description="No se ejecuta (también `agent.other_instance`: otro agente)"
        ),
        413: TOO_LARGE,
        503: UNAVAILABLE,
    },
)
async def command_claim(
    request: Request, register: NamedDependency[RegisterOut], command_id: FromPath[int], data: JSONBody[ClaimIn]
) -> Response[ClaimOut] | Response[ClaimRefusedOut]:
    status = await agents.claim_for_agent(
        request.app.state.db, register.id, _instance(request), command_id, data.fence, timing=_timing(request)
    )
    if status != "claimed":
        return Response(
            ClaimRefusedOut(error=agents.CLAIM_REFUSALS[status], code=f"agent.claim_{status}"), status_code=409
        )
    return Response(ClaimOut(status=status), status_code=200)


@post(
    "/commands/{command_id:int}/progress",
    status_code=200,
    include_in_schema=True,
    request_max_body_size=MAX_SMALL_BODY_BYTES,
    summary="Mensaje intermedio del terminal",
    description="El acuse de recibo del terminal (`code` null) y cada mensaje intermedio (78 a 84), en orden.",
    responses={
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        413: TOO_LARGE,
        422: UNPROCESSABLE,
        503: UNAVAILABLE,
    },
)
async def command_progress(
    request: Request, register: NamedDependency[RegisterOut], command_id: FromPath[int], data: JSONBody[ProgressIn]
) -> AckOut:
    async with request.app.state.db.session() as s:
        status = await agents.post_progress(s, register.id, command_id, message=data.message, code=data.code)
    agents.notify_committed(s)
    return AckOut(status=status)


@post(
    "/commands/{command_id:int}/result",
    status_code=200,
    include_in_schema=True,
    request_max_body_size=MAX_RESULT_BYTES,
    summary="Resultado final del comando",
    description="Idempotente: el mismo resultado otra vez responde 200 `duplicate` sin cambiar nada; otro "
    "resultado distinto para el mismo comando responde 409 y se conserva el primero. Un resultado que llega "
    "cuando el servidor ya dejó de esperarlo responde `late` y se aplica al pago igual; si el comando nunca se "
    "reclamó (el terminal no pudo verlo), solo se acepta un `AgentError` y una respuesta del terminal es 409.",
    responses={
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: _spec("El comando ya tiene otro resultado, o nunca se inició"),
        413: TOO_LARGE,
        422: UNPROCESSABLE,
        503: UNAVAILABLE,
    },
)
async def command_result(
    request: Request, register: NamedDependency[RegisterOut], command_id: FromPath[int], data: JSONBody[ResultIn]
) -> AckOut:
    status = await agents.receive_result(
        request.app.state.db,
        register.id,
        command_id,
        data.result,
        orchestrator=getattr(request.app.state, "orchestrator", None),
    )
    return AckOut(status=status)


@post(
    "/heartbeat",
    status_code=200,
    include_in_schema=True,
    request_max_body_size=MAX_SMALL_BODY_BYTES,
    summary="Señal de vida del agente y estado del terminal",
    description="Cada pocos segundos. Se muestra en /health y en la ficha de la caja.",
    responses={400: BAD_REQUEST, 401: UNAUTHORIZED, 409: OTHER_AGENT, 413: TOO_LARGE, 503: UNAVAILABLE},
)
async def agent_heartbeat(
    request: Request, register: NamedDependency[RegisterOut], data: JSONBody[HeartbeatIn]
) -> AckOut:
    await agents.heartbeat_of_agent(
        request.app.state.db,
        register.id,
        _instance(request),
        terminal=data.terminal,
        detail=data.detail,
        timing=_timing(request),
    )
    return AckOut(status="ok")


router = Router(
    path="/api/agent/v1",
    route_handlers=[next_command, command_claim, command_progress, command_result, agent_heartbeat],
    dependencies={"register": Provide(agent_register)},
    tags=["agente"],
    include_in_schema=True,
    exception_handlers={
        ValidationException: _on_validation,
        NotAuthorizedException: _on_unauthorized,
        CajaError: _on_caja_error,
        DBAPIError: _on_database_error,
        OSError: _on_database_error,
        HTTPException: _on_http_error,
    },
)

route_handlers = [router]
