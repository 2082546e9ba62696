"""No card data, anywhere: the one scrubber for everything that comes in from outside.

Terminals, agents, providers' webhooks, uploaded reports and people typing in forms can all hand us a full
card number or a card's magnetic track, by mistake or by design of a faulty device. Before any of that text is
stored, logged or shown again it goes through here:

* track data (track 1 ``%B…^NAME^…?``, track 2 ``;PAN=YYMM…?`` and its EMV form ``PAN D YYMM…``) is dropped;
* any run of 13 to 19 digits (spaces or dashes between them allowed) that passes the Luhn check is masked to
  its last four digits (``************4242``);
* in a structure, fields named like card data (``Track2Data``, ``CVV``, ``PinBlock``, ``PAN``…) are dropped
  whatever their value, and every other string or long integer is scrubbed as text.

Numbers that fail the Luhn check (tickets, operation numbers, amounts) are left alone.
"""

from __future__ import annotations

import re
from typing import Any

MASK_CHAR = "*"
TRACK_REMOVED = "[datos de pista eliminados]"

TRACK1 = re.compile(r"%?[Bb]\d{12,19}\^[^^\n]{0,60}\^[^?\s]{0,80}\??")
TRACK2 = re.compile(r";?\d{12,19}[=Dd]\d{4,40}[Ff]?\??")
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*(?![0-9])")

#: Field names (lower case, letters and digits only) whose values are card data whatever they look like.
_DROPPED_KEYS = frozenset(
    {
        "track",
        "track1",
        "track2",
        "track3",
        "trackdata",
        "track1data",
        "track2data",
        "track2equivalentdata",
        "magstripe",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "cid",
        "cardsecuritycode",
        "pin",
        "pinblock",
        "encryptedpinblock",
        "pan",
        "cardnumber",
        "numerotarjeta",
        "fullcardnumber",
        "primaryaccountnumber",
        "accountnumber",
    }
)


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (as every card number does)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)  # any Unicode digit: the logs' redactor checks what ``\d`` matches
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_run(match: re.Match[str]) -> str:
    """Mask the card numbers in a run of digit groups (``4111 1111 1111 1111``, ``ref-200-4111…``): any span
    of whole consecutive groups with 13–19 digits that passes Luhn, and any group of more than 19 digits (no
    number of ours is that long; a card number may hide inside)."""
    text = match.group(0)
    parts = re.split(r"([ -])", text)
    groups = parts[0::2]
    if sum(len(g) for g in groups) < 13:
        return text
    masked = [list(g) for g in groups]
    for i in range(len(groups)):
        if len(groups[i]) > 19:
            masked[i] = [MASK_CHAR] * (len(groups[i]) - 4) + list(groups[i][-4:])
            continue
        span = ""
        for j in range(i, len(groups)):
            span += groups[j]
            if len(span) > 19:
                break
            if len(span) >= 13 and luhn_ok(span):
                keep = 4  # the span's last four digits stay; every other digit of the span is masked
                for k in range(j, i - 1, -1):
                    for pos in range(len(groups[k]) - 1, -1, -1):
                        if keep:
                            keep -= 1
                        else:
                            masked[k][pos] = MASK_CHAR
    out = []
    for n, chars in enumerate(masked):
        out.append("".join(chars))
        if n < len(parts[1::2]):
            out.append(parts[1::2][n])
    return "".join(out)


def scrub_text(text: str) -> str:
    """``text`` without track data and with every card number masked to its last four digits."""
    if not text or not any(ch.isdigit() for ch in text):
        return text
    text = TRACK1.sub(TRACK_REMOVED, text)
    text = TRACK2.sub(TRACK_REMOVED, text)
    return _DIGIT_RUN.sub(_mask_run, text)


def _dropped(key: object) -> bool:
    return re.sub(r"[^a-z0-9]", "", str(key).lower()) in _DROPPED_KEYS


def scrub(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: dicts, lists, strings, numbers) fit to be stored and shown."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not _dropped(k)}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 13 <= len(str(abs(value))) <= 19:
        masked = scrub_text(str(value))
        return value if masked == str(value) else masked
    return value


def contains_card_data(text: str) -> bool:
    """Whether ``text`` still holds something ``scrub_text`` would remove (for checks and tests)."""
    return bool(text) and scrub_text(text) != text
