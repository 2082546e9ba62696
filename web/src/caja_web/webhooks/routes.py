"""``POST /webhooks/{provider_id}``: hands the raw request to the core's ``receive_webhook``.

No session, no CSRF (the provider authenticates each call; see ``verify_webhook``), no template: the reply is
the JSON the core decided, sent as soon as the core answers (well under KLAP's 10 s)."""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.params import FromPath

from caja_core.payments.webhooks import receive_webhook

#: Bodies larger than this are refused before reading them whole.
MAX_WEBHOOK_BYTES = 64_000


@post("/webhooks/{provider_id:str}", include_in_schema=False, request_max_body_size=MAX_WEBHOOK_BYTES,
      status_code=200)
async def webhook(request: Request, provider_id: FromPath[str]) -> Response:
    body = await request.body()
    reply = await receive_webhook(request.app.state.db, request.app.state.registry, provider_id,
                                  dict(request.headers), body)
    return Response(content=reply.body, status_code=reply.status_code, media_type="application/json")


route_handlers = [webhook]
