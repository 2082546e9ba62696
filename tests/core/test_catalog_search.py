import pytest

from caja_core.catalog.service import search_text


@pytest.mark.parametrize(
    "parts,expected",
    [
        (("Jägermeister", "Tragos"), "jagermeister tragos"),
        (("Piña colada",), "pina colada"),
        (("  CERVEZA   Kunstmann ",), "cerveza kunstmann"),
        (("Café", "Cafetería"), "cafe cafeteria"),
    ],
)
def test_the_search_text_ignores_case_accents_and_spacing(parts, expected):
    assert search_text(*parts) == expected
