"""The decision log line: secrets in paths are redacted, the record carries no finding value."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from proxy.decision import Decision, Reason
from proxy.decision_log import EVENT, DecisionLog, decision_record, redact_path
from proxy.inspect.model import Finding
from proxy.spool import Spool, read_segment


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/v1/messages", "/v1/messages", id="no query"),
        pytest.param("/x?page=2&q=a", "/x?page=2&q=a", id="plain params kept"),
        pytest.param("/x?access_token=abc&page=2", "/x?access_token=REDACTED&page=2", id="token"),
        pytest.param("/x?API_KEY=abc", "/x?API_KEY=REDACTED", id="case-insensitive"),
        pytest.param(
            "/x?key=1&sig=2&signature=3&password=4&secret=5&token=6",
            "/x?key=REDACTED&sig=REDACTED&signature=REDACTED&password=REDACTED"
            "&secret=REDACTED&token=REDACTED",
            id="every secret name",
        ),
        pytest.param("https://u:p@h.example/x", "https://h.example/x", id="userinfo"),
    ],
)
def test_redact_path(path, expected):
    assert redact_path(path) == expected


def _record(mode: str, action: str = "deny") -> dict:
    decision = Decision(
        decision_id="d1",
        action=action,  # type: ignore[arg-type]
        reasons=(Reason("MOBILE_INFO_FOR_MARKETING", "no", "contact.phone_number"),),
        recipient_id="vendor",
        purpose="marketing",
        categories=("contact.phone_number",),
        findings=(Finding("contact.phone_number", "form:To", "phone"),),
    )
    return decision_record(
        decision=decision,
        mode=mode,
        method="POST",
        host="api.vendor.test",
        port=443,
        path="/send?token=s3cr3t",
        inspected=True,
        tunnel=False,
        status=403,
        source_workload="w",
        source_namespace="ns",
        latency_ms=1.0,
    )


async def _spooled(spool: Spool) -> list[dict]:
    """The records `spool` holds once closed (its segments sealed), read as the shipper reads."""
    await spool.close()
    return [r for path in spool.sealed_segments() for r in read_segment(path).records]


@pytest.mark.parametrize(
    ("mode", "action", "would_block", "spooled"),
    [
        pytest.param("enforce", "deny", False, True, id="enforce: blocked is spooled"),
        pytest.param("report", "allow", True, True, id="report: would-block is spooled"),
    ],
)
async def test_one_line_per_decision_and_blocked_ones_are_spooled(
    tmp_path, mode, action, would_block, spooled
):
    spool = Spool(tmp_path)
    await spool.start()
    seen: list[dict] = []
    log = DecisionLog(spool)
    log.sinks.append(seen.append)
    record = _record(mode)
    with capture_logs() as logs:
        log.emit(record)
    [line] = [x for x in logs if x["event"] == EVENT]
    assert line["action"] == action and line["would_block"] is would_block
    assert line["finding_locations"] == ["contact.phone_number@form:To"]
    assert line["path"] == "/send?token=REDACTED"
    assert "reasons" not in line and "findings" not in line  # record-only fields
    assert (await _spooled(spool) == [record]) is spooled
    assert seen and seen[0]["reasons"][0]["code"] == "MOBILE_INFO_FOR_MARKETING"


async def test_allowed_decisions_reach_the_sinks_but_not_the_spool(tmp_path):
    spool = Spool(tmp_path)
    await spool.start()
    seen: list[dict] = []
    log = DecisionLog(spool)
    log.sinks.append(seen.append)
    record = _record("enforce")
    record.update(action="allow", reason_codes=[], reasons=[])
    log.emit(record)
    assert await _spooled(spool) == [] and len(seen) == 1


def test_a_failing_sink_does_not_stop_the_others():
    seen: list[dict] = []

    def broken(_record: dict) -> None:
        raise RuntimeError("boom")

    log = DecisionLog()
    log.sinks.extend([broken, seen.append])
    log.emit(_record("enforce"))
    assert len(seen) == 1


def test_the_records_reasons_and_findings_are_the_decisions_as_dicts_in_order():
    findings = (
        Finding("contact.phone_number", "json:$.To", "phone"),
        Finding("comms.content", "json:$.Body", "key:content"),
        Finding("contact.email", "header:x-mail", "email"),
    )
    reasons = (Reason("MOBILE_INFO_FOR_MARKETING", "no", "contact.phone_number"), Reason("X", "m"))
    decision = Decision("d1", "deny", reasons=reasons, findings=findings)
    record = decision_record(decision, "enforce", "POST", "h.test", 443, "/", True, False, 403,
                             None, None, 1.0)  # fmt: skip
    assert record["findings"] == [f.as_dict() for f in findings]
    assert record["finding_locations"] == [f"{f.category}@{f.location}" for f in findings]
    assert record["reasons"] == [r.as_dict() for r in reasons]
    assert record["reason_codes"] == ["MOBILE_INFO_FOR_MARKETING", "X"]
    assert list(record["findings"][0]) == ["category", "location", "detector"]  # the JSON order
