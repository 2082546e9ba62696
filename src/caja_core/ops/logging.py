"""Structured logs: one JSON object per line, with the request, venue, register and attempt in context, and
never a card number, track data, CVV, PIN or secret.

``configure_logging(settings)`` installs one handler on the root logger (JSON or text per
``CAJA_LOG_FORMAT``) with :class:`RedactingFilter`, which masks:

* digit runs of 13–19 digits (spaces or dashes allowed) that pass the Luhn check: ``****1111``;
* track data (``%B…^…?`` and ``;PAN=…?``);
* values of keys that look like card or secret fields (cvv, cvc, pin, pin_block, track, pan, password,
  secret, token, api_key, authorization…), in ``key=value`` and JSON forms, and in ``extra`` fields;
* ``Bearer`` tokens, passwords in URLs, and the configured secrets themselves (secret key, metrics token,
  database password) wherever they appear.

Context: ``with log_context(request_id=..., venue_id=..., register_id=..., attempt_id=...)`` (contextvars,
so it follows asyncio tasks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from ..carddata import TRACK1, TRACK2, luhn_ok, scrub_text

REQUEST_ID: ContextVar[str | None] = ContextVar("caja_request_id", default=None)
VENUE_ID: ContextVar[int | None] = ContextVar("caja_venue_id", default=None)
REGISTER_ID: ContextVar[int | None] = ContextVar("caja_register_id", default=None)
ATTEMPT_ID: ContextVar[int | None] = ContextVar("caja_attempt_id", default=None)
_CONTEXT: dict[str, ContextVar[Any]] = {
    "request_id": REQUEST_ID,
    "venue_id": VENUE_ID,
    "register_id": REGISTER_ID,
    "attempt_id": ATTEMPT_ID,
}

MASK = "***"
#: Card fields, masked whatever their value looks like.
CARD_KEYS = (
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "cid",
    "pin",
    "pin_block",
    "pinblock",
    "track",
    "track1",
    "track2",
    "track_data",
    "pan",
    "card_number",
    "cardnumber",
    "numero_tarjeta",
)
#: Secret fields: any key ending in one of these (``signing_secret``, ``agentToken``, ``db_password``…).
SECRET_SUFFIXES = (
    "secret",
    "password",
    "passwd",
    "contrasena",
    "contraseña",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "credentials",
)
SENSITIVE_KEYS = CARD_KEYS + SECRET_SUFFIXES
_CARD_ALT = "|".join(sorted((re.escape(k) for k in CARD_KEYS), key=len, reverse=True))
_SECRET_ALT = "|".join(sorted((re.escape(k) for k in SECRET_SUFFIXES), key=len, reverse=True))
_KEY_ALT = rf"(?:{_CARD_ALT})|\w*?(?:{_SECRET_ALT})"
# (quotes may come escaped, as in JSON logged inside JSON)
_KV = re.compile(
    rf"""(?P<key>\\*["']?\b(?:{_KEY_ALT})\b\\*["']?)(?P<sep>\s*[=:]\s*)"""
    r"""(?:(?P<q>\\*["'])(?P<quoted>.*?)(?P=q)|(?P<bare>[^\s,;&}\])"'\\]+))""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)", re.IGNORECASE)
_DIGITS = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
#: Extra fields some libraries add that are not data (uvicorn's ANSI-coloured copy of the message).
_DROPPED_EXTRAS = {"color_message"}


def _mask_pan(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return "****" + digits[-4:]
    return text


class Redactor:
    """Masks card data and secrets in text. ``secrets`` are literal values masked wherever they appear."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets: list[str] = []
        for secret in secrets or []:
            self.add_secret(secret)

    def add_secret(self, value: str | None) -> None:
        if value and len(value) >= 6 and value not in self.secrets:
            self.secrets.append(value)
            self.secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        # Tracks as the stored records' scrubber knows them (caja_core.carddata), so a log line never keeps
        # what the database refuses to keep.
        text = TRACK1.sub(MASK, text)
        text = TRACK2.sub(MASK, text)
        text = _URL_PASSWORD.sub(lambda m: f"{m['pre']}{MASK}{m['at']}", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
        text = _KV.sub(self._mask_kv, text)
        # Then the scrubber's own pass: card numbers inside longer digit runs.
        return scrub_text(_DIGITS.sub(_mask_pan, text))

    @staticmethod
    def _mask_kv(match: re.Match[str]) -> str:
        quote = match["q"] or ""
        return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"

    def value(self, key: str, value: Any) -> Any:
        """Mask a structured value (an ``extra`` field): by key name, then recursively by content."""
        if _is_sensitive_key(key):
            return MASK
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value("", v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 13:
            return self(str(value))
        return value


def _is_sensitive_key(key: str) -> bool:
    key = key.lower().replace("-", "_")
    return key in CARD_KEYS or key.endswith(SECRET_SUFFIXES)


#: The process-wide redactor; ``configure_logging`` adds the configured secrets to it.
REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Renders the message, masks it and every extra field; attaches the logging context."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
            record.exc_info = None
        for key in _DROPPED_EXTRAS & set(vars(record)):
            delattr(record, key)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                setattr(record, key, self.redactor.value(key, value))
        for name, var in _CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str = "") -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if self.instance:
            data["instance"] = self.instance
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in _CONTEXT and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in _CONTEXT if getattr(record, name, None) is not None
        )
        return f"{line} [{context}]" if context else line


_HANDLER_NAME = "caja"


def configure_logging(settings: Any, *, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr by default) as JSON (or text), masked.

    Safe to call again: the previous caja handler is replaced. Returns the handler.
    """
    REDACTOR.add_secret(getattr(settings, "secret_key", None))
    REDACTOR.add_secret(getattr(settings, "metrics_token", None))
    REDACTOR.add_secret(getattr(settings, "metrics_token_previous", None))
    for url in (getattr(settings, "database_url", None), getattr(settings, "redis_url", None)):
        match = _URL_PASSWORD.search(url or "")
        if match:
            REDACTOR.add_secret(match["pw"])
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RedactingFilter(REDACTOR))
    if getattr(settings, "log_format", "json") == "text":
        handler.setFormatter(TextFormatter())
    else:
        handler.setFormatter(JsonFormatter(instance=getattr(settings, "instance_id", "") or ""))
    root = logging.getLogger()
    for existing in list(root.handlers):
        # Ours from an earlier call, and the plain-text handler that a library's ``logging.basicConfig()``
        # installs at import (python-escpos does): every line goes out once, as JSON.
        if existing.get_name() == _HANDLER_NAME or type(existing) is logging.StreamHandler:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(str(getattr(settings, "log_level", "INFO")).upper())
    # Server loggers propagate to ours (one format, one filter).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Alembic narrates every migration step at INFO; caja's commands say what they did in one line.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    return handler


@contextlib.contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Attach ``request_id``, ``venue_id``, ``register_id`` and/or ``attempt_id`` to the logs inside."""
    tokens = []
    for name, value in values.items():
        var = _CONTEXT.get(name)
        if var is None:
            raise TypeError(f"unknown log context field: {name}")
        tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind(**values: Any) -> None:
    """Set context fields for the rest of the current task (e.g. the attempt id once it is known)."""
    for name, value in values.items():
        _CONTEXT[name].set(value)
