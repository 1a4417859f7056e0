"""The native fast path and the pure-Python path of inspection give identical results.

Differential: every call (the decision corpus, the inspection data files, the benchmark's
bodies, generated documents, forms and texts) is inspected both ways in one process
(`native.install`), and the findings (category, place, detector, in order) and problems (so the
complete/incomplete outcome) must be equal. The pre-scan is also checked on its own against
`scan_string`: whenever the full scan of a string finds anything, the pre-scan must have said it
could. Skipped where the native module was not built (the pure-Python path is then the only one).
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest

from proxy.inspect import inspect_call, native
from proxy.inspect.free_text import scan_string
from proxy.inspect.keys import DIAL_CODE_KEYS, EXACT_RULES
from proxy.inspect.model import Inspection, InspectionLimits
from proxy.inspect.scan import Scan

ROOT = Path(__file__).resolve().parents[2]
JSON = [("Content-Type", "application/json")]
FORM = [("Content-Type", "application/x-www-form-urlencoded")]
TEXT = [("Content-Type", "text/plain; charset=utf-8")]
URL = "https://api.partner.example/v1/messages"
# No time limit in play: the two runs must not differ by how busy the machine is.
LIMITS = InspectionLimits(max_seconds=120.0)

needs_native = pytest.mark.skipif(
    not native.is_available(), reason="the native module was not built (no compiler at install)"
)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


# Pieces of values: every family of detector, near misses, and the characters the pre-scan
# looks at (separators, '+', '@', ':', '#', secret prefixes, invisible and full-width digits).
FRAGMENTS = [
    "+6591234567",
    "+65 9123 4567",
    "+1 (415) 555-2671",
    "+44 20 7946 0958",
    "0065 9123 4567",
    "006591234567",
    "91234567",
    "6591234567",
    "(415) 555-2671",
    "415.555.2671",
    "+65\u200b9123\u200b4567",
    "\uff0b\uff16\uff15\uff19\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
    "tan.ah.kow@example.com",
    "icon@2x.png",
    "a@b",
    "8.8.8.8",
    "203.0.113.5",
    "10.0.0.1",
    "2001:4860:4860::8888",
    "123-45-6789",
    "123-45-678",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111111111111111",
    "89652012345678901234",
    "GB82WEST12345698765432",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "1 Raffles Place, #20-61, Singapore 048616",
    "Flat B, 12/F, Wan Chai",
    "221B Baker Street, London NW1 6XE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMiLCJwaG9uZSI6Iis2NTkxMjM0NTY3In0.c2ln",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "a1B2" * 9,
    "sk_live_" + "x9Y8" * 5,
    "xoxb-1234567890-abcdefghij",
    "AIzaSyA-1234567890abcdefghijklmnopqrstu",
    "postgres://user:secret@db.example.com/app",
    "-----BEGIN PRIVATE KEY-----",
    "order 8812 2291",
    "Your code is 123456.",
    "Wait... what 1.2.3",
    "2024-01-15",
    "12:30",
    "1 234 567,89",
    "https://acme.example.com/t/8812-2291",
    "msg-00000001",
    "order=1234567890",
    "Hi, your one-time code is 482913. It expires in 5 minutes.",
    "Köln",
    "Mei Tan",
    "STOP",
    "%2B6591234567",
    "a1b2c3d4e5f6",
    "SGD 1,200.00",
    "+65",
    "+852",
    "+65 9123",
    "9123 4567",
    "4567",
    "  ",
    "",
    '{"phone": "+6591234567"}',
    "[1, 2]",
    "SMS",
    "Stop",
    "Unsubscribe",
    "+14155550123",
]
ALPHABET = "0123456789 ().-+@:#/F,AKISzeyJxogh_lv\u200bAB12 ab"


def random_string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(FRAGMENTS)
    if roll < 0.7:
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 3))]
        glue = rng.choice([" ", ", ", "\n", "", "-", " at ", "; "])
        return glue.join(parts)
    if roll < 0.9:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
    return "".join(rng.choice("0123456789 .-()") for _ in range(rng.randint(5, 30)))


KEYS = [*sorted(EXACT_RULES)[::3], "id", "data", "payload", "meta", "items", "type", "value"]
KEYS += ["callbackData", "notifyUrl", "messageId", "text", "body", "attributes", "+6591234567"]
KEYS += [*sorted(DIAL_CODE_KEYS)[:4], "lat", "lng", "coordinates", "cdrs", "opt_in", "to", "name"]
KEYS += ["ChannelType", "OptOut", "external_id", "user_ids", "property", "contents", "alert"]


def random_value(rng: random.Random, depth: int) -> object:
    roll = rng.random()
    if depth < 4 and roll < 0.15:
        return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(1, 5))}
    if depth < 4 and roll < 0.2:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 4 and roll < 0.25:  # a batch: objects of one key set, now and then another
        keys = [rng.choice(KEYS) for _ in range(rng.randint(1, 4))]
        return [
            {k: random_value(rng, depth + 2) for k in (keys if rng.random() < 0.8 else keys[::-1])}
            for _ in range(rng.randint(1, 6))
        ]
    if roll < 0.27:
        return [rng.uniform(-180, 180), rng.uniform(-90, 90)]
    if roll < 0.3:
        return rng.choice([None, True, False, 0, 6591234567, 4111111111111111, 1.3521, 103.8198])
    if roll < 0.33:
        inner = orjson.dumps({rng.choice(KEYS): random_string(rng)})
        return inner.decode() if rng.random() < 0.5 else base64.b64encode(inner).decode()
    return random_string(rng)


def generated_calls(count: int, seed: int) -> Iterator[tuple[str, list, bytes, InspectionLimits]]:
    rng = random.Random(seed)
    for number in range(count):
        doc = {rng.choice(KEYS): random_value(rng, 0) for _ in range(rng.randint(1, 8))}
        limits = LIMITS
        if number % 17 == 0:  # the limits stop scans the same way on both paths
            limits = InspectionLimits(max_seconds=120.0, max_fields=rng.randint(1, 12), max_depth=2)
        kind = number % 5
        if kind in (0, 1):
            yield URL, JSON, orjson.dumps(doc), limits
        elif kind == 2:
            pairs = [
                (k, v if isinstance(v, str) else orjson.dumps(v).decode()) for k, v in doc.items()
            ]
            yield URL, FORM, urlencode(pairs).encode(), limits
        elif kind == 3:
            text = "\n".join(random_string(rng) for _ in range(rng.randint(1, 6)))
            yield URL, TEXT, text.encode(), limits
        else:  # wrapped: gzip without Content-Encoding, a base64 field inside
            wrapped = orjson.dumps({"payload": base64.b64encode(orjson.dumps(doc)).decode()})
            yield f"{URL}?to={rng.choice(FRAGMENTS)}", JSON, gzip.compress(wrapped, mtime=0), limits


def inspect_both(method: str, url: str, headers, body: bytes, limits=LIMITS):
    was_active = native.is_active()
    try:
        native.install(False)
        fallback = inspect_call(method, url, headers, body, limits=limits)
        assert native.install(True)
        fast = inspect_call(method, url, headers, body, limits=limits)
    finally:
        native.install(was_active)
    return fallback, fast


def assert_same(fallback: Inspection, fast: Inspection, what: str) -> None:
    assert fallback.fault is None, what  # a detector bug would make the comparison moot
    assert fast.findings == fallback.findings, what
    assert fast.problems == fallback.problems, what
    assert fast.complete == fallback.complete, what
    # Gathered with the findings, in C or in Python: the categories of the findings.
    assert fast.categories == fallback.categories == {f.category for f in fast.findings}, what


@needs_native
def test_corpus_gives_identical_findings_both_ways() -> None:
    corpus = _load("corpus_report", ROOT / "bench" / "corpus_report.py")
    cases = corpus.load_cases()
    assert len(cases) >= 60
    found = 0
    for case in cases:
        fallback, fast = inspect_both(case.method, case.url, list(case.headers), case.body)
        assert_same(fallback, fast, case.id)
        found += len(fallback.findings)
    assert found > 100  # the corpus is full of personal data: the comparison compared findings


@needs_native
def test_inspection_data_files_give_identical_results_both_ways() -> None:
    types = {".json": "application/json", ".xml": "application/xml", ".txt": "text/plain"}
    for path in sorted((ROOT / "tests" / "data" / "inspect").iterdir()):
        headers = [("Content-Type", types.get(path.suffix, "application/octet-stream"))]
        fallback, fast = inspect_both("POST", URL, headers, path.read_bytes())
        assert_same(fallback, fast, path.name)


@needs_native
def test_benchmark_bodies_give_identical_findings_both_ways() -> None:
    bench = _load("bench_inspect", ROOT / "bench" / "bench_inspect.py")
    for seed in (1, 2):
        rng = random.Random(seed)
        for body, headers in (
            (bench.json_call(rng), bench.JSON_HEADERS),
            (bench.json_batch(rng), bench.JSON_HEADERS),
            (bench.form_call(rng), bench.FORM_HEADERS),
            (bench.encoded_call(rng), bench.JSON_HEADERS),
        ):
            fallback, fast = inspect_both("POST", URL, headers, body, bench.LIMITS)
            assert fallback.findings, "the benchmark bodies carry phone numbers"
            assert_same(fallback, fast, f"bench body of {len(body)} bytes")


@needs_native
def test_generated_calls_give_identical_results_both_ways() -> None:
    stopped = 0
    for number, (url, headers, body, limits) in enumerate(generated_calls(600, seed=10)):
        fallback, fast = inspect_both("POST", url, headers, body, limits)
        assert_same(fallback, fast, f"generated call {number}: {body[:200]!r}")
        stopped += not fallback.complete
    assert stopped > 0  # some generated calls hit the limits: incomplete outcomes compared too


def _nested(depth: int) -> object:
    """Lists of objects and objects of lists, a phone at every level, `depth` levels deep."""
    if depth == 0:
        return {"to": "+6591234567", "note": "call 0065 9123 4567"}
    if depth % 2:
        return [_nested(depth - 1), {"to": "+6591234568"}, [_nested(depth - 1)], "+6591234569"]
    return {"to": "+6591234560", "items": _nested(depth - 1), "meta": {"x": _nested(depth - 1)}}


# Split numbers: a code of every length up to past the limit, then the rest in the next field.
SPLIT_DOCS = [
    {"a": code, "b": rest, "c": "x"}
    for code, rest in [
        ("+65", "91234567"),
        ("+65 9", "1234567"),
        ("+65 91", "234567"),
        ("+65 912", "34567"),
        ("+65 9123", "4567"),
        ("+65 91234", "567"),
        ("+65 912345", "67"),
        ("+65 9123456", "7"),
    ]
] + [{"country_code": "65", "number": "91234567"}, {"cc": 65, "n": 91234567}]
# Message bodies in and out of an error object, with and without letters or numbers.
CONTENT_DOCS = [
    {"status": "failed", "message": "Your parcel is on its way"},
    {"error": {"code": 21211, "message": "Invalid 'To' phone number"}},
    {"errors": [{"message": "rate limited"}, {"message": "1234"}]},
    {"to": "+6591234567", "message": "Your parcel is on its way"},
    {"text": "1234", "body": "....", "content": "Call +65 9123 4567", "msg": "Köln"},
    {"meta": "x", "text": "Hi Mei, see you at 10"},
]
_JWT = FRAGMENTS[31]  # its claims: {"sub": "123", "phone": "+6591234567"}
# Findings made while a value is judged are recorded for the memo and replayed for its repeats;
# two fields masked to one place keep the first detector.
MEMO_DOCS = [
    {"a": f"token {_JWT}", "b": f"token {_JWT}", "c": [f"token {_JWT}", f"token {_JWT}"]},
    {"phone number": "a" * 64, "Phone Number": "+6591234567", "PHONE NUMBER": "+6591234568"},
    # Objects in a list under a key that holds on the key alone: the list is the finding, not
    # each element (objects keyed by numbers are never planned, so they take the long way).
    {"cdrs": [{"+6591234567": {"duration": 30}}, {"a@b.co": 1}], "opt_in": [{"+6591234568": 1}]},
]


# Contexts an object passes to its fields (`_inner_context`, compiled): the body's top level and
# its `auth` object, the same object deeper, sticky flags, not-a-person and employer parents.
_CARD = {"name": "Tan Ah Kow", "phone": "+6591234567", "api_key": "sk_live_" + "x9Y8" * 5}
CONTEXT_DOCS = [
    {"auth": _CARD, "credentials": [_CARD], "data": {"auth": _CARD}},
    {"user": {"profile": _CARD, "company": _CARD, "product": {"name": "Plan 5G", "user": _CARD}}},
    {"hlr": {"status": "BUSY", "carrier": "Singtel"}, "items": [{"hlr": _CARD}, {"auth": _CARD}]},
    [{"auth": _CARD}, {"employer": {"name": "Acme Pte Ltd", "title": "CEO"}}],
    # A person's flag is sticky, and taken away below a product (whose own flag is not).
    {"user": {"product": {"details": {"name": "Tan Ah Kow", "title": "Dr"}}, "info": _CARD}},
]


@needs_native
def test_limits_and_edges_give_identical_results_both_ways() -> None:
    assert _JWT.startswith("eyJ")
    documents = [_nested(depth) for depth in range(9)] + SPLIT_DOCS + [{"batch": SPLIT_DOCS}]
    documents += [*CONTENT_DOCS, CONTENT_DOCS, *MEMO_DOCS, *CONTEXT_DOCS]
    for max_depth in range(9):
        for max_fields in (1, 3, 10, 50, 20_000):
            limits = InspectionLimits(max_seconds=120.0, max_depth=max_depth, max_fields=max_fields)
            for number, document in enumerate(documents):
                body = orjson.dumps(document)
                fallback, fast = inspect_both("POST", URL, JSON, body, limits)
                assert_same(fallback, fast, f"document {number}, {limits}")


# What the second round of real formats taught (channels, keywords, identifiers used as ids), in
# the places the compiled walker has its own steps: an object's fields, a batch of one key set
# (the channel differs element by element), a list's scalars, a form's and a query's values.
_ID_VALUES = ["+6591234567", "+1 415 555 0123", "mei@example.com", "icon@2x.png", "+44", "@", "+"]
SECOND_ROUND_DOCS = [
    {"ChannelType": "SMS", "Address": "+6591234567", "OptOut": "ALL", "User": {"opt_in": True}},
    {"Item": [{"ChannelType": c, "OptOut": "ALL", "text": "STOP"} for c in ("EMAIL", "SMS", 5)]},
    [{"channel": c, "opted_in": True} for c in ("sms", "push", "sms", "SMS ", None)],
    {"channel": "sms", "channelType": "email", "consent": "yes", "text": "Yes"},
    dict(zip(("user_id", "external_id", "message_id", "amount"), _ID_VALUES[:4], strict=True)),
    {"ids": _ID_VALUES, "user": [{"userId": v} for v in _ID_VALUES]},
    {"text": ["STOP", "Cancel", "stop all", "x" * 17, " UNSTOP!", ""], "from": "+6591234567"},
    [{"body": w} for w in ("STOP", "yes", "Help", "Opt-Out", "START.", "Unsubscribe now")],
    {"error": {"message": "STOP"}, "items": [{"message": "stop", "channel": "sms"}]},
    # Label/value pairs: a batch of one key set whose labels differ, values of every kind.
    [
        {"property": p, "value": v}
        for p, v in zip(
            ("phone", "Jan", "firstname", "order_id", "email"),
            ("6591234567", 12, "Mei", "4155550123", {"x": "a@b.co"}),
            strict=True,
        )
    ],
    {"name": "Mobile Number", "value": ["6591234567", "+6591234568"], "note": "+65 9123 4569"},
    {"Key": "Name", "Value": "Mei Tan", "channel": "sms", "OptOut": "ALL"},
    {"contents": [{"id": "plan-5g", "text": "Hi +6591234567"}], "alert": {"text": "x"}},
    {"contents": {"en": "Call +65 9123 4567"}, "alert": "STOP", "notification": {"alert": "Hi"}},
]


@needs_native
def test_second_round_formats_give_identical_results_both_ways() -> None:
    for number, document in enumerate(SECOND_ROUND_DOCS):
        fallback, fast = inspect_both("POST", URL, JSON, orjson.dumps(document))
        assert fallback.findings, f"document {number} has findings to compare"
        assert_same(fallback, fast, f"document {number}")
    for value in [*_ID_VALUES, "STOP", "sms", "Yes"]:
        pairs = [("user_id", value), ("Channel", "sms"), ("OptOut", "true"), ("Body", value)]
        assert_same(*inspect_both("POST", URL, FORM, urlencode(pairs).encode()), value)
        url = f"{URL}?{urlencode([('external_id', value), ('text', value)])}"
        assert_same(*inspect_both("GET", url, JSON, b""), f"{value!r} in a query")


# Values the compiled walker judges without calling back into Python: phone-keyed values without
# a digit (`fields._phone` cannot find a number or a digest in them), and long values whose first
# 64 characters decode to binary (`encoded.binary_head`). Near misses on each side.
_LONG_TEXT = "Hello Mei, your parcel 4411 is on its way to 1 Raffles Place. " * 4
PRECHECK_VALUES = [
    "QWIQI",
    "ACME",
    "InfoSMS",
    "Acme Corp",
    "a@b.co",
    "tan.ah.kow@example.com",
    "sip:alice",
    "tel:+65",
    "+",
    "  ",
    "abcdef" * 7 + "ab",  # 44 characters: a base64 digest's length
    "abcdef" * 10 + "abcd",  # 64: a hex digest's length
    "a" * 44,
    "A" * 64,
    "eyJhbGciOiJIUzI1NiJ9",
    "xoxb-abc-def",
    "Köln Hbf",
    "\uff31\uff19",  # full-width letter and digit
    "x" * 850,
    "x" * 129,
    "x" * 128,
    "AAAA" * 40,
    "////" * 40,
    "-_-_" * 40,
    "+/-_" * 40,
    base64.b64encode(_LONG_TEXT.encode()).decode(),
    base64.urlsafe_b64encode(b"\xfb\xff" + _LONG_TEXT.encode()).decode(),
    base64.b64encode(gzip.compress(_LONG_TEXT.encode(), mtime=0)).decode(),
    base64.b64encode(bytes(range(256))).decode(),
    base64.b64encode(orjson.dumps({"phone": "+6591234567", "note": _LONG_TEXT})).decode(),
    "A" * 60 + "==" + "A" * 80,
    "A" * 60 + "\t" + "A" * 80,
    "A" * 60 + "@" + "A" * 80,
]


@needs_native
def test_values_judged_without_python_give_identical_results_both_ways() -> None:
    for key in ("from", "to", "phone", "number", "sender", "data", "note", "body"):
        for value in PRECHECK_VALUES:
            for document in (
                {key: value},
                {"order": {key: value}},  # `number` of a reference: no phone rule
                {key: [value, value]},
                {"ctx": "+65", key: value},
            ):
                fallback, fast = inspect_both("POST", URL, JSON, orjson.dumps(document))
                assert_same(fallback, fast, f"{document}"[:200])
    form = urlencode([("From", v) for v in PRECHECK_VALUES]).encode()
    assert_same(*inspect_both("POST", URL, FORM, form), "form")
    # Scalars walked on their own (`_visit_scalar`): query values and header values.
    for value in PRECHECK_VALUES + FRAGMENTS:
        url = f"{URL}?{urlencode([('to', value), ('note', value), ('order_number', value)])}"
        headers = [*JSON, ("X-Msisdn", value), ("X-Note", value), ("X-Sender-Name", value)]
        assert_same(*inspect_both("GET", url, headers, b""), f"{value!r} in a query and headers")


@needs_native
def test_percent_decoding_is_unquote_to_bytes() -> None:
    from urllib.parse import unquote_to_bytes

    from proxy.inspect import _native  # type: ignore[attr-defined]

    rng = random.Random(12)
    texts = ["", "%", "%2", "%2B", "%%41", "%4%41", "100%", "a%zzb", "%2b%2F", "%g1", "%41%4"]
    texts += [
        "".join(rng.choice("%%0123456789abcdefABCDEFgz+ ") for _ in range(12)) for _ in range(5000)
    ]
    for text in texts:
        assert _native.percent_decode(text) == unquote_to_bytes(text), text
    # And in forms and queries, where it is used: broken escapes, escapes of escapes, UTF-8.
    fields = [
        ("To", "%2B6591234567"),
        ("From", "%252B6591234568"),
        ("Body", "100%+sure%"),
        ("x", "%zz"),
    ]
    fields += [("name", "M%C3%A9i+Tan"), ("bad", "%C3%28"), ("to[0]", "%2b65%209123%204567")]
    body = "&".join(f"{k}={v}" for k, v in fields).encode()
    assert_same(*inspect_both("POST", URL, FORM, body), "form with escapes")
    assert_same(*inspect_both("GET", f"{URL}?{body.decode()}", JSON, b""), "query with escapes")


@needs_native
def test_prescan_never_rules_out_a_string_the_full_scan_finds_something_in() -> None:
    from proxy.inspect import _native  # type: ignore[attr-defined]

    rng = random.Random(11)
    strings = FRAGMENTS + [random_string(rng) for _ in range(6000)]
    ruled_out = 0
    was_active = native.is_active()
    native.install(False)  # `scan_string` in full
    try:
        for value in strings:
            for is_text in (False, True):
                scan = Scan(LIMITS)
                scan_string(scan, "x", value, is_text=is_text)
                found = scan.result().findings
                if not _native.prescan(value, is_text):
                    ruled_out += 1
                    assert not found, (value, is_text, found)
    finally:
        native.install(was_active)
    assert ruled_out > 1000  # the pre-scan does rule strings out: the test compares something


def test_environment_switch_forces_the_pure_python_path() -> None:
    code = "from proxy.inspect import native; print(native.is_available(), native.is_active())"
    answers = {}
    for value in ("0", "1"):
        env = {**os.environ, native.ENV_SWITCH: value}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        answers[value] = out.stdout.split()
    available = native.is_available()
    assert answers["0"] == [str(available), "False"]
    assert answers["1"] == [str(available), str(available)]
