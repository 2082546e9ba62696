"""KLAP's sales report (the CSV export of the KLAP portal), read for caja's end-of-night verification.

``parse_report(data)`` reads the CSV tolerantly and returns the clean rows and, for every bad row, its line
number and why; the core applies nothing from a report with errors. ``report_matches(row, attempt)`` is KLAP's
matching rule: the authorization code, the amount and the last 4 digits the cashier confirmed are the row's.

Accepted columns (any order; headers are matched without case, accents or punctuation; ``;``, ``,`` or tab
delimited; UTF-8 with or without BOM, or Windows-1252; title lines above the header are skipped):

======================  =========================================================================  ========
column                  accepted headers                                                           required
======================  =========================================================================  ========
date (and time)         Fecha, Fecha venta, Fecha transacción, Fecha y hora, Fecha operación, Date  yes
time                    Hora, Hora venta, Hora transacción, Time                                    no
amount                  Monto, Monto venta, Monto total, Monto transacción, Total, Importe, Amount  yes
authorization code      Código de autorización, Código autorización, Cód. autorización,             yes
                        Autorización, N° autorización, Authorization code
last 4 digits           Últimos 4 dígitos, Últimos 4, 4 últimos dígitos, Tarjeta, N° tarjeta,       yes
                        Last4, Last digits
brand                   Marca, Marca tarjeta, Brand                                                 no
card type               Tipo, Tipo de tarjeta, Tipo tarjeta, Card type                             no
status                  Estado, Estado transacción, Status                                          no
operation number        N° operación, Número de operación, ID transacción, ID operación, ID         no
======================  =========================================================================  ========

Values: dates ``dd-mm-yyyy``, ``dd/mm/yyyy`` or ``yyyy-mm-dd`` with an optional ``HH:MM[:SS]`` (venue local
time); amounts in whole pesos with optional ``$`` and ``.`` (or ``,``) thousands separators (``$12.500``,
``12500``, ``12.500,00``); authorization codes of 6 letters/digits (digit-only codes shortened by a
spreadsheet get their leading zeros back); card numbers masked (``****1234``) or just the 4 digits. A
cell with a full card number is refused and never stored. Rows whose status is not approved (Anulada,
Rechazada, …) and total lines are skipped and listed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from datetime import date, time
from typing import Any

from caja_core.money import MAX_AMOUNT, format_clp
from caja_core.payments.verification import MAX_REPORT_BYTES, ManualAttemptOut, ReportParse, ReportRow, RowError

MAX_REPORT_ROWS = 50_000

_ALIASES: dict[str, tuple[str, ...]] = {
    "date": (
        "fecha",
        "fecha venta",
        "fecha de venta",
        "fecha transaccion",
        "fecha de transaccion",
        "fecha y hora",
        "fecha hora",
        "fecha operacion",
        "fecha de operacion",
        "date",
        "fecha pago",
    ),
    "time": ("hora", "hora venta", "hora de venta", "hora transaccion", "hora de transaccion", "time"),
    "amount": (
        "monto",
        "monto venta",
        "monto de venta",
        "monto total",
        "monto transaccion",
        "monto de transaccion",
        "total",
        "importe",
        "amount",
        "monto clp",
        "monto $",
        "monto pagado",
    ),
    "authorization_code": (
        "codigo de autorizacion",
        "codigo autorizacion",
        "cod autorizacion",
        "cod de autorizacion",
        "autorizacion",
        "n autorizacion",
        "no autorizacion",
        "numero de autorizacion",
        "codigo aut",
        "authorization code",
        "auth code",
        "authorization_code",
    ),
    "last4": (
        "ultimos 4 digitos",
        "ultimos 4",
        "ultimos cuatro digitos",
        "4 ultimos digitos",
        "tarjeta",
        "n tarjeta",
        "numero de tarjeta",
        "numero tarjeta",
        "last4",
        "last 4",
        "last digits",
        "last_digits",
        "ultimos digitos",
    ),
    "brand": ("marca", "marca tarjeta", "marca de tarjeta", "brand"),
    "card_type": ("tipo", "tipo de tarjeta", "tipo tarjeta", "card type", "card_type", "tipo de pago"),
    "status": ("estado", "estado transaccion", "estado de la transaccion", "status"),
    "operation_id": (
        "n operacion",
        "no operacion",
        "numero de operacion",
        "numero operacion",
        "id transaccion",
        "id operacion",
        "id",
        "operacion",
    ),
}
REQUIRED = ("date", "amount", "authorization_code", "last4")
LABELS = {
    "date": "Fecha",
    "time": "Hora",
    "amount": "Monto",
    "authorization_code": "Código de autorización",
    "last4": "Últimos 4 dígitos",
    "brand": "Marca",
    "card_type": "Tipo",
    "status": "Estado",
    "operation_id": "N° operación",
}
APPROVED_STATUSES = {
    "",
    "aprobada",
    "aprobado",
    "approved",
    "exitosa",
    "exitoso",
    "pagada",
    "pagado",
    "ok",
    "autorizada",
    "autorizado",
    "completada",
    "completed",
}

_DATE_RE = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{2}|\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_ISO_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_AUTH_RE = re.compile(r"^[A-Z0-9]{6}$")


def _key(row: ReportRow) -> tuple[str, int, str]:
    return (row.authorization_code or "", row.amount, row.last4 or "")


def _norm(header: str) -> str:
    text = unicodedata.normalize("NFKD", header.replace("\ufeff", "")).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9$_]+", " ", text.lower()).split())


_LOOKUP = {alias: column for column, aliases in _ALIASES.items() for alias in aliases}


def _columns(header: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, cell in enumerate(header):
        column = _LOOKUP.get(_norm(cell))
        if column and column not in found:
            found[column] = index
    return found


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_amount_cell(raw: str) -> int:
    text = raw.replace("$", "").replace("\xa0", "").replace(" ", "").strip()
    if text.startswith("-"):
        raise ValueError("el monto es negativo")
    if re.fullmatch(r"\d{1,3}(\.\d{3})+(,0{1,2})?", text):
        value = int(text.split(",")[0].replace(".", ""))
    elif re.fullmatch(r"\d{1,3}(,\d{3})+(\.0{1,2})?", text):
        value = int(text.split(".")[0].replace(",", ""))
    elif re.fullmatch(r"\d+([.,]0{1,2})?", text):
        value = int(re.split(r"[.,]", text)[0])
    else:
        raise ValueError(f"monto ilegible ({raw.strip()[:20]!r}); se espera un entero de pesos como $12.500")
    if value <= 0:
        raise ValueError("el monto debe ser mayor que cero")
    if value > MAX_AMOUNT:
        raise ValueError(f"el monto supera el máximo ({format_clp(MAX_AMOUNT)})")
    return value


def _parse_date(raw: str) -> tuple[date, time | None]:
    text = raw.strip()
    m = _DATE_RE.match(text)
    if m:
        d, mo, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        y = y + 2000 if y < 100 else y
        hh, mm, ss = m.group(4), m.group(5), m.group(6)
    else:
        m = _ISO_RE.match(text)
        if not m:
            raise ValueError(f"fecha ilegible ({text[:25]!r}); se espera dd-mm-aaaa o aaaa-mm-dd")
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        hh, mm, ss = m.group(4), m.group(5), m.group(6)
    try:
        day = date(y, mo, d)
        at = time(int(hh), int(mm), int(ss or 0)) if hh is not None else None
    except ValueError:
        raise ValueError(f"fecha inexistente ({text[:25]!r})") from None
    return day, at


def _parse_time(raw: str) -> time:
    m = _TIME_RE.match(raw.strip())
    if not m:
        raise ValueError(f"hora ilegible ({raw.strip()[:10]!r}); se espera HH:MM")
    try:
        return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    except ValueError:
        raise ValueError(f"hora inexistente ({raw.strip()[:10]!r})") from None


def normalise_authorization_code(raw: str) -> str:
    code = re.sub(r"\s+", "", raw or "").upper()
    if code.isdigit() and 0 < len(code) < 6:
        code = code.zfill(6)  # a spreadsheet dropped the leading zeros
    if not _AUTH_RE.match(code):
        raise ValueError("el código de autorización debe tener 6 letras o dígitos")
    return code


def normalise_last4(raw: str) -> str:
    text = (raw or "").strip()
    if re.search(r"\d{13,}", re.sub(r"[\s-]", "", text)):
        raise ValueError(
            "la columna de tarjeta trae un número completo: exporte el reporte con la tarjeta "
            "enmascarada (solo los últimos 4 dígitos)"
        )
    if text.isdigit() and 0 < len(text) < 4:
        return text.zfill(4)
    m = re.search(r"(\d{4})\D*$", text)
    if not m:
        raise ValueError("faltan los últimos 4 dígitos de la tarjeta")
    return m.group(1)


def _card_type(raw: str) -> str | None:
    text = _norm(raw)
    if not text:
        return None
    if text.startswith(("deb", "db")) or text in ("debit", "redcompra"):
        return "debito"
    if text.startswith(("cred", "cr")) or text == "credit":
        return "credito"
    if text.startswith("prep"):
        return "prepago"
    return text[:20]


def parse_report(data: bytes) -> ReportParse:
    """Read KLAP's sales report export. Never raises for bad content: problems come back as ``errors``."""
    if len(data) > MAX_REPORT_BYTES:
        return ReportParse(
            rows=[],
            errors=[RowError(line=0, message=f"El archivo supera {MAX_REPORT_BYTES // 1_000_000} MB.")],
            skipped=[],
            columns={},
        )
    text = _decode(data)
    lines = text.splitlines()
    header_index, columns, delimiter = None, {}, ","
    for index, header_line in enumerate(lines[:15]):
        if not header_line.strip():
            continue
        delim = max((";", ",", "\t"), key=header_line.count)
        cells = next(csv.reader([header_line], delimiter=delim))
        found = _columns(cells)
        if all(c in found for c in REQUIRED):
            header_index, columns, delimiter = index, found, delim
            header_cells = cells
            break
    if header_index is None:
        first = next((line for line in lines if line.strip()), "")
        delim = max((";", ",", "\t"), key=first.count)
        found = _columns(next(csv.reader([first], delimiter=delim))) if first else {}
        missing = [LABELS[c] for c in REQUIRED if c not in found]
        return ReportParse(
            rows=[],
            errors=[
                RowError(
                    line=1,
                    message="No se encontró la fila de encabezados. Faltan las columnas: "
                    + ", ".join(missing)
                    + ". Columnas aceptadas: Fecha, Monto, Código de autorización, Últimos 4 dígitos (y opcionales Hora, "
                    "Marca, Tipo, Estado, N° operación).",
                )
            ],
            skipped=[],
            columns={},
        )

    reader = csv.reader(io.StringIO("\n".join(lines[header_index + 1 :])), delimiter=delimiter)
    rows: list[ReportRow] = []
    errors: list[RowError] = []
    skipped: list[RowError] = []
    seen: dict[tuple[str, int, str], int] = {}
    for cells in reader:
        line = header_index + 1 + reader.line_num
        if len(rows) + len(errors) + len(skipped) >= MAX_REPORT_ROWS:
            errors.append(RowError(line=line, message=f"El reporte supera {MAX_REPORT_ROWS} filas."))
            break
        if not any(c.strip() for c in cells):
            continue

        def cell(column: str, cells: list[str] = cells) -> str:
            index = columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        if _norm(cells[0]).startswith("total") or _norm(cell("date")).startswith("total"):
            skipped.append(RowError(line=line, message="Fila de totales."))
            continue
        status = _norm(cell("status"))
        if status not in APPROVED_STATUSES:
            skipped.append(RowError(line=line, message=f"Transacción no aprobada ({cell('status')[:30]})."))
            continue
        problems: list[str] = []
        missing = [LABELS[c] for c in REQUIRED if not cell(c)]
        if missing:
            problems.append("falta " + ", ".join(missing))
        values: dict[str, Any] = {}
        for column, parse in (
            ("date", _parse_date),
            ("amount", parse_amount_cell),
            ("authorization_code", normalise_authorization_code),
            ("last4", normalise_last4),
        ):
            if cell(column):
                try:
                    values[column] = parse(cell(column))
                except ValueError as exc:
                    problems.append(f"{LABELS[column]}: {exc}")
        day_time = values.get("date")
        local_time = day_time[1] if day_time else None
        if cell("time") and day_time:
            try:
                local_time = _parse_time(cell("time"))
            except ValueError as exc:
                problems.append(f"Hora: {exc}")
        if problems:
            errors.append(RowError(line=line, message="; ".join(problems)))
            continue
        row = ReportRow(
            line=line,
            day=values["date"][0],
            local_time=local_time,
            amount=values["amount"],
            authorization_code=values["authorization_code"],
            last4=values["last4"],
            brand=cell("brand").upper()[:20] or None,
            card_type=_card_type(cell("card_type")),
            operation_id=cell("operation_id")[:40] or None,
        )
        if _key(row) in seen:
            errors.append(
                RowError(
                    line=line,
                    message=f"Fila duplicada: igual a la fila {seen[_key(row)]} "
                    f"(autorización {row.authorization_code}, "
                    f"{format_clp(row.amount)}, ****{row.last4}).",
                )
            )
            continue
        seen[_key(row)] = line
        rows.append(row)
    if not rows and not errors:
        errors.append(RowError(line=header_index + 1, message="El reporte no tiene ventas aprobadas."))
    return ReportParse(
        rows=rows, errors=errors, skipped=skipped, columns={c: header_cells[i].strip() for c, i in columns.items()}
    )


def report_matches(row: ReportRow, attempt: ManualAttemptOut) -> bool:
    """A report row is the payment the cashier confirmed when its authorization code, amount and last 4 digits
    are the ones she typed."""
    return (
        row.authorization_code == (attempt.authorization_code or "").upper()
        and row.amount == attempt.amount
        and row.last4 == attempt.last4
    )
