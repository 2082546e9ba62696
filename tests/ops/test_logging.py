"""Structured JSON logs: context fields, and never a card number, track, CVV, PIN or secret."""

import io
import json
import logging

import pytest

from caja_core.ops.logging import RedactingFilter, Redactor, configure_logging, log_context, luhn_ok
from caja_core.settings import load_settings

SECRET_KEY = "Zq8vN3rT6yB1mK4pW7sD0fH2jL5xC9gA"
METRICS_TOKEN = "metrics-Hy7Tq2Lp9Vb4"
PAN = "4111111111111111"


def with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


PAN19 = with_check_digit("400005665566555612")
PANS = ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011000990139424", PAN19]


@pytest.fixture
def captured():
    settings = load_settings(
        {
            "CAJA_SECRET_KEY": SECRET_KEY,
            "CAJA_METRICS_TOKEN": METRICS_TOKEN,
            "CAJA_DATABASE_URL": "postgresql://caja:db-pass-Xy12@127.0.0.1/caja",
            "CAJA_INSTANCE_ID": "app-1",
        }
    )
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_luhn():
    assert luhn_ok(PAN) and luhn_ok("5555555555554444") and not luhn_ok("4111111111111112")


def test_json_lines_carry_request_venue_register_attempt(captured):
    log = logging.getLogger("caja.payments")
    with log_context(request_id="req-1", venue_id=1, register_id=7):
        with log_context(attempt_id=42):
            log.info("cobro aprobado", extra={"provider": "getnet", "amount": 12500})
        log.warning("sin intento")
    log.info("fuera de contexto")
    first, second, third = lines(captured)
    assert first["message"] == "cobro aprobado" and first["level"] == "INFO"
    assert first["request_id"] == "req-1" and first["venue_id"] == 1 and first["register_id"] == 7
    assert first["attempt_id"] == 42 and first["provider"] == "getnet" and first["amount"] == 12500
    assert first["instance"] == "app-1" and first["logger"] == "caja.payments"
    assert "attempt_id" not in second and second["register_id"] == 7
    assert "request_id" not in third


def test_a_payment_like_run_leaves_no_card_data_or_secret_in_the_logs(captured):
    """Everything a careless provider plugin or handler might log, through every path logging offers."""
    log = logging.getLogger("caja_getnet.client")
    with log_context(request_id="r", venue_id=1, register_id=2, attempt_id=3):
        for pan in PANS:
            log.info("respuesta del terminal: tarjeta %s aprobada", pan)
        log.info(
            "raw frame %s",
            json.dumps(
                {
                    "JsonSerialized": json.dumps(
                        {
                            "Pan": PAN,
                            "Cvv": "123",
                            "Track2": f";{PAN}=25121010000000000000?",
                            "PinBlock": "A1B2C3D4E5F60718",
                        }
                    )
                }
            ),
        )
        log.info("track1 %%B%s^PEREZ/JUAN^2512101000000000000?", PAN)
        log.debug(
            "request",
            extra={
                "card": {"number": PAN, "cvv": "987", "pin": "4321", "last4": "1111"},
                "headers": {"Authorization": f"Bearer {METRICS_TOKEN}"},
            },
        )
        log.warning("agent connected with token=%s and cookie: caja_session=abc123456", "agt-secret-77aa")
        log.error("could not connect to postgresql://caja:db-pass-Xy12@127.0.0.1/caja")
        log.info("signing with %s", SECRET_KEY)
        log.info("scrape with Authorization: Bearer %s", METRICS_TOKEN)
        try:
            raise ValueError(f"bad card {PAN} cvv=123")
        except ValueError:
            log.exception("fallo al cobrar")
        log.info("aprobado: marca VISA, últimos 4 1111, autorización 123456, operación 991, ticket 1234567890123")
    output = captured.getvalue()
    for forbidden in [
        PAN,
        "5555555555554444",
        "5555-5555-5555-4444",
        "4111 1111 1111 1111",
        "378282246310005",
        "6011000990139424",
        PAN19,
        "=25121010000000000000",
        "PEREZ/JUAN",
        "A1B2C3D4E5F60718",
        '"987"',
        "4321",
        "agt-secret-77aa",
        "abc123456",
        "db-pass-Xy12",
        SECRET_KEY,
        METRICS_TOKEN,
        "cvv=123",
        '123\\\\"',
    ]:
        assert forbidden not in output, forbidden
    records = lines(captured)
    assert all(r["attempt_id"] == 3 for r in records)
    # What may be kept is kept: brand, last 4, authorization code, operation number, non-card numbers.
    assert "****1111" in output and "últimos 4 1111" in output and "autorización 123456" in output
    assert "ticket 1234567890123" in output
    assert records[-2]["exception"].startswith("Traceback") and "****1111" in records[-2]["exception"]


def test_filter_is_safe_on_bad_format_strings():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "valor %d %s", ("no-es-numero",), None)
    assert RedactingFilter(Redactor()).filter(record)
    assert "no-es-numero" in record.getMessage()


def test_text_format(captured):
    settings = load_settings({"CAJA_SECRET_KEY": SECRET_KEY, "CAJA_LOG_FORMAT": "text"})
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    try:
        with log_context(register_id=5):
            logging.getLogger("caja").warning("tarjeta %s", PAN)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "tarjeta ****1111" in stream.getvalue() and "register_id=5" in stream.getvalue()
    assert PAN not in stream.getvalue()


@pytest.mark.parametrize(
    "line",
    [
        f"pista 2 (EMV) {PAN}D25121010000000000000F",  # track 2 as EMV tag 57 gives it: D as the separator
        f"pista 1 b{PAN}^PEREZ/JUAN^2512101000000000000",  # lower-case format code
        f"referencia 00{PAN}0000",  # a card number inside a run of more than 19 digits
    ],
)
def test_the_logs_drop_every_form_of_card_data_the_stored_records_drop(line):
    """The logs mask at least what caja refuses to store (caja_core.carddata): a track or a card number that the
    database's scrubber catches never reaches a log line either."""
    from caja_core.carddata import contains_card_data

    redacted = Redactor()(line)
    assert not contains_card_data(redacted), redacted
    assert "25121010000000000000" not in redacted and "PEREZ/JUAN" not in redacted
