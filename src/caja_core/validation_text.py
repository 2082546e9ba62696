"""msgspec's validation messages (English, for programmers) in Spanish, for the people who read them: a cashier's
device, an admin's form, a script calling a JSON endpoint."""

from __future__ import annotations

import re
from collections.abc import Mapping

_KINDS = {
    "int": "un número entero",
    "float": "un número",
    "str": "texto",
    "array": "una lista",
    "object": "un objeto JSON",
    "bool": "verdadero o falso",
    "null": "vacío (null)",
}
_COMPARISONS = {">=": "mayor o igual a", "<=": "menor o igual a", ">": "mayor que", "<": "menor que"}
_ITEMS = {
    "sales": "venta",
    "lines": "línea",
    "modifier_ids": "modificador",
    "triggers": "motivo",
    "offline_methods": "medio",
}


def _kind(name: str) -> str:
    return " o ".join(_KINDS.get(part.strip(), part.strip()) for part in name.split("|"))


def _where(path: str, titles: Mapping[str, str] | None = None) -> str:
    """``$.sales[0].lines[1].quantity`` as «venta 1, línea 2, campo «quantity»» (a field by its title when
    ``titles`` has one)."""
    parts: list[str] = []
    for name, index in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?", path):
        if index:
            parts.append(f"{_ITEMS.get(name, name)} {int(index) + 1}")
        else:
            parts.append(f"campo «{(titles or {}).get(name, name)}»")
    return ", ".join(parts)


def spanish_validation(message: str, titles: Mapping[str, str] | None = None) -> str:
    """A msgspec validation message (English, for programmers) in Spanish, with where it happened (``titles``:
    the names people know the fields by, e.g. a provider's settings titles)."""
    text, _, path = message.partition(" - at `")
    where = _where(path.rstrip("`"), titles)
    found = re.match(r"Expected `([^`]*)`, got `([^`]*)`", text)
    if found:
        what = f"debe ser {_kind(found.group(1))}"
    elif found := re.match(r"Expected `([^`]*)` of length (<=|>=) (\d+)", text):
        unit = "caracteres" if found.group(1) == "str" else "elementos"
        bound = "como máximo" if found.group(2) == "<=" else "al menos"
        what = f"admite {bound} {found.group(3)} {unit}"
    elif found := re.match(r"Expected `([^`]*)` (>=|<=|>|<) (-?\d+)", text):
        what = f"debe ser {_COMPARISONS[found.group(2)]} {found.group(3)}"
    elif found := re.match(r"Object missing required field `([^`]*)`", text):
        what = f"falta el campo «{found.group(1)}»"
    elif found := re.match(r"Object contains unknown field `([^`]*)`", text):
        what = f"el campo «{found.group(1)}» no existe"
    elif text.startswith("Invalid enum value"):
        what = "valor no permitido"
    else:
        what = "valor no válido"
    return f"{where}: {what}" if where else what
