"""CSRF tokens bound to the browser session: Litestar's double-submit check (the token in the form or the
``x-csrftoken`` header must equal the ``caja_csrf`` cookie), with the token signed together with the session
id. A token obtained in one session (or planted as a cookie by another site) is refused in any other session;
when a response changes the session (login, logout, a user no longer valid) it carries a new token for it."""

from __future__ import annotations

from secrets import compare_digest
from typing import Any

from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.csrf import CSRF_SECRET_LENGTH, CSRFMiddleware, generate_csrf_hash, generate_csrf_token
from litestar.types import Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from .stores import session_id_after_response, session_id_of_request


class SessionBoundCSRFMiddleware(CSRFMiddleware):
    def _secret(self, session_id: str) -> str:
        return f"{self.config.secret}:{session_id}"

    def _token_value(self, token: str, session_id: str) -> str | None:
        """The random part of ``token`` when its signature is valid for ``session_id``."""
        if len(token) < CSRF_SECRET_LENGTH + 1:
            return None
        value, signature = token[:CSRF_SECRET_LENGTH], token[CSRF_SECRET_LENGTH:]
        expected = generate_csrf_hash(token=value, secret=self._secret(session_id))
        return value if compare_digest(signature, expected) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or should_bypass_middleware(
            scope=scope,
            scopes=self.scopes,
            exclude_opt_key=self.config.exclude_from_csrf_key,
            exclude_path_pattern=self.exclude,
        ):
            await self.app(scope, receive, send)
            return
        request: Any = scope["litestar_app"].request_class(scope=scope, receive=receive)
        session_id = session_id_of_request(request.cookies)
        cookie = request.cookies.get(self.config.cookie_name)
        if cookie is not None and self._token_value(cookie, session_id) is None:
            cookie = None  # a token of another session (or not ours): replaced on a page, refused on a form
        state = ScopeState.from_scope(scope)
        if request.method in self.config.safe_methods:
            token = state.csrf_token = cookie or generate_csrf_token(secret=self._secret(session_id))
            await self.app(scope, receive, self._send(scope, send, session_id, None if cookie else token))
            return
        sent = request.headers.get(self.config.header_name)
        content_type, _ = request.content_type
        if not sent and content_type in {RequestEncodingType.URL_ENCODED, RequestEncodingType.MULTI_PART}:
            sent = (await request.form()).get("_csrf_token")
        sent_value = self._token_value(sent, session_id) if isinstance(sent, str) else None
        cookie_value = self._token_value(cookie, session_id) if cookie else None
        if sent_value is None or cookie_value is None or not compare_digest(sent_value, cookie_value):
            raise PermissionDeniedException("CSRF token verification failed")
        state.csrf_token = sent
        await self.app(scope, receive, self._send(scope, send, session_id, None))

    def _send(self, scope: Scope, send: Send, session_id: str, new_token: str | None) -> Send:
        """Sets the cookie of a new token, or of a token for the session the response leaves behind."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                after = session_id_after_response(scope, session_id)
                token = generate_csrf_token(secret=self._secret(after)) if after != session_id else new_token
                if token is not None:
                    message.setdefault("headers", [])
                    self._set_cookie_if_needed(message=message, token=token)
            await send(message)

        return wrapped
