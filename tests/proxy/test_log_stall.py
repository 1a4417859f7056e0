"""A proxy whose stdout reader stalls: calls are refused 503 once the log buffer is full, never
sent unlogged; no line is lost or reordered when the reader resumes, nor on a SIGTERM drain.

A real `sharewall proxy` with a 64 KiB log buffer (`--log-buffer`), its stdout a pipe this test
reads in a thread that it pauses and resumes.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from proxy_harness import REGISTRY_YAML, ProxyProcess, Upstreams, pins

pytestmark = pytest.mark.timeout(180)

BUFFER = 64 * 1024


class Reader:
    """Reads the proxy's stdout pipe in a thread while `reading` is set."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.reading = threading.Event()
        self.reading.set()
        self._chunks: list[bytes] = []
        self._stream = proxy.proc.stdout
        assert self._stream is not None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.reading.wait()
            chunk = self._stream.read1(65536)  # type: ignore[union-attr]
            if not chunk:
                return
            self._chunks.append(chunk)

    def join(self) -> None:
        self._thread.join(30)

    def decisions(self) -> list[dict]:
        data = b"".join(self._chunks)
        assert not data or data.endswith(b"\n")
        lines = [json.loads(x) for x in data.splitlines()]  # every line whole JSON
        return [x for x in lines if x.get("event") == "egress.decision"]


@pytest.fixture
def stalled(tmp_path: Path, upstreams: Upstreams) -> Iterator[tuple[ProxyProcess, Reader]]:
    proxy = ProxyProcess(
        tmp_path,
        [
            "--registry-file",
            str(REGISTRY_YAML),
            "--default-purpose",
            "service_delivery",
            "--log-buffer",
            str(BUFFER),
            *pins(upstreams),
        ],
        stdout_pipe=True,
    )
    reader = Reader(proxy)
    yield proxy, reader
    reader.reading.set()
    proxy.stop()
    reader.join()  # it read to the end: the pipe is ours to close
    proxy.proc.stdout.close()


def _readyz(proxy: ProxyProcess) -> requests.Response:
    return requests.get(f"{proxy.admin_url}/readyz", timeout=5, proxies={"http": ""})


def _buffered_bytes(proxy: ProxyProcess) -> float:
    """Log bytes the proxy holds, read once a hand-off to its writer thread has passed."""
    time.sleep(0.2)
    metrics = requests.get(f"{proxy.admin_url}/metrics", timeout=5, proxies={"http": ""}).text
    match = re.search(r"^sharewall_log_buffered_bytes (\S+)$", metrics, re.MULTILINE)
    assert match, "no sharewall_log_buffered_bytes on /metrics"
    return float(match.group(1))


def test_full_buffer_refuses_calls_then_recovers_with_every_line_in_order(stalled, upstreams):
    proxy, reader = stalled
    session = proxy.session()
    base = f"http://api.vendor.test:{upstreams.http_port}"
    run = uuid.uuid4().hex[:8]
    sent: list[tuple[str, int]] = []  # (path, status) in the order the calls were made

    def call(k: int) -> requests.Response:
        path = f"/stall-{run}-{k}"
        r = session.get(base + path, timeout=10)
        sent.append((path, r.status_code))
        return r

    assert call(0).status_code == 200
    reader.reading.clear()  # the log collector stops reading
    refused = None
    for k in range(1, 2000):  # the pipe (64 KiB) then the buffer (64 KiB) fill up
        r = call(k)
        if r.status_code != 200:
            refused = r
            break
    assert refused is not None, "no call was refused while stdout took no lines"
    assert refused.status_code == 503
    assert refused.json()["fault"] == "log_unavailable"
    forwarded_while_stalled = [p for p, status in sent[1:] if status == 200]
    assert len(forwarded_while_stalled) > 50  # the buffer absorbed a stall before refusing
    assert len(upstreams.find(f"stall-{run}-")) == 1 + len(forwarded_while_stalled)

    ready = _readyz(proxy)
    assert ready.status_code == 503
    assert any("stdout" in reason for reason in ready.json()["reasons"])
    health = requests.get(f"{proxy.admin_url}/healthz", timeout=5, proxies={"http": ""})
    assert health.status_code == 200  # the loop is free: the proxy is alive, only not ready

    reader.reading.set()  # the collector reads again
    deadline = time.monotonic() + 20
    while _readyz(proxy).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the reader resumed"
        time.sleep(0.05)
    assert call(10_000).status_code == 200

    # A drain on SIGTERM while the reader is stalled again: every line reaches stdout after.
    # Enough lines to fill the pipe and part of the buffer (what filled both, less 30%), and
    # more until some stay buffered past a hand-off to the writer (the reader's read under way
    # when it stalled may have taken a batch more than the first time).
    reader.reading.clear()
    numbers = iter(range(10_001, 20_000))
    for _ in range(len(forwarded_while_stalled) * 7 // 10):
        assert call(next(numbers)).status_code == 200
    while _buffered_bytes(proxy) == 0:
        for _ in range(10):
            assert call(next(numbers)).status_code == 200
    proxy.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert proxy.proc.poll() is None  # still holding lines nobody read
    reader.reading.set()
    assert proxy.proc.wait(30) == 0
    reader.join()

    mine = [x for x in reader.decisions() if f"/stall-{run}-" in x["path"]]
    assert [x["path"] for x in mine] == [p for p, _ in sent]  # none lost, none reordered
    assert len({x["decision_id"] for x in mine}) == len(sent)
    assert [x["status"] for x in mine] == [status for _, status in sent]
    assert mine[len(forwarded_while_stalled) + 1]["fault"] == "log_unavailable"
