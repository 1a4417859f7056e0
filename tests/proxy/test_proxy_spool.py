"""The decision spool: durable before commit returns, grouped fsyncs, one owner, a full disk."""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest
from tiny_disk import fill, tiny_tmpfs

from proxy.spool import (
    OPEN_SUFFIX,
    Spool,
    SpoolLocked,
    SpoolUnavailable,
    read_segment,
    registry_identity,
)

REGISTRY = "http://registry.test:8700/"


def records_on_disk(directory) -> list[str]:
    """Decision ids in every segment (open or sealed), in order, and the number of bad lines."""
    ids = []
    for path in sorted(directory.glob("segment-*")):
        for line in path.read_bytes().splitlines():
            doc = orjson.loads(line)  # a torn or corrupt line fails the test here
            if "decision_id" in doc:
                ids.append(doc["decision_id"])
    return ids


async def test_commit_returns_once_the_record_is_in_the_file(tmp_path):
    spool = Spool(tmp_path, registry=REGISTRY)
    await spool.start()
    try:
        await spool.commit({"decision_id": "d1"})
        [open_segment] = tmp_path.glob(f"*{OPEN_SUFFIX}")
        assert records_on_disk(tmp_path) == ["d1"]
        assert spool.fsyncs == 1 and open_segment.stat().st_mode & 0o777 == 0o600
    finally:
        await spool.close()


async def test_records_of_one_window_share_one_fsync(tmp_path):
    spool = Spool(tmp_path)
    await spool.start()
    try:
        await asyncio.gather(*(spool.commit({"decision_id": f"d{i}"}) for i in range(50)))
        assert spool.records_written == 50
        assert spool.fsyncs == 1
    finally:
        await spool.close()


async def test_close_seals_segments_that_name_their_registry(tmp_path):
    spool = Spool(tmp_path, registry=REGISTRY)
    await spool.start()
    await spool.commit({"decision_id": "d0"})
    spool.append({"decision_id": "d1"})  # queued without waiting: still written by close
    await spool.close()
    [path] = spool.sealed_segments()
    segment = read_segment(path)
    assert segment.registry == registry_identity(REGISTRY) == "http://registry.test:8700"
    assert [r["decision_id"] for r in segment.records] == ["d0", "d1"]
    assert not list(tmp_path.glob(f"*{OPEN_SUFFIX}"))


@pytest.mark.parametrize(
    ("spelling", "same_as"),
    [
        pytest.param("http://Registry.TEST.:8700", REGISTRY, id="case and trailing dot"),
        pytest.param("http://régistry.test:8700/", "http://xn--rgistry-bya.test:8700", id="idn"),
        pytest.param("http://[::0001]:8700/", "http://[::1]:8700", id="ipv6 literal"),
        pytest.param("https://registry.test/api/", "https://registry.test:443/api", id="port"),
        pytest.param("http://proxy:secret@registry.test:8700", REGISTRY, id="userinfo"),
    ],
)
def test_two_spellings_of_one_registry_are_one_identity(spelling: str, same_as: str):
    # A successor configured with another spelling of the registry ships the segments its
    # predecessor wrote (they are not foreign), and a password never reaches a segment header.
    identity = registry_identity(spelling)
    assert identity == registry_identity(same_as)
    assert identity is not None and "secret" not in identity and "@" not in identity


def test_a_registry_url_that_is_no_url_still_has_an_identity():
    assert registry_identity("ftp://u:pw@Registry.test:x/a/") == "ftp://registry.test:x/a"
    assert registry_identity("http://[::1/") == "http://[::1"


async def test_full_segments_are_sealed_while_running_oldest_first(tmp_path):
    spool = Spool(tmp_path, segment_max_records=2, segment_max_age=60)
    await spool.start()
    for i in range(5):
        await spool.commit({"decision_id": f"d{i}"})
    assert len(spool.sealed_segments()) == 2
    await spool.close()
    segments = spool.sealed_segments()
    ids = [r["decision_id"] for s in segments for r in read_segment(s).records]
    assert ids == [f"d{i}" for i in range(5)]


async def test_old_segments_are_sealed_for_shipping_without_closing(tmp_path):
    spool = Spool(tmp_path, segment_max_age=0.05)
    await spool.start()
    await spool.commit({"decision_id": "aged"})
    assert await _until(lambda: bool(spool.sealed_segments()), 3.0)
    await spool.close()


async def test_removed_segments_are_gone(tmp_path):
    spool = Spool(tmp_path)
    await spool.start()
    await spool.commit({"decision_id": "x"})
    await spool.close()
    [segment] = spool.sealed_segments()
    spool.remove(segment)
    spool.remove(segment)  # twice is fine (a re-acknowledged segment)
    assert spool.sealed_segments() == []


async def test_segment_left_open_by_a_crash_is_sealed_without_its_torn_line(tmp_path):
    torn = tmp_path / "segment-00000000000000000001-1-000001.jsonl.open"
    header = b'{"spool_segment":1,"registry":"http://r.test:80"}\n'
    torn.write_bytes(header + b'{"decision_id": "whole"}\n{"decision_id": "to')
    spool = Spool(tmp_path)
    await spool.start()
    await spool.close()
    [path] = spool.sealed_segments()
    segment = read_segment(path)
    assert [r["decision_id"] for r in segment.records] == ["whole"]
    assert segment.registry == "http://r.test:80" and segment.corrupt_lines == 0


async def test_a_second_spool_on_the_same_directory_is_refused(tmp_path):
    first = Spool(tmp_path)
    await first.start()
    second = Spool(tmp_path)
    try:
        with pytest.raises(SpoolLocked, match="in use by another proxy"):
            await second.start()
    finally:
        await first.close()
    third = Spool(tmp_path)  # released on close (and by the kernel when a process dies)
    await third.start()
    await third.close()


def _spool_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "sharewall-spool"}


async def test_the_spool_thread_lives_from_start_to_close(tmp_path):
    # The spool writes in a thread of its own: none is left behind by a spool that closed or
    # that could not start. Threads are told apart, not counted: an earlier test's spool
    # thread may still be ending (slowly, on a loaded machine).
    before = _spool_threads()
    first = Spool(tmp_path)
    await first.start()
    [thread] = _spool_threads() - before
    with pytest.raises(SpoolLocked):
        await Spool(tmp_path).start()
    # The spool that could not start ends the thread it had started.
    assert await _until(lambda: _spool_threads() - before == {thread}, 30.0)
    first.append({"decision_id": "one"})
    await first.close()
    assert await _until(lambda: not thread.is_alive(), 30.0)
    assert records_on_disk(tmp_path) == ["one"]


async def test_a_full_disk_refuses_records_whole_and_recovers_when_space_returns(tmp_path):
    with tiny_tmpfs(tmp_path / "disk", "128k") as disk:
        spool = Spool(disk / "spool", probe_interval=0.05, segment_max_age=60)
        await spool.start()
        try:
            await spool.commit({"decision_id": "before", "pad": "x" * 500})
            filler = fill(disk)
            refused = 0
            for i in range(20):  # bigger than what is left of the last page
                try:
                    await spool.commit({"decision_id": f"full-{i}", "pad": "y" * 3000})
                except SpoolUnavailable as exc:
                    assert "ENOSPC" in str(exc)
                    refused += 1
            assert refused >= 1 and spool.problem is not None
            # Nobody waits for this one (the 503's own record): kept, written once, later.
            failures = spool.write_failures
            spool.append({"decision_id": "fault", "pad": "z" * 3000})
            assert await _until(lambda: spool.write_failures > failures, 5.0)
            written = records_on_disk(disk / "spool")  # parses every line: none is torn
            filler.unlink()
            assert await _until(lambda: spool.problem is None, 5.0)
            await spool.commit({"decision_id": "after"})
            assert await _until(lambda: "fault" in records_on_disk(disk / "spool"), 5.0)
        finally:
            await spool.close()
        ids = records_on_disk(disk / "spool")
        assert sorted(ids) == sorted([*written, "fault", "after"]) and len(ids) == len(set(ids))
        assert written[0] == "before" and "fault" not in written


async def _until(predicate, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_unawaited_records_are_written_together_and_synced_by_the_next_refusal(tmp_path):
    # Report mode's would-block records: nobody waits for them, so they cost no fsync of their
    # own; the next refusal's fsync (or sealing their segment) makes them durable.
    spool = Spool(tmp_path, flush_interval=0.05)
    await spool.start()
    try:
        for i in range(20):
            spool.append({"decision_id": f"w{i}"})
        assert await _until(lambda: spool.records_written == 20, 5.0)
        assert spool.fsyncs == 0
        await spool.commit({"decision_id": "refused"})
        assert spool.fsyncs == 1
        assert records_on_disk(tmp_path) == [*(f"w{i}" for i in range(20)), "refused"]
        spool.append({"decision_id": "last"})
    finally:
        await spool.close()
    assert spool.fsyncs == 2  # the last one, when its segment was sealed
    assert records_on_disk(tmp_path)[-1] == "last"


async def test_a_refusal_does_not_wait_for_the_unawaited_records_interval(tmp_path):
    spool = Spool(tmp_path, flush_interval=30.0)
    await spool.start()
    try:
        spool.append({"decision_id": "would-block"})
        await asyncio.sleep(0.05)
        async with asyncio.timeout(5.0):
            await spool.commit({"decision_id": "refused"})
        assert records_on_disk(tmp_path) == ["would-block", "refused"]
    finally:
        await spool.close()
