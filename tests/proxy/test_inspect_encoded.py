"""Personal data hidden by an encoding is found; opaque ids, digests and binary stay clean."""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib

import brotli
import orjson
import pytest

from proxy.inspect import inspect_call
from proxy.inspect.encoded import MAX_LAYERS, base64_bytes
from proxy.inspect.model import DECOMPRESSED_TOO_LARGE, TOO_DEEP, UNDECODABLE, InspectionLimits

URL = "https://api.partner.example/v1/events"
JSON = [("Content-Type", "application/json")]
FORM = [("Content-Type", "application/x-www-form-urlencoded")]
PHONE_DOC = orjson.dumps({"phone": "+6591234567"})
OPT_IN_DOC = orjson.dumps({"msisdn": "6591234567", "sms_opt_in": True, "keyword": "START"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def jwt(claims: dict) -> str:
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    return f"{header}.{b64url(orjson.dumps(claims))}.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


def categories(headers, body: bytes, url: str = URL) -> set[str]:
    inspection = inspect_call("POST", url, headers, body)
    assert inspection.complete, inspection.problems
    return {f.category for f in inspection.findings}


@pytest.mark.parametrize(
    ("headers", "body", "url", "expected"),
    [
        pytest.param(
            JSON,
            orjson.dumps({"data": b64(PHONE_DOC)}),
            URL,
            "contact.phone_number",
            id="base64 json in a field",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"d": b64url(PHONE_DOC)}),
            URL,
            "contact.phone_number",
            id="base64url json in a field",
        ),
        pytest.param(
            JSON,
            b64(PHONE_DOC).encode(),
            URL,
            "contact.phone_number",
            id="base64 json as the whole body",
        ),
        pytest.param(
            [],
            b64(PHONE_DOC).encode(),
            URL,
            "contact.phone_number",
            id="base64 body without a type",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"x": b64(b64(PHONE_DOC).encode())}),
            URL,
            "contact.phone_number",
            id="base64 twice",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"x": b64(gzip.compress(PHONE_DOC))}),
            URL,
            "contact.phone_number",
            id="base64 of gzip",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"contact": b64(b"+65 9123 4567")}),
            URL,
            "contact.phone_number",
            id="base64 of a bare number",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"blob": b64(OPT_IN_DOC)}),
            URL,
            "mobile.sms_consent",
            id="sms opt-in record in base64",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"t": jwt({"sub": "u1", "phone_number": "+6591234567"})}),
            URL,
            "contact.phone_number",
            id="jwt payload in a field",
        ),
        pytest.param(
            [*JSON, ("Authorization", "Bearer " + jwt({"email": "mei@example.com"}))],
            b"{}",
            URL,
            "contact.email",
            id="jwt payload in authorization bearer",
        ),
        pytest.param(
            JSON,
            gzip.compress(PHONE_DOC),
            URL,
            "contact.phone_number",
            id="gzip without content-encoding",
        ),
        pytest.param(
            [], gzip.compress(PHONE_DOC), URL, "contact.phone_number", id="gzip without any header"
        ),
        pytest.param(
            [],
            zlib.compress(PHONE_DOC),
            URL,
            "contact.phone_number",
            id="zlib without content-encoding",
        ),
        pytest.param(
            [("Content-Type", "application/octet-stream")],
            raw_deflate(PHONE_DOC),
            URL,
            "contact.phone_number",
            id="raw deflate that inflates cleanly",
        ),
        pytest.param(
            [("Content-Type", "application/x-brotli")],
            brotli.compress(PHONE_DOC),
            URL,
            "contact.phone_number",
            id="brotli declared by its media type",
        ),
        pytest.param(
            FORM,
            b"to=%252B6591234567&text=hi",
            URL,
            "contact.phone_number",
            id="form value percent-encoded twice",
        ),
        pytest.param(
            [],
            b"",
            URL + "?msisdn=%25252B6591234567",
            "contact.phone_number",
            id="query value percent-encoded three times",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"note": "+65\u200b9123\u200b4567"}),
            URL,
            "contact.phone_number",
            id="zero-width spaces between digits",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"note": "+65\u20609123\u00ad4567\u200e"}),
            URL,
            "contact.phone_number",
            id="word joiner, soft hyphen, LRM",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"p\u200bhone": "91234567"}),
            URL,
            "contact.phone_number",
            id="zero-width space inside a key",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"contact": "006591234567"}),
            URL,
            "contact.phone_number",
            id="00 prefix under a neutral key",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"contact": "0044 7911 123456"}),
            URL,
            "contact.phone_number",
            id="00 prefix with spaces",
        ),
        pytest.param(
            [("Cookie", "theme=dark; lead_phone=%2B6591234567")],
            b"",
            URL,
            "contact.phone_number",
            id="phone number in a cookie",
        ),
        pytest.param(
            [("Cookie", "ctx=" + b64(PHONE_DOC))],
            b"",
            URL,
            "contact.phone_number",
            id="base64 json in a cookie",
        ),
    ],
)
def test_encoded_personal_data_is_found(headers, body, url, expected):
    assert expected in categories(headers, body, url)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(
            JSON,
            orjson.dumps(
                {"request": "dGhpc2lzYXJhbmRvbWlkMTIzNDU2Nzg5MA", "nonce": "q83vEjRWeJq83vEjRWeJ"}
            ),
            id="trap: random base64 ids",
        ),
        pytest.param(
            JSON, orjson.dumps({"avatar": b64(bytes(range(200)) * 3)}), id="trap: base64 of binary"
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "u": "550e8400-e29b-41d4-a716-446655440000",
                    "v": "6ba7b8109dad11d180b400c04fd430c8",
                }
            ),
            id="trap: uuids",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "x": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    "y": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                }
            ),
            id="trap: hex digests",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "customer": "cus_NffrFeUfNV2Hib",
                    "charge": "ch_3MmlLrLkdIwHu7ix0snN0B15",
                    "pi": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
                }
            ),
            id="trap: stripe-like ids",
        ),
        pytest.param(
            [
                *JSON,
                (
                    "Authorization",
                    "Bearer "
                    + jwt(
                        {
                            "sub": "svc-billing",
                            "iat": 1732900000,
                            "exp": 1732903600,
                            "aud": "https://api.partner.example",
                        }
                    ),
                ),
            ],
            b"{}",
            id="trap: a jwt without personal claims",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "ts": "1732900000123",
                    "amount": "006500",
                    "ref": "0065912345",
                    "where": "1.3521 103.8198",
                }
            ),
            id="trap: timestamps, amounts, numbers of a coordinate",
        ),
        pytest.param(
            [("Content-Type", "image/png")],
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
            id="trap: a png upload",
        ),
        pytest.param(
            [("Content-Type", "application/octet-stream")],
            bytes(range(256)) * 8,
            id="trap: an opaque binary upload",
        ),
        pytest.param(
            [("Content-Type", "application/octet-stream")],
            b"\x78\x9c" + bytes(range(1, 256)) * 4,
            id="trap: binary that starts like zlib",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"label": "SGVsbG8gV29ybGQgZnJvbSBRV0lRSQ=="}),
            id="trap: base64 text without personal data",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "sid": "MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    "word": "NotificationsEnabledForAllUsers",
                }
            ),
            id="trap: long alphanumeric words",
        ),
    ],
)
def test_opaque_values_stay_clean(headers, body):
    assert categories(headers, body) == set()


def test_a_corrupt_gzip_body_without_content_encoding_is_undecodable():
    inspection = inspect_call("POST", URL, [], b"\x1f\x8b\x08\x00" + b"not a deflate stream" * 3)
    assert inspection.problems == (UNDECODABLE,)
    assert not inspection.complete


def test_a_gzip_bomb_without_content_encoding_stops_at_the_cap():
    limits = InspectionLimits(max_decompressed_bytes=64 * 1024)
    bomb = gzip.compress(b"0" * (10 << 20))
    inspection = inspect_call("POST", URL, [], bomb, limits=limits)
    assert DECOMPRESSED_TOO_LARGE in inspection.problems
    assert not inspection.complete


def test_encodings_nested_past_the_limit_are_too_deep():
    value = PHONE_DOC
    for _ in range(MAX_LAYERS + 2):
        value = b64(value).encode()
    inspection = inspect_call("POST", URL, JSON, orjson.dumps({"x": value.decode()}))
    assert TOO_DEEP in inspection.problems
    assert not inspection.complete


def test_a_unicode_superscript_number_does_not_crash_the_phone_detector():
    for value in ("²²²1234567", "+²²²1234567", "00²²1234567", "¹²³⁴⁵⁶⁷⁸⁹⁰¹²³⁴"):
        for key in ("phone", "note", "card_number", "text"):
            inspection = inspect_call("POST", URL, JSON, orjson.dumps({key: value}))
            assert inspection.complete, (key, value, inspection.problems)


# -- split numbers, protobuf, GraphQL -------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def pb(number: int, value: int | str | bytes) -> bytes:
    """One protobuf field: a varint for an int, length-delimited for text or bytes."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def grpc_frame(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(message).to_bytes(4, "big") + message


PB = [("Content-Type", "application/x-protobuf")]
PB_MESSAGE = pb(1, 42) + pb(2, "6591234567") + pb(3, pb(1, "Hi Mei") + pb(2, 1732900000))


@pytest.mark.parametrize(
    ("headers", "body", "location"),
    [
        pytest.param(
            JSON,
            orjson.dumps({"cc": "+65", "num": "91234567"}),
            "json:$.num",
            id="split: code and number",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"a": "+65 9123", "b": "4567"}),
            "json:$.b",
            id="split: number cut in two",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"lead": {"dial_code": "852", "line": "6123 4567"}}),
            "json:$.lead.line",
            id="split: dial code key without plus",
        ),
        pytest.param(FORM, b"cc=%2B65&num=91234567", "form:num", id="split: form fields"),
        pytest.param(
            PB, PB_MESSAGE, "protobuf:2", id="protobuf: international number without plus"
        ),
        pytest.param(
            PB,
            pb(1, pb(4, "call me at 9123 4567 tonight")),
            "protobuf:1.4",
            id="protobuf: national number in a nested string",
        ),
        pytest.param(
            [("Content-Type", "application/grpc")],
            grpc_frame(PB_MESSAGE),
            "protobuf:2",
            id="grpc frame",
        ),
        pytest.param(
            [("Content-Type", "application/grpc"), ("grpc-encoding", "gzip")],
            grpc_frame(gzip.compress(PB_MESSAGE), 1),
            "protobuf:2",
            id="grpc compressed frame",
        ),
        pytest.param(
            [("Content-Type", "application/grpc-web-text")],
            base64.b64encode(grpc_frame(PB_MESSAGE) + grpc_frame(b"grpc-status:0\r\n", 0x80)),
            "protobuf:2",
            id="grpc-web-text",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "query": 'mutation { addLead(input: {name: "Mei", notes: "call 6591234567"}) { id } }'
                }
            ),
            "json:$.query",
            id="graphql: bare international number in a literal",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"query": 'mutation { sendSms(to: "91234567", text: "hi") { id } }'}),
            "json:$.query.to",
            id="graphql: national number as a phone argument",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "query": "mutation($p: String!) { addLead(phone: $p) { id } }",
                    "variables": {"p": "+6591234567"},
                }
            ),
            "json:$.variables.p",
            id="graphql: variables",
        ),
        pytest.param(
            [("Content-Type", "application/graphql")],
            b'query { lookup(msisdn: "85261234567") { carrier } }',
            "graphql.msisdn",
            id="graphql: application/graphql body",
        ),
    ],
)
def test_numbers_in_split_fields_protobuf_and_graphql_are_found(headers, body, location):
    inspection = inspect_call("POST", URL, headers, body)
    assert inspection.complete, inspection.problems
    assert ("contact.phone_number", location) in {
        (f.category, f.location) for f in inspection.findings
    }


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(
            JSON,
            orjson.dumps({"currency": "+1", "amount": "2345678901"}),
            id="trap: split across an amount",
        ),
        pytest.param(
            JSON,
            orjson.dumps({"country_code": "1", "zip": "94107", "unit": "12"}),
            id="trap: country code beside a zip",
        ),
        pytest.param(
            JSON, orjson.dumps({"tz": "+08:00", "x": "91234567"}), id="trap: a time zone offset"
        ),
        pytest.param(
            PB,
            pb(1, "3f8a9c1e-2b4d-4c6e-8f0a-1b2c3d4e5f60")
            + pb(2, 1732900000123)
            + pb(3, bytes(range(40)))
            + pb(4, "1732900000"),
            id="trap: protobuf ids, times and bytes",
        ),
        pytest.param(
            JSON,
            orjson.dumps(
                {
                    "query": 'query { orders(first: 20, after: "Y3Vyc29yOjE3MzI5MDAwMDA=", since: "2026-11-01") { edges { node { id total } } } }'
                }
            ),
            id="trap: graphql cursor and dates",
        ),
    ],
)
def test_split_protobuf_and_graphql_traps_stay_clean(headers, body):
    assert categories(headers, body) == set()


def test_a_body_declared_protobuf_that_does_not_parse_is_undecodable():
    inspection = inspect_call("POST", URL, PB, b"\xff\xff\xff\xff")
    assert inspection.problems == (UNDECODABLE,)


@pytest.mark.parametrize(
    "value",
    [
        "eyJhIjoxfQ==",
        "eyJhIjoxfQ",
        "x" * 48,
        "aGVsbG8gd29ybGQ=",
        "aGVs bG8=",  # whitespace inside is dropped first
        "aGVsbG8*",  # outside the alphabet
        "aGVsbG8=x",  # data after the padding
        "aGVsbG8é",  # not ASCII
        "a",  # no base64 has this length
        "",
    ],
)
def test_base64_bytes_decodes_as_b64decode_validating_does(value):
    stripped = "".join(value.split()).rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        expected = None if len(stripped) % 4 == 1 else base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        expected = None
    assert base64_bytes(value) == expected
