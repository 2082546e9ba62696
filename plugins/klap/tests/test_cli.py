"""``caja klap check-report``: a supervisor can check a KLAP export before uploading it."""

from __future__ import annotations

from click.testing import CliRunner

from caja_klap.cli import klap


def test_check_report_lists_rows_and_errors(tmp_path):
    good = tmp_path / "bueno.csv"
    good.write_text(
        "Fecha;Monto;Código de autorización;Últimos 4 dígitos;Estado\n"
        "27-11-2026;$12.500;A1B2C3;****4242;Aprobada\n"
        "27-11-2026;$3.000;A1B2C4;****4242;Anulada\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(klap, ["check-report", str(good)])
    assert result.exit_code == 0
    assert "Ventas aprobadas: 1 por $12.500" in result.output and "omitida fila 3" in result.output
    bad = tmp_path / "malo.csv"
    bad.write_text(
        "Fecha;Monto;Código de autorización;Últimos 4 dígitos\n27-11-2026;12,5;A1B2C3;4242\n", encoding="utf-8"
    )
    result = CliRunner().invoke(klap, ["check-report", str(bad)])
    assert result.exit_code == 2 and "ERROR fila 2" in result.output
