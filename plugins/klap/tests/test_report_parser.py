"""KLAP sales report (CSV export) parser: good, duplicated, missing and malformed rows."""

from __future__ import annotations

from datetime import date, time

from caja_klap.report import parse_report as parse_klap_report

GOOD = (
    "Fecha;Hora;Monto;Código de autorización;Últimos 4 dígitos;Marca;Tipo;Estado\n"
    "27-11-2026;23:41;$12.500;A1B2C3;****4242;Visa;Débito;Aprobada\n"
    "28-11-2026;01:05:09;6.000;123456;1111;Mastercard;Crédito;Aprobada\n"
)


def test_good_report_with_spanish_headers_and_separators():
    parsed = parse_klap_report(GOOD.encode("utf-8"))
    assert parsed.ok and len(parsed.rows) == 2
    first, second = parsed.rows
    assert (first.line, first.day, first.local_time, first.amount) == (2, date(2026, 11, 27), time(23, 41), 12500)
    assert (first.authorization_code, first.last4, first.brand, first.card_type) == ("A1B2C3", "4242", "VISA", "debito")
    assert (second.amount, second.card_type, second.local_time) == (6000, "credito", time(1, 5, 9))
    assert parsed.columns["authorization_code"] == "Código de autorización"


def test_column_order_comma_delimiter_bom_and_windows_encoding():
    text = (
        "Reporte de ventas KLAP\n\n"
        "N° operación,Monto,Últimos 4,Cód. Autorización,Fecha y hora,Marca\n"
        '9001,"$1.500",4242,a1b2c3,2026-11-27 23:10,VISA\n'
        '9002,"12,000",0042,12345,27/11/2026 23:30,MASTERCARD\n'
    )
    for data in ("\ufeff" + text).encode("utf-8"), text.encode("cp1252"):
        parsed = parse_klap_report(data)
        assert parsed.ok, parsed.errors
        assert [(r.amount, r.authorization_code, r.last4, r.operation_id) for r in parsed.rows] == [
            (1500, "A1B2C3", "4242", "9001"),
            (12000, "012345", "0042", "9002"),
        ]
        assert parsed.rows[0].line == 4


def test_duplicated_rows_are_errors_naming_the_first_one():
    data = GOOD + "27-11-2026;23:41;12500;A1B2C3;4242;Visa;Débito;Aprobada\n"
    parsed = parse_klap_report(data.encode())
    assert not parsed.ok
    assert [(e.line, "fila 2" in e.message) for e in parsed.errors] == [(4, True)]


def test_missing_values_and_missing_columns():
    data = GOOD + "27-11-2026;23:50;;B1B2B3;;Visa;Débito;Aprobada\n"
    parsed = parse_klap_report(data.encode())
    assert [e.line for e in parsed.errors] == [4]
    assert "Monto" in parsed.errors[0].message and "Últimos 4 dígitos" in parsed.errors[0].message
    no_auth = parse_klap_report(b"Fecha;Monto;Marca\n27-11-2026;1000;Visa\n")
    assert not no_auth.ok and no_auth.rows == []
    assert "Código de autorización" in no_auth.errors[0].message and "Últimos 4" in no_auth.errors[0].message


def test_malformed_rows_say_which_and_why():
    data = (
        "Fecha;Monto;Código de autorización;Últimos 4 dígitos\n"
        "27-11-2026;12.5;A1B2C3;4242\n"  # decimals
        "31-02-2026;1000;A1B2C4;4242\n"  # no such date
        "27-11-2026;-500;A1B2C5;4242\n"  # negative
        "27-11-2026;1000;A1-B2;4242\n"  # auth code
        "27-11-2026;1000;A1B2C6;4111111111111111\n"  # full card number
        "ayer;1000;A1B2C7;4242\n"
        "27-11-2026;2000;A1B2C8;4242\n"
    )  # the only good one
    parsed = parse_klap_report(data.encode())
    by_line = {e.line: e.message for e in parsed.errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert "Monto" in by_line[2] and "inexistente" in by_line[3] and "negativo" in by_line[4]
    assert "autorización" in by_line[5] and "número completo" in by_line[6] and "Fecha" in by_line[7]
    assert "4111111111111111" not in repr(parsed)
    assert [r.line for r in parsed.rows] == [8]


def test_voided_rows_and_totals_are_skipped_not_errors():
    data = GOOD + ("27-11-2026;23:59;3.000;C1C2C3;5555;Visa;Débito;Anulada\nTotal;;$18.500;;;;;\n")
    parsed = parse_klap_report(data.encode())
    assert parsed.ok and len(parsed.rows) == 2
    assert [s.line for s in parsed.skipped] == [4, 5]


def test_garbage_and_empty_files():
    for data in (b"", b"\x00\x01\x02", b"hola\nmundo\n", "Fecha;Monto;Código de autorización;Últimos 4\n".encode()):
        parsed = parse_klap_report(data)
        assert not parsed.ok and parsed.rows == []
