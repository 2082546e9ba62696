"""The card-data scrubber: track data dropped, Luhn-valid numbers masked to their last four digits, card
fields dropped from structures; everything else untouched."""

from caja_core.carddata import contains_card_data, scrub, scrub_text


def test_card_numbers_are_masked_in_any_spelling():
    assert scrub_text("Aprobado 4111111111111111") == "Aprobado ************1111"
    assert scrub_text("5555-5555-5555-4444 ok") == "****-****-****-4444 ok"
    assert scrub_text("amex 3782 822463 10005.") == "amex **** ****** *0005."
    assert scrub_text("tarjeta:6011111111111117,") == "tarjeta:************1117,"


def test_track_data_is_dropped():
    for track in (";4111111111111111=25121010000012345678?", "%B5555555555554444^PEREZ/JUAN^2512101000000000000?"):
        clean = scrub_text(f"leído {track} fin")
        assert "4111111111111111" not in clean and "5555555555554444" not in clean and "=2512" not in clean
        assert clean.startswith("leído ") and clean.endswith(" fin")
    assert "4761" not in scrub_text("57: 4761739001010010D25122010123456789F")


def test_numbers_that_are_not_card_numbers_stay():
    for text in ("Ticket 000123456789012", "Operación 1234567890123", "$12.500", "28-11-2026 01:05", "AB12CD", ""):
        assert scrub_text(text) == text, text
    assert not contains_card_data("Venta #42 por $3.500, autorización A1B2C3, ****4242")


def test_structures_lose_card_fields_and_mask_the_rest():
    result = {
        "ResponseCode": 0,
        "Ticket": "77",
        "Amount": 3500,
        "Track2Data": ";4111111111111111=2512?",
        "AccountNumber": "4111111111111111",
        "CVV": "123",
        "pin_block": "A1B2",
        "ResponseMessage": "Aprobado 4111111111111111",
        "nested": [4111111111111111, {"PAN": "x", "note": "5555 5555 5555 4444"}],
    }
    assert scrub(result) == {
        "ResponseCode": 0,
        "Ticket": "77",
        "Amount": 3500,
        "ResponseMessage": "Aprobado ************1111",
        "nested": ["************1111", {"note": "**** **** **** 4444"}],
    }


def test_a_card_number_next_to_other_digits_is_still_masked():
    assert scrub_text("x-38163e69e200-4111111111111111") == "x-38163e69e200-************1111"
    assert scrub_text("ref 12 4111 1111 1111 1111") == "ref 12 **** **** **** 1111"
    assert "4111111111111111" not in scrub_text("99994111111111111111")  # hidden in a longer number
    assert scrub_text("código 123 456 789") == "código 123 456 789"
