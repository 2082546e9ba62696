"""Input bounds at the edge (``caja_core.bounds``), for every route, before any handler parses a value:

* an integer path parameter outside 0 … 2^63−1 is a 404 (it names nothing);
* a query or form value that is a whole number of more than 18 digits is a 422 in Spanish (no field of
  ours holds one; passwords, PINs and badge codes are left to their own rules);
* a NUL character in a query or form value is a 422 (no text of ours holds one; PostgreSQL refuses it);
* a JSON body to the agent API or a webhook nested too deep, with an absurdly long number or with a NUL
  character (``\u0000``) in a string is a 400;
* a card number or track typed in any form field (but a secret or a device identifier) is masked
  (``caja_core.carddata``) before the handler reads it: it is never stored, logged or shown back.

So a huge id, a 5 000-digit number or a 20 000-deep array reaches neither a parser's recursion limit nor a
database integer: the person (or program) gets a clear 4xx and nothing is written."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar.enums import ScopeType
from litestar.exceptions import NotFoundException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from caja_core.bounds import JsonTooComplex, check_json, digits_too_long, id_in_range
from caja_core.carddata import scrub_text
from caja_core.errors import CajaError, ValidationFailed

#: Bodies this middleware reads whole to check them (larger ones are refused).
MAX_CHECKED_BODY = 2_000_000
#: Form fields with their own rules (secrets are never echoed nor judged as numbers).
SECRET_FIELDS = frozenset({"password", "secret", "pin", "authorization_pin", "badge", "supervisor_code"})
JSON_PATHS = ("/api/", "/webhooks/")
#: The offline sync answers ``{"error": <code>, "message": <Spanish text>}`` like its handler does.
OFFLINE_SYNC = "/caja/sin-conexion/"
#: Form fields never masked: secrets (never stored as typed, never shown) and device identifiers (a phone's
#: IMEI passes the Luhn check like a card number).
UNSCRUBBED_FIELDS = SECRET_FIELDS | {"identifier", "_csrf_token"}


class TooLarge(CajaError):
    status = 413
    code = "body.too_large"


def _check_pairs(pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        if "\x00" in value or "\x00" in name:  # no text of ours has one, and PostgreSQL refuses it
            raise ValidationFailed("El formulario trae caracteres no permitidos.", code="input.nul", field=name)
        if name not in SECRET_FIELDS and digits_too_long(value):
            raise ValidationFailed("Un número enviado es demasiado grande.", code="input.number_too_large", field=name)


class BoundsMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_path_pattern = ("^/static/",)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope.get("path", "")
        for value in (scope.get("path_params") or {}).values():
            if isinstance(value, int) and not isinstance(value, bool) and not id_in_range(value):
                if path.startswith("/api/"):  # the agent API authenticates first and bounds its own ids
                    continue
                raise NotFoundException()
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            _check_pairs(parse_qsl(query, keep_blank_values=True))
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await next_app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        is_json = path.startswith(JSON_PATHS) or content_type == b"application/json"
        is_form = content_type == b"application/x-www-form-urlencoded"
        if not (is_json or is_form):
            await next_app(scope, receive, send)
            return
        body, messages = await _read(receive)
        if is_json and body:
            try:
                check_json(body)
            except JsonTooComplex as exc:
                # Each JSON API answers in its own documented shape.
                if path.startswith("/webhooks/"):
                    reply = {"status": "rejected", "reason": exc.message}
                elif path.startswith(OFFLINE_SYNC):
                    reply = {"error": exc.code, "message": exc.message}
                else:
                    reply = {"error": exc.message, "code": exc.code}
                await _json_reply(send, 400, reply)
                return
        elif is_form and body:
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            _check_pairs(pairs)
            clean = [(name, value if name in UNSCRUBBED_FIELDS else scrub_text(value)) for name, value in pairs]
            if clean != pairs:  # a card number typed in a form is masked before anything reads it
                body = urlencode(clean).encode()
                messages = [{"type": "http.request", "body": body, "more_body": False}]
                scope = _with_length(scope, len(body))
        await next_app(scope, _replay(messages, receive), send)


def _with_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    new: Any = {**scope, "headers": headers}
    return new


async def _json_reply(send: Send, status: int, body: dict[str, str]) -> None:
    content = json.dumps(body, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    start: Any = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    body_event: Any = {"type": "http.response.body", "body": content}
    await send(body_event)


async def _read(receive: Receive) -> tuple[bytes, list[Any]]:
    chunks: list[bytes] = []
    messages: list[Any] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_CHECKED_BODY:
            raise TooLarge("La solicitud es demasiado grande.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replay(messages: list[Any], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
