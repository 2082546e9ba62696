"""What a password, a PIN and a badge code must be. Pure functions; Spanish errors."""

from __future__ import annotations

import itertools
import re

from ..errors import ValidationFailed

MIN_PASSWORD = 10
MAX_PASSWORD = 200
DEFAULT_PIN_LENGTH = 6
PIN_LENGTHS = range(6, 9)  # a venue may ask for 6, 7 or 8 digits
MIN_BADGE = 8
MAX_BADGE = 64

_COMMON_PASSWORDS = {
    "password",
    "password1",
    "password123",
    "contrasena",
    "contraseña",
    "qwertyuiop",
    "1q2w3e4r5t",
    "administrador",
    "supervisor",
    "iloveyou12",
}
#: PINs people pick first, beyond the patterns ``trivial_pin`` recognises.
_COMMON_PINS = {"112233", "159753", "147258", "258369", "102030", "123321", "111222", "696969", "520520", "131313"}


def _ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def trivial_pin(pin: str) -> bool:
    """All one digit, a run up or down (wrapping 9→0), a repeated block of 1–3 digits, or a common PIN."""
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    if len(steps) == 1 and steps <= {0, 1, 9}:
        return True
    for size in (1, 2, 3):
        if (pin[:size] * len(pin))[: len(pin)] == pin:
            return True
    return pin in _COMMON_PINS


def check_pin(pin: str | None, *, length: int = DEFAULT_PIN_LENGTH, field: str = "secret") -> str:
    pin = (pin or "").strip()
    if len(pin) != length or not _ascii_digits(pin):
        raise ValidationFailed(f"El PIN debe tener exactamente {length} dígitos.", field=field)
    if trivial_pin(pin):
        raise ValidationFailed(
            "Ese PIN es demasiado fácil de adivinar (repetido, correlativo o muy común). Elija otro.", field=field
        )
    return pin


def check_password(password: str | None, *, username: str = "", field: str = "secret") -> str:
    password = password or ""
    if len(password) > MAX_PASSWORD:
        raise ValidationFailed("La contraseña es demasiado larga.", field=field)
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"La contraseña debe tener al menos {MIN_PASSWORD} caracteres.", field=field)
    lowered = password.lower()
    if password.isdigit() or len(set(password)) < 4 or lowered in _COMMON_PASSWORDS:
        raise ValidationFailed(
            "La contraseña es demasiado fácil de adivinar: use letras y números o una frase.", field=field
        )
    if username and lowered in (username.lower(), username.lower() * 2):
        raise ValidationFailed("La contraseña no puede ser el nombre de usuario.", field=field)
    if any(ord(ch) < 32 for ch in password):
        raise ValidationFailed("La contraseña no puede tener caracteres de control.", field=field)
    return password


def check_badge(code: str | None, *, field: str = "badge") -> str:
    code = (code or "").strip()
    if not MIN_BADGE <= len(code) <= MAX_BADGE or not re.fullmatch(r"[A-Za-z0-9]+", code):
        raise ValidationFailed(
            f"El código de tarjeta debe tener entre {MIN_BADGE} y {MAX_BADGE} letras o números.", field=field
        )
    if len(set(code)) < 3:
        raise ValidationFailed("Ese código de tarjeta es demasiado simple.", field=field)
    return code
