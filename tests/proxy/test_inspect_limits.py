"""Limits and hostile input: every input ends in findings or problems, and over-limit fails closed."""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Iterator, Mapping

import brotli
import orjson
import pytest

from proxy.inspect import inspect_call
from proxy.inspect.model import (
    BODY_TOO_LARGE,
    DECOMPRESSED_TOO_LARGE,
    INSPECTOR_ERROR,
    TIMED_OUT,
    TOO_DEEP,
    TOO_MANY_FIELDS,
    UNDECODABLE,
    UNSUPPORTED_ENCODING,
    InspectionLimits,
)

URL = "https://api.example.com/v1/send"
PAYLOAD = b'{"to": "+6591234567", "text": "hello"}'
EXPECTED = {("contact.phone_number", "json:$.to"), ("comms.content", "json:$.text")}
# For the limits that are not time: a scan descheduled past the default 0.25 s budget on a
# loaded machine would end TIMED_OUT instead (seen once at load 8).
NO_DEADLINE = 60.0


def json_headers(encoding: str | None = None) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json")]
    return [*headers, ("Content-Encoding", encoding)] if encoding else headers


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("gzip", gzip.compress(PAYLOAD), id="gzip"),
        pytest.param("x-gzip", gzip.compress(PAYLOAD), id="x-gzip"),
        pytest.param("deflate", zlib.compress(PAYLOAD), id="deflate (zlib)"),
        pytest.param("deflate", raw_deflate(PAYLOAD), id="deflate (raw)"),
        pytest.param("br", brotli.compress(PAYLOAD), id="brotli"),
        pytest.param("gzip, br", brotli.compress(gzip.compress(PAYLOAD)), id="stacked gzip, br"),
        pytest.param("identity", PAYLOAD, id="identity"),
    ],
)
def test_compressed_bodies_are_inspected(encoding, body):
    inspection = inspect_call("POST", URL, json_headers(encoding), body)
    assert inspection.complete
    assert {(f.category, f.location) for f in inspection.findings} == EXPECTED


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("deflate", zlib.compress, id="deflate"),
        pytest.param("br", lambda data: brotli.compress(data, quality=4), id="brotli"),
    ],
)
def test_a_compression_bomb_stops_at_the_cap(encoding, compress):
    bomb = compress(b"\0" * (16 << 20))  # 16 MB of zeros in ~16 KB
    assert len(bomb) < 100_000
    limits = InspectionLimits(max_decompressed_bytes=1 << 20, max_seconds=NO_DEADLINE)
    inspection = inspect_call("POST", URL, json_headers(encoding), bomb, limits=limits)
    assert inspection.problems == (DECOMPRESSED_TOO_LARGE,)
    assert not inspection.complete


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        pytest.param(
            json_headers("compress"), PAYLOAD, UNSUPPORTED_ENCODING, id="unknown encoding"
        ),
        pytest.param(json_headers("gzip"), b"not gzip at all", UNDECODABLE, id="corrupt gzip"),
        pytest.param(
            json_headers("gzip"),
            gzip.compress(PAYLOAD)[:-12],
            UNDECODABLE,
            id="gzip cut short without the proxy saying so",
        ),
        pytest.param(
            [("Content-Type", "text/plain; charset=x-no-such-charset")],
            b"+6591234567",
            UNDECODABLE,
            id="unknown charset",
        ),
    ],
)
def test_undecodable_bodies_fail_closed(headers, body, problem):
    inspection = inspect_call("POST", URL, headers, body)
    assert problem in inspection.problems
    assert not inspection.complete


def test_a_body_truncated_by_the_proxy_is_incomplete_but_scanned():
    inspection = inspect_call("POST", URL, json_headers(), PAYLOAD[:30], body_truncated=True)
    assert inspection.problems == (BODY_TOO_LARGE,)
    assert not inspection.complete
    assert ("contact.phone_number", "text") in {
        (f.category, f.location) for f in inspection.findings
    }


def test_a_body_over_the_limit_is_too_large():
    limits = InspectionLimits(max_body_bytes=16, max_seconds=NO_DEADLINE)
    inspection = inspect_call("POST", URL, json_headers(), PAYLOAD, limits=limits)
    assert BODY_TOO_LARGE in inspection.problems


def test_a_truncated_gzip_body_is_scanned_as_far_as_it_goes():
    body = gzip.compress(PAYLOAD * 50)[:-40]
    inspection = inspect_call("POST", URL, json_headers("gzip"), body, body_truncated=True)
    assert inspection.problems == (BODY_TOO_LARGE,)
    assert ("contact.phone_number", "text") in {
        (f.category, f.location) for f in inspection.findings
    }


@pytest.mark.parametrize(
    "depth",
    [pytest.param(40, id="past max_depth"), pytest.param(5000, id="past orjson's own limit")],
)
def test_deep_nesting_is_too_deep(depth):
    body = b'{"a":' * depth + b'{"to": "+6591234567"}' + b"}" * depth
    inspection = inspect_call("POST", URL, json_headers(), body)
    assert TOO_DEEP in inspection.problems
    assert not inspection.complete


def test_deep_xml_is_too_deep():
    body = b"<a>" * 100 + b"<msisdn>+6591234567</msisdn>" + b"</a>" * 100
    inspection = inspect_call("POST", URL, [("Content-Type", "application/xml")], body)
    assert inspection.problems == (TOO_DEEP,)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(json_headers(), orjson.dumps({"ids": list(range(200))}), id="json"),
        pytest.param(
            [("Content-Type", "application/xml")],
            b"<r>" + b"<i/>" * 200 + b"</r>",
            id="xml",
        ),
        pytest.param(
            [("Content-Type", "application/x-www-form-urlencoded")],
            b"&".join(b"k%d=v" % i for i in range(200)),
            id="form",
        ),
    ],
)
def test_too_many_fields(headers, body):
    limits = InspectionLimits(max_fields=100, max_seconds=NO_DEADLINE)
    inspection = inspect_call("POST", URL, headers, body, limits=limits)
    assert inspection.problems == (TOO_MANY_FIELDS,)
    assert not inspection.complete


def test_the_time_budget_ends_the_scan():
    body = orjson.dumps({"messages": [{"to": "+6591234567", "text": "hi"}] * 20_000})
    limits = InspectionLimits(max_seconds=0.001, max_fields=10**6)
    inspection = inspect_call("POST", URL, json_headers(), body, limits=limits)
    assert inspection.problems == (TIMED_OUT,)
    assert not inspection.complete


class _BrokenHeaders(Mapping[str, str]):
    """A header mapping that fails while being read (a bug upstream of the inspector)."""

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("+6591234567 in a message")

    def __len__(self) -> int:
        return 1


def test_an_internal_error_fails_closed_and_logs_no_value():
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        inspection = inspect_call("POST", URL, _BrokenHeaders(), PAYLOAD)
    assert inspection.problems == (INSPECTOR_ERROR,)
    assert not inspection.complete
    assert [e["event"] for e in logs] == ["inspect.error"]
    assert "91234567" not in repr(logs)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xfe\x00garbage\x00", id="binary"),
        pytest.param(b"{" * 10 + b"]]]", id="broken brackets"),
        pytest.param(b"<" * 1000, id="angle brackets"),
        pytest.param(b"a=%zz&=&&==&b[[[]=1", id="odd form"),
        pytest.param("\ud800".encode("utf-8", "surrogatepass"), id="lone surrogate"),
    ],
)
@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
    ],
)
def test_garbage_never_raises(body, content_type):
    inspection = inspect_call("POST", URL, [("Content-Type", content_type)], body)
    assert INSPECTOR_ERROR not in inspection.problems


SEEDS = [
    (
        b'{"messages": [{"destinations": [{"to": "+6591234567"}], "text": "hi"}]}',
        "application/json",
    ),
    (b"To=%2B14155552671&From=%2B15005550006&Body=Hello", "application/x-www-form-urlencoded"),
    (b"<a><msisdn>+6591234567</msisdn><b x='1'>t</b></a>", "application/xml"),
    (
        b'--b\r\nContent-Disposition: form-data; name="To"\r\n\r\n+6591234567\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
    ),
]


@pytest.mark.parametrize(("seed", "content_type"), SEEDS)
def test_mutated_payloads_never_break_the_inspector(seed, content_type):
    rng = random.Random(seed)
    for _ in range(150):
        body = bytearray(seed)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(body))
            action = rng.random()
            if action < 0.4:
                body[position] = rng.randrange(256)
            elif action < 0.7:
                del body[position]
            else:
                body[position:position] = seed[rng.randrange(len(seed)) :][:8]
        inspection = inspect_call("POST", URL, [("Content-Type", content_type)], bytes(body))
        assert INSPECTOR_ERROR not in inspection.problems, bytes(body)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="a plain URL: its path judged once"),
        pytest.param("?page=1", id="with a query: judged as scanned"),
    ],
)
def test_path_segments_are_fields_of_the_budget(query):
    url = "https://hlr.example.com/" + "a/" * 5 + "hlr/447911123456" + query
    for _again in range(2):  # the second time from what the first worked out
        stopped = inspect_call(
            "GET", url, {}, b"", limits=InspectionLimits(max_fields=6, max_seconds=NO_DEADLINE)
        )
        assert stopped.problems == (TOO_MANY_FIELDS,) and stopped.findings == ()
        whole = inspect_call(
            "GET", url, {}, b"", limits=InspectionLimits(max_fields=8, max_seconds=NO_DEADLINE)
        )
        assert whole.problems == ()
        assert [(f.category, f.location) for f in whole.findings] == [
            ("contact.phone_number", "path:7")
        ]
