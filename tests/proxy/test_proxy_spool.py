"""The decision spool: records reach sealed segments, survive a crash, are removed when shipped."""

from __future__ import annotations

import asyncio
import json

from proxy.spool import Spool


async def test_close_flushes_and_seals_every_appended_record(tmp_path):
    spool = Spool(tmp_path, flush_interval=10.0)
    await spool.start()
    for i in range(3):
        spool.append({"decision_id": f"d{i}", "reasons": [{"code": "UNKNOWN_RECIPIENT"}]})
    await spool.close()
    [segment] = spool.sealed_segments()
    assert [json.loads(x)["decision_id"] for x in segment.read_text().splitlines()] == [
        "d0",
        "d1",
        "d2",
    ]
    assert not list(tmp_path.glob("*.open"))


async def test_full_segments_are_sealed_while_running_oldest_first(tmp_path):
    spool = Spool(tmp_path, flush_interval=0.01, segment_max_records=2, segment_max_age=60)
    await spool.start()
    for i in range(5):
        spool.append({"decision_id": f"d{i}"})
        await asyncio.sleep(0.03)  # a flush between records
    await spool.close()
    segments = spool.sealed_segments()
    ids = [json.loads(x)["decision_id"] for s in segments for x in s.read_text().splitlines()]
    assert ids == [f"d{i}" for i in range(5)]
    assert len(segments) >= 2


async def test_old_segments_are_sealed_for_shipping_without_closing(tmp_path):
    spool = Spool(tmp_path, flush_interval=0.02, segment_max_age=0.05)
    await spool.start()
    spool.append({"decision_id": "aged"})
    assert await _until(lambda: bool(spool.sealed_segments()), 3.0)
    await spool.close()


async def test_removed_segments_are_gone(tmp_path):
    spool = Spool(tmp_path)
    await spool.start()
    spool.append({"decision_id": "x"})
    await spool.close()
    [segment] = spool.sealed_segments()
    spool.remove(segment)
    spool.remove(segment)  # twice is fine (a re-acknowledged segment)
    assert spool.sealed_segments() == []


async def test_segment_left_open_by_a_crash_is_sealed_without_its_torn_line(tmp_path):
    torn = tmp_path / "segment-00000000000000000001-1-000001.jsonl.open"
    torn.write_bytes(b'{"decision_id": "whole"}\n{"decision_id": "to')
    spool = Spool(tmp_path)
    await spool.start()
    await spool.close()
    [segment] = spool.sealed_segments()
    assert segment.read_text() == '{"decision_id": "whole"}\n'


async def _until(predicate, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()
