"""The proxy's direct `egress.decision` writer renders exactly the line structlog would."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import structlog

from proxy.decision import Decision, Reason
from proxy.decision_log import EVENT, DecisionLog, JsonLines, _clock, decision_record
from proxy.inspect.model import Finding
from proxy.spool import Spool
from sharewall.decision_record import RECORD_ONLY_FIELDS
from sharewall.line_writer import LineWriter
from sharewall.logs import configure_logging


@pytest.fixture
def json_structlog():
    """structlog as `sharewall proxy` configures it (JSON lines), into a buffer; restored after."""
    saved = structlog.get_config()
    configure_logging("info", json=True)
    out = io.StringIO()
    # Not cached: the module loggers must follow the restored configuration afterwards.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(out), cache_logger_on_first_use=False
    )
    yield out
    structlog.configure(**saved)


def _record(path: str) -> dict:
    decision = Decision(
        decision_id="d" * 32,
        action="deny",
        reasons=(Reason("PERSONAL_DATA_IN_CLEARTEXT", "cleartext", "contact.phone_number"),),
        recipient_id="twilio",
        purpose="service_delivery",
        categories=("contact.phone_number",),
        findings=(Finding("contact.phone_number", "json:$.To", "phone"),),
    )
    return decision_record(
        decision=decision,
        mode="report",
        method="POST",
        host="api.twilio.com",
        port=443,
        path=path,
        inspected=True,
        tunnel=False,
        status=200,
        source_workload="web",
        source_namespace="prod",
        latency_ms=1.23456,
        inspect_ms=0.1,
        policy_ms=None,
    )


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/2010-04-01/Messages.json", id="plain path"),
        pytest.param("/send?token=abc&to=1", id="redacted query"),
    ],
)
def test_direct_line_equals_the_structlog_line(json_structlog, path, tmp_path):
    DecisionLog().emit(_record(path))
    via_structlog = orjson.loads(json_structlog.getvalue().splitlines()[-1])
    out = _written(lambda lines: DecisionLog(lines=lines).emit(_record(path)), tmp_path)
    [raw] = out.splitlines()
    direct = orjson.loads(raw)

    assert list(direct) == list(via_structlog)  # same fields, same order
    assert direct["event"] == EVENT and direct["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", direct["timestamp"])
    same = {k: v for k, v in direct.items() if k != "timestamp"}
    assert same == {k: v for k, v in via_structlog.items() if k != "timestamp"}
    assert "abc" not in raw.decode() and "reasons" not in direct


def _written(emit: Callable[[JsonLines], None], tmp_path: Path) -> bytes:
    """What `emit` writes through a `JsonLines` on its own stdout-like writer, once drained."""
    with open(tmp_path / "stdout", "wb+") as out:
        writer = LineWriter(out.fileno())
        emit(JsonLines(writer))
        assert writer.close(timeout=10)
        out.seek(0)
        return out.read()


async def test_lines_queued_on_the_loop_are_handed_to_the_writer_together(tmp_path):
    with open(tmp_path / "stdout", "wb+") as out:
        writer = LineWriter(out.fileno())
        log = DecisionLog(lines=JsonLines(writer))
        log.emit(_record("/x"))
        await asyncio.sleep(0)
        log.emit(_record("/x"))
        log.emit(_record("/x"))
        time.sleep(0.05)  # the writer thread has nothing yet: the batch waits for the loop
        assert writer.written_lines == 0 and writer.pending_bytes > 0
        deadline = time.monotonic() + 10
        while writer.written_lines < 3:  # the three, handed off in one batch, written
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert writer.pending_bytes == 0
        out.seek(0)
        assert len(out.read().splitlines()) == 3
        assert writer.close(timeout=10)


def test_record_time_and_line_timestamp_are_now_in_the_datetime_iso_formats(tmp_path):
    before = datetime.now(UTC)
    record = _record("/x")
    out = _written(lambda lines: DecisionLog(lines=lines).emit(record), tmp_path)
    after = datetime.now(UTC)
    stamp = orjson.loads(out)["timestamp"]

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp)
    for text, precision in ((record["time"], timedelta(milliseconds=1)), (stamp, timedelta(0))):
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert before - precision <= parsed <= after


def _line_as_a_dict(record: dict, timestamp: str) -> bytes:
    """The line as it was built before it was cut from the record's JSON: a dict, encoded."""
    line = {k: v for k, v in record.items() if k not in RECORD_ONLY_FIELDS}
    line.update(event=EVENT, level="info", timestamp=timestamp)
    return orjson.dumps(line)


@pytest.mark.parametrize(
    ("path", "message", "fault"),
    [
        pytest.param("/2010-04-01/Messages.json", "cleartext", None, id="plain"),
        pytest.param(
            '/q?a=,"reasons":[1]&b="x"', ',"reasons":["no"]', None, id="key text in values"
        ),
        pytest.param('/ünï/cödé/\\"/\x01', 'say "hi"\n', None, id="escapes and non-ASCII"),
        pytest.param("/x", "m", "log_unavailable", id="a sheddable refusal"),
    ],
)
async def test_the_line_is_the_records_fields_and_the_spool_gets_the_record(
    path, message, fault, tmp_path
):
    record = _record(path)
    record["reasons"][0]["message"] = message
    record.update(fault=fault, tls_upstream=True, scheme="https", complete=False)
    spool = Spool(tmp_path / "spool")
    await spool.start()
    with open(tmp_path / "stdout", "wb+") as out:
        writer = LineWriter(out.fileno())
        DecisionLog(spool, lines=JsonLines(writer)).emit(record)
        assert writer.close(timeout=10)
        out.seek(0)
        [raw] = out.read().splitlines()
    await spool.close()
    [segment] = spool.sealed_segments()

    assert raw == _line_as_a_dict(record, orjson.loads(raw)["timestamp"])
    assert segment.read_bytes().splitlines()[1] == orjson.dumps(record)


@pytest.mark.parametrize("nanos", [0, 1, 999])  # below the microsecond: floored
@pytest.mark.parametrize("micro", [0, 1, 999, 1000, 123_456, 999_999])
def test_the_line_timestamp_is_datetimes_isoformat(monkeypatch, micro, nanos):
    second = 1_764_489_600
    monkeypatch.setattr(time, "time_ns", lambda: (second * 1_000_000 + micro) * 1000 + nanos)
    expected = datetime.fromtimestamp(second, UTC).replace(microsecond=micro).isoformat()
    assert _clock.micros_z() == expected.replace("+00:00", "Z").encode()


@pytest.mark.parametrize("nanos", [0, 1, 999, 999_999])  # below the millisecond: floored
@pytest.mark.parametrize("micro", [0, 1_000, 999_000, 123_000])
def test_the_record_time_is_datetimes_isoformat_in_milliseconds(monkeypatch, micro, nanos):
    second = 1_764_489_601
    monkeypatch.setattr(time, "time_ns", lambda: (second * 1_000_000 + micro) * 1000 + nanos)
    expected = datetime.fromtimestamp(second, UTC).replace(microsecond=micro)
    assert _clock.millis() == expected.isoformat(timespec="milliseconds")
