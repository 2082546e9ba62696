"""Money is whole Chilean pesos (CLP) in Python ints. Never floats."""

from __future__ import annotations

from .errors import ValidationFailed

#: The largest amount one sale, payment or cash movement may carry (CLP 50 million).
MAX_AMOUNT = 50_000_000

CURRENCY = "CLP"


def parse_amount(
    value: object,
    *,
    field: str = "amount",
    allow_zero: bool = False,
    maximum: int = MAX_AMOUNT,
    label: str = "El monto",
) -> int:
    """Validate and return an amount in whole CLP.

    Accepts ints and strings of digits (forms send strings; ``"12.500"`` and ``"$12.500"`` are accepted
    as es-CL thousands formatting). Rejects floats, decimals, negatives, zero (unless allowed) and absurdly
    large values with a Spanish message.
    """
    if isinstance(value, bool):
        raise ValidationFailed(f"{label} debe ser un número entero de pesos.", field=field)
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str):
        text = value.strip().replace("$", "").replace(" ", "")
        if text.count(".") and all(len(part) == 3 for part in text.split(".")[1:]) and text.split(".")[0]:
            text = text.replace(".", "")
        digits = text[1:] if text.startswith("-") else text
        if not text or not text.isascii() or not digits.isdigit():  # "²" and "٣" are digits too, not pesos
            raise ValidationFailed(f"{label} debe ser un número entero de pesos, sin decimales.", field=field)
        if len(text) > 15:
            raise ValidationFailed(f"{label} es demasiado grande.", field=field)
        amount = int(text)
    else:
        raise ValidationFailed(f"{label} debe ser un número entero de pesos, sin decimales.", field=field)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValidationFailed(f"{label} debe ser mayor que cero.", field=field)
    if amount > maximum:
        raise ValidationFailed(f"{label} supera el máximo permitido ({format_clp(maximum)}).", field=field)
    return amount


def format_clp(amount: int | None) -> str:
    """``12500`` → ``"$12.500"``; negatives as ``"-$1.000"``."""
    if amount is None:
        return "—"
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(int(amount)):,}".replace(",", ".")
