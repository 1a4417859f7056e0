"""`sharewall.line_writer.LineWriter` on a real pipe whose reader stalls, then reads again."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading

from sharewall.line_writer import LineWriter


def _fill(fd: int) -> int:
    """Fill the pipe's kernel buffer so the next write blocks; the bytes written."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    total = 0
    try:
        while True:
            total += os.write(fd, b"x" * 4095 + b"\n")
    except BlockingIOError:
        pass
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return total


def _read_all(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 65536):
        into.append(chunk)


def test_stalled_reader_turns_the_writer_away_keeps_every_kept_line_in_order():
    r, w = os.pipe()
    filler = _fill(w)
    writer = LineWriter(w, limit=10_000)
    kept = [json.dumps({"n": k, "pad": "p" * 80}).encode() for k in range(200)]
    for line in kept[:100]:
        writer.write_line(line)  # no loop here: handed to the thread at once
    assert not writer.accepting  # ~9 KB queued behind a full pipe... and more:
    assert writer.problem is not None and "does not read" in writer.problem
    for line in kept[100:]:
        writer.write_line(line)  # a call under way: kept past the limit, never dropped
    shed_before = writer.shed_lines
    for k in range(100):
        writer.write_line(b'{"refused": %d}' % k, sheddable=True)  # past 2x the limit: shed
    assert writer.shed_lines == shed_before + 100 > 0

    out: list[bytes] = []
    reading = threading.Thread(target=_read_all, args=(r, out))
    reading.start()
    assert writer.close(timeout=10)
    os.close(w)
    reading.join(10)
    os.close(r)
    lines = b"".join(out).splitlines()
    assert len(b"".join(out)) == filler + sum(len(x) + 1 for x in lines[filler // 4096 :])
    mine = lines[filler // 4096 :]
    assert mine[:200] == kept  # all, in order, whole
    assert json.loads(mine[-1]) == {"event": "log.lines_shed", "level": "warning", "count": 100}
    assert writer.accepting and writer.pending_bytes == 0


def test_closed_pipe_is_an_error_that_refuses_calls_and_gives_up_the_exit_drain():
    r, w = os.pipe()
    os.close(r)  # nobody will ever read: EPIPE
    writer = LineWriter(w, limit=100)
    for k in range(10):
        writer.write_line(b"line %d" % k)
    assert not writer.close(timeout=5)
    assert not writer.accepting
    assert writer.error is not None and "BrokenPipe" in writer.error
    os.close(w)


def test_lines_from_several_threads_each_arrive_once_whole_and_in_their_order(tmp_path):
    with open(tmp_path / "out", "wb+") as out:
        writer = LineWriter(out.fileno())

        def emit(k: int) -> None:
            for n in range(500):
                writer.write_line(json.dumps({"thread": k, "n": n, "pad": "q" * 300}).encode())

        threads = [threading.Thread(target=emit, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert writer.close(timeout=10)
        out.seek(0)
        lines = [json.loads(x) for x in out.read().splitlines()]
    assert len(lines) == 2000
    for k in range(4):
        assert [x["n"] for x in lines if x["thread"] == k] == list(range(500))


_WORKER = """
import asyncio, json, sys
from sharewall.line_writer import LineWriter

async def main(k):
    writer = LineWriter(1)
    for n in range(3000):
        writer.write_line(json.dumps({"worker": k, "n": n, "pad": "w" * 400}).encode())
        if n % 100 == 0:
            await asyncio.sleep(0.002)  # batches of ~100 lines, each one write to a file
    await asyncio.sleep(0)
    assert writer.close(timeout=30)

asyncio.run(main(int(sys.argv[1])))
"""


def test_processes_sharing_a_regular_file_as_stdout_never_cut_into_each_others_lines(tmp_path):
    # As `proxy --workers N` with stdout redirected to a file: one open file, several writers.
    with open(tmp_path / "out", "wb+") as out:
        workers = [
            subprocess.Popen([sys.executable, "-c", _WORKER, str(k)], stdout=out) for k in range(3)
        ]
        for worker in workers:
            assert worker.wait(timeout=60) == 0
        out.seek(0)
        lines = [json.loads(x) for x in out.read().splitlines()]
    assert len(lines) == 9000
    for k in range(3):
        assert [x["n"] for x in lines if x["worker"] == k] == list(range(3000))
