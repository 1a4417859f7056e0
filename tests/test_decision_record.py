"""The decision record, one type for both sides: what the proxy writes is what the registry takes."""

from __future__ import annotations

import orjson
import pytest

from proxy.decision import Decision, Reason
from proxy.decision_log import decision_record
from proxy.inspect.model import Finding
from sharewall.decision_record import (
    FIELD_NAMES,
    LINE_FIELDS,
    RecordError,
    Vocabulary,
    record_schema,
    validate_record,
)
from sharewall.redaction import redact_path, redact_record_path
from sharewall.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    taxonomy = load_taxonomy()
    return Vocabulary(taxonomy.is_reason_code, taxonomy.is_category)


def proxy_record(decision: Decision, path: str = "/v1/send", status: int = 403) -> dict:
    return decision_record(
        decision=decision,
        mode="enforce",
        method="POST",
        host="api.vendor.test",
        port=443,
        path=path,
        inspected=True,
        tunnel=False,
        status=status,
        source_workload="w",
        source_namespace="ns",
        latency_ms=1.0,
    )


DENIAL = Decision(
    decision_id="a" * 32,
    action="deny",
    reasons=(Reason("MOBILE_INFO_FOR_MARKETING", "no", "contact.phone_number"),),
    recipient_id="vendor",
    purpose="marketing",
    categories=("contact.phone_number",),
    findings=(Finding("contact.phone_number", "query:phone", "phone"),),
)
FAULT = Decision(decision_id="b" * 32, action="deny", fault="inspector_error")


def test_the_proxy_writes_exactly_the_shared_fields_in_order(vocabulary):
    record = proxy_record(DENIAL)
    assert tuple(record) == FIELD_NAMES
    stored = validate_record(orjson.loads(orjson.dumps(record)), vocabulary)
    assert stored["reasons"] == [
        {"code": "MOBILE_INFO_FOR_MARKETING", "category": "contact.phone_number"}
    ]
    assert stored["reason_codes"] == ["MOBILE_INFO_FOR_MARKETING"]
    assert set(LINE_FIELDS) < set(FIELD_NAMES)
    assert {"time", "reasons", "findings"}.isdisjoint(LINE_FIELDS)  # the line stays short
    assert set(record_schema()["properties"]) == set(FIELD_NAMES)


def test_a_fault_record_carries_its_fault_and_status(vocabulary):
    stored = validate_record(
        orjson.loads(orjson.dumps(proxy_record(FAULT, status=503))), vocabulary
    )
    assert (stored["fault"], stored["status"], stored["reasons"]) == ("inspector_error", 503, [])


def test_the_path_is_redacted_where_the_finding_was_made():
    record = proxy_record(DENIAL, path="/v1/lookup?phone=%2B6591234567&country=SG")
    assert record["path"] == "/v1/lookup?phone=[contact.phone_number]&country=SG"
    assert "6591234567" not in orjson.dumps(record).decode()


def test_unknown_fields_are_ignored_and_missing_ones_defaulted(vocabulary):
    stored = validate_record(
        {"decision_id": "d1", "time": "2026-11-20T12:00:00Z", "action": "deny", "new": 1},
        vocabulary,
    )
    assert "new" not in stored and stored["categories"] == [] and stored["fault"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"decision_id": None}, "decision_id", id="no id"),
        pytest.param({"action": "maybe"}, "action", id="unknown action"),
        pytest.param({"status": "403"}, "status", id="status as text"),
        pytest.param({"status": 42}, "status", id="status out of range"),
        pytest.param({"would_block": "yes"}, "would_block", id="not a boolean"),
        pytest.param({"path": "/x" * 3000}, "path", id="path too long"),
        pytest.param({"categories": ["shoe_size"]}, "categories", id="unknown category"),
        pytest.param({"reasons": [{"code": "NOPE"}]}, "reason_codes", id="unknown reason"),
        pytest.param({"findings": ["phone"]}, "findings.0", id="finding not an object"),
    ],
)
def test_bad_records_name_the_field(vocabulary, change, field):
    doc = {**orjson.loads(orjson.dumps(proxy_record(DENIAL))), **change}
    with pytest.raises(RecordError) as caught:
        validate_record(doc, vocabulary)
    assert caught.value.field == field


PHONE = "contact.phone_number"


def found(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"category": c, "location": loc, "detector": "t"} for c, loc in pairs]


@pytest.mark.parametrize(
    ("path", "findings", "expected"),
    [
        pytest.param("/v1/messages", [], "/v1/messages", id="nothing found"),
        pytest.param(
            "/x?phone=%2B6591234567&page=2",
            found((PHONE, "query:phone")),
            "/x?phone=[contact.phone_number]&page=2",
            id="query value",
        ),
        pytest.param(
            "/v2/PhoneNumbers/%2B14155552671?Fields=x",
            found((PHONE, "path:3")),
            "/v2/PhoneNumbers/[contact.phone_number]?Fields=x",
            id="path segment",
        ),
        pytest.param(
            "//v2//PhoneNumbers/+14155552671",
            found((PHONE, "path:3")),
            "//v2//PhoneNumbers/[contact.phone_number]",
            id="empty segments are not counted",
        ),
        pytest.param(
            "/hlr/447911123456/status/2024",
            found((PHONE, "path")),
            "/hlr/[contact.phone_number]/status/2024",
            id="path without a position: identifier-like segments",
        ),
        pytest.param(
            "/x?to%5Bphone%5D=%2B6591234567",
            found((PHONE, "query:to[phone]")),
            "/x?to%5Bphone%5D=[contact.phone_number]",
            id="encoded key",
        ),
        pytest.param(
            "/x?data=eyJwaG9uZSI6IisifQ&a=1",
            found((PHONE, "query:data.b64:$.phone")),
            "/x?data=[contact.phone_number]&a=1",
            id="inside the value",
        ),
        pytest.param(
            "/x?a=1&ab=%2B6591234567",
            found((PHONE, "query:ab")),
            "/x?a=1&ab=[contact.phone_number]",
            id="a key's prefix is another key",
        ),
        pytest.param(
            "/x?mei%40example.com=1&page=2",
            found(("contact.email", "query:*")),
            "/x?[contact.email]=[contact.email]&page=2",
            id="the key is the data",
        ),
        pytest.param(
            "/x?e=a%40b.co&phone=1&e=c%40d.co",
            found(("contact.email", "query:e"), (PHONE, "query:phone")),
            "/x?e=[contact.email]&phone=[contact.phone_number]&e=[contact.email]",
            id="every occurrence",
        ),
        pytest.param(
            "/x?token=abc&q=1#frag", [], "/x?token=REDACTED&q=1", id="credential and fragment"
        ),
        pytest.param("https://u:p@h.example/x", [], "https://h.example/x", id="userinfo"),
        pytest.param(
            "http://api.test/lookup/6591234567?x=1",
            found((PHONE, "path:2")),
            "http://api.test/lookup/[contact.phone_number]?x=1",
            id="absolute-form target",
        ),
    ],
)
def test_redact_path(path, findings, expected):
    assert redact_path(path, findings) == expected
    assert redact_path(expected, findings) == expected  # idempotent (the registry redacts again)
    # The record's shortcut (a finding in the target told by its `category@location`) agrees.
    locations = [f"{f['category']}@{f['location']}" for f in findings]
    assert redact_record_path(path, findings, locations) == expected
    # Findings elsewhere (the body, a header) leave the path to what the target itself needs.
    elsewhere = found(
        (PHONE, "json:$.to"), ("contact.email", "header:x-mail"), (PHONE, "json:$['@path']")
    )
    elsewhere_locations = [f"{f['category']}@{f['location']}" for f in elsewhere]
    alone = redact_path(path)
    assert redact_record_path(path, elsewhere, elsewhere_locations) == alone


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (0.0004999, "0.0"),
        (0.0625, "0.063"),  # exactly 62.5 µs: half-up (round(x, 3) gives 0.062, to even)
        (2.0625, "2.063"),
        (0.1875, "0.188"),
        (0.0123456, "0.012"),
        (12.3456789, "12.346"),
        (0.1, "0.1"),
        (0.30000000000000004, "0.3"),
        (999.9996, "1000.0"),
        (86_400_000.0004, "86400000.0"),
    ],
)
def test_timings_are_rounded_half_up_to_the_microsecond(ms, expected):
    record = decision_record(
        DENIAL, "enforce", "POST", "h", 443, "/", True, False, 403, None, None, ms, ms, ms, ms
    )
    line = orjson.dumps(record).decode()
    for name in ("latency_ms", "inspect_ms", "policy_ms", "upstream_ms"):
        assert f'"{name}":{expected},' in line


def test_timings_print_as_the_shortest_float_with_at_most_three_decimals():
    import random
    from decimal import ROUND_HALF_UP, Decimal

    rng = random.Random(10)
    values = [rng.uniform(0, 10) for _ in range(3000)]
    values += [rng.uniform(0, 200_000) for _ in range(3000)]
    values += [n / 1000 + 0.0005 for n in range(3000)]  # near halfway (not exactly: binary)
    for ms in values:
        record = decision_record(
            DENIAL, "enforce", "POST", "h", 443, "/", True, False, 403, None, None, ms
        )
        text = orjson.dumps(record["latency_ms"]).decode()
        assert text == repr(record["latency_ms"])
        whole, _, decimals = text.partition(".")
        assert whole.isdigit() and decimals.isdigit() and 1 <= len(decimals) <= 3, text
        # The decimal half-up rounding of the exact value, but where the scaled value is so
        # near a halfway point that its float product lands on it (either side is correct).
        exact = Decimal(ms).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
        if Decimal(text) != exact:
            assert abs(Decimal(ms) * 1000 % 1 - Decimal("0.5")) < Decimal("1e-9"), (ms, text)
