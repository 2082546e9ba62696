"""The wire format: envelope and Sign, and the stream reader (splits, glued messages, noise, size bound)."""

from __future__ import annotations

import hashlib
import json

from caja_getnet.protocol import (
    RECEIVED,
    BadSign,
    Command,
    Deadlines,
    Intermediate,
    Receipt,
    Response,
    StreamReader,
    encode_envelope,
    mask_response,
    parse_message,
)

SALE_RESPONSE = {
    "FunctionCode": 100,
    "ResponseCode": 0,
    "ResponseMessage": "Aprobado",
    "Ticket": "T1",
    "Amount": 1000,
    "Last4Digits": "4242",
    "AuthorizationCode": "123456",
    "Comment": 'llaves } { y "comillas" dentro de un texto',
}


def test_envelope_sign_is_upper_hex_sha256_of_the_exact_inner_string():
    outer = json.loads(encode_envelope(SALE_RESPONSE))
    assert outer["Sign"] == hashlib.sha256(outer["JsonSerialized"].encode("utf-8")).hexdigest().upper()
    assert json.loads(outer["JsonSerialized"]) == SALE_RESPONSE


def test_sign_is_compared_case_insensitively_and_a_mismatch_is_rejected():
    outer = json.loads(encode_envelope(SALE_RESPONSE))
    lower = json.dumps({"JsonSerialized": outer["JsonSerialized"], "Sign": outer["Sign"].lower()}).encode()
    assert isinstance(parse_message(lower), Response)
    assert isinstance(parse_message(encode_envelope(SALE_RESPONSE, bad_sign=True)), BadSign)
    tampered = json.dumps(
        {"JsonSerialized": outer["JsonSerialized"].replace("1000", "9000"), "Sign": outer["Sign"]}
    ).encode()
    assert isinstance(parse_message(tampered), BadSign)


def test_messages_are_classified():
    assert parse_message(RECEIVED) == Receipt(True)
    assert parse_message(encode_envelope({"MessageCode": 81, "MessageText": "Ingrese PIN"})) == Intermediate(
        81, "Ingrese PIN"
    )
    assert parse_message(encode_envelope(SALE_RESPONSE)).response_code == 0


def test_a_message_split_byte_by_byte_is_reassembled():
    reader = StreamReader()
    frame = encode_envelope(SALE_RESPONSE)
    found = []
    for i in range(len(frame)):
        found += reader.feed(frame[i : i + 1])
    assert [parse_message(f).data for f in found] == [SALE_RESPONSE]


def test_several_messages_in_one_read_come_out_in_order():
    reader = StreamReader()
    chunk = RECEIVED + encode_envelope({"MessageCode": 78, "MessageText": "Leyendo"}) + encode_envelope(SALE_RESPONSE)
    kinds = [type(parse_message(f)).__name__ for f in reader.feed(chunk)]
    assert kinds == ["Receipt", "Intermediate", "Response"]


def test_leading_noise_and_a_truncated_object_are_discarded_without_losing_the_message():
    reader = StreamReader()
    junk = b'\x00\xff garbage } ] {"JsonSerialized":"{\\"FunctionCode\\":100,\\"Resp'
    found = reader.feed(junk + encode_envelope(SALE_RESPONSE))
    assert [parse_message(f).data for f in found] == [SALE_RESPONSE]
    assert reader.dropped_bytes >= len(junk)


def test_an_unterminated_object_is_bounded_in_memory_and_the_stream_recovers():
    reader = StreamReader(max_bytes=10_000)
    assert reader.feed(b'{"JsonSerialized":"') == []
    for _ in range(50):
        assert reader.feed(b"A" * 1000) == []
        assert reader.pending <= 10_000
    assert next(parse_message(f) for f in reader.feed(encode_envelope(SALE_RESPONSE))).data == SALE_RESPONSE


def test_deadlines_per_command():
    d = Deadlines()
    assert d.for_command(Command.SALE) == 120
    assert {
        d.for_command(c)
        for c in (
            Command.POLL,
            Command.SET_NORMAL_MODE,
            Command.DEFAULT_SALE_TYPE,
            Command.SIM_REPORT,
            Command.CANCEL_SALE,
        )
    } == {10}
    assert d.for_command(Command.DETAILS) == d.for_command(Command.LAST_VOUCHER) == 60
    assert d.receipt_s == 3


def test_masking_keeps_only_brand_type_last4_and_references():
    masked = mask_response(
        SALE_RESPONSE
        | {"AccountNumber": "4761739001010119", "Track2": "4761739001010119=25", "Last4Digits": "4761739001010119"}
    )
    assert "AccountNumber" not in masked and "Track2" not in masked
    assert masked["Last4Digits"] == "0119"
    assert "4761739001010119" not in json.dumps(masked)
