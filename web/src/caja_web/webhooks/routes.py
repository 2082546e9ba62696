"""``POST /webhooks/{provider_id}``: hands the raw request to the core's ``receive_webhook``.

No session, no CSRF (the provider authenticates each call; see ``verify_webhook``), no template: the reply is
the JSON the core decided, sent as soon as the core answers (well under the few seconds a provider waits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath

from caja_core.payments.webhooks import receive_webhook

#: Bodies larger than this are refused before reading them whole.
MAX_WEBHOOK_BYTES = 64_000


class WebhookAccepted(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


class WebhookRejected(msgspec.Struct, kw_only=True):
    status: Literal["rejected"]
    reason: str


class JsonError(msgspec.Struct, kw_only=True):
    error: str
    message: str


def _rejected(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=WebhookRejected, description=description)


WEBHOOK_RESPONSES = {
    202: ResponseSpec(
        data_container=WebhookAccepted, description="Aceptada; se aplica apenas responda la base de datos"
    ),
    400: _rejected("Notificación ilegible"),
    401: _rejected("No autenticada (firma o clave del proveedor ausente o inválida)"),
    404: _rejected("Proveedor, orden o referencia desconocidos"),
    409: _rejected("Rechazada: monto, referencia o estado no coinciden con el cobro"),
    413: ResponseSpec(data_container=JsonError, description=f"Cuerpo de más de {MAX_WEBHOOK_BYTES} bytes"),
}


@dataclass
class WebhookOperation(Operation):
    """The body is the provider's own JSON notice, read raw (its signature covers the exact bytes)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="La notificación del proveedor, tal como la envía (JSON).",
            content={"application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))},
        )


@post(
    "/webhooks/{provider_id:str}",
    request_max_body_size=MAX_WEBHOOK_BYTES,
    status_code=200,
    tags=["proveedores"],
    summary="Notificación de un proveedor de pago",
    description="Idempotente por orden: repetir la misma notificación responde 200 sin cambiar nada.",
    operation_class=WebhookOperation,
    responses=WEBHOOK_RESPONSES,
)
async def webhook(request: Request, provider_id: FromPath[str]) -> Response[WebhookAccepted]:
    body = await request.body()
    reply = await receive_webhook(
        request.app.state.db, request.app.state.registry, provider_id, dict(request.headers), body
    )
    return Response[Any](content=reply.body, status_code=reply.status_code, media_type="application/json")


route_handlers = [webhook]
