"""Bounds for input that comes from outside, checked before anything parses it.

* Identifiers and counts fit a database integer: at most 18 decimal digits (every such number is below
  2^63), ASCII digits only (``"²"`` and ``"٣"`` pass ``str.isdigit`` but are no number of ours).
* JSON from providers and agents is at most ``MAX_JSON_DEPTH`` levels deep, has no number longer than
  ``MAX_JSON_NUMBER`` characters and no NUL character: a 20 000-deep array would exhaust the parser's
  recursion and a 5 000-digit integer its conversion limit, both before any schema could refuse them, and
  PostgreSQL refuses a NUL in text.

The web layer applies these to every path, query string, form and JSON body; services keep their own, more
specific checks (amounts, PINs, lengths).
"""

from __future__ import annotations

from .errors import ValidationFailed

MAX_ID = 2**63 - 1
MAX_DIGITS = 18
MAX_JSON_DEPTH = 32
MAX_JSON_NUMBER = 40

_NUMBER_CHARS = frozenset(b"0123456789+-.eE")


class JsonTooComplex(ValidationFailed):
    """A JSON body no sender of ours would build: refused as malformed (400)."""

    status = 400
    code = "json.too_complex"


def digits_too_long(value: str) -> bool:
    """A value that is a whole number (optionally signed, spaces around) with more digits than any of ours."""
    text = value.strip()
    if text[:1] in ("+", "-"):
        text = text[1:]
    return len(text) > MAX_DIGITS and text.isascii() and text.isdigit()


def id_in_range(value: int) -> bool:
    return 0 <= value <= MAX_ID


def check_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_number: int = MAX_JSON_NUMBER) -> None:
    """Refuse JSON nested deeper than ``max_depth`` or with a number longer than ``max_number`` characters,
    scanning the bytes once (strings and their escapes are skipped)."""
    if b"\\u0000" in body:
        raise JsonTooComplex("El JSON trae un carácter nulo (\\u0000).")
    depth = 0
    number = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
            continue
        if byte in _NUMBER_CHARS:
            number += 1
            if number > max_number:
                raise JsonTooComplex("El JSON trae un número demasiado largo.")
            continue
        number = 0
        if byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                raise JsonTooComplex("El JSON está anidado demasiado profundo.")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
