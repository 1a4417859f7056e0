"""Every listener of the real proxy keeps the accept queue it asks for (1024), workers' too.

`ss -ltn` shows a listening socket's backlog as its Send-Q. asyncio's `start_server(sock=...)`
listens again with its own default (100) unless told otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from proxy_harness import REGISTRY_YAML, ProxyProcess

LISTEN_BACKLOG = 1024
SS = shutil.which("ss")


def _backlogs(port: int) -> list[int]:
    """The Send-Q (= backlog) of every TCP socket listening on 127.0.0.1:`port`."""
    assert SS is not None
    out = subprocess.run(
        [SS, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.startswith("LISTEN")]


@pytest.mark.skipif(SS is None, reason="no ss (iproute2)")
@pytest.mark.parametrize("workers", [1, 2])
def test_the_proxys_listeners_keep_a_backlog_of_1024(tmp_path: Path, workers: int) -> None:
    expected = min(LISTEN_BACKLOG, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    proxy = ProxyProcess(
        tmp_path,
        [
            "--registry-file",
            str(REGISTRY_YAML),
            "--transparent-listen",
            "127.0.0.1:0",
            "--workers",
            str(workers),
        ],
    )
    try:
        ports = json.loads((tmp_path / "ports.json").read_text())
        listen, transparent = ports["listen"][1], ports["transparent"][1]
        deadline = time.monotonic() + 60
        while len(_backlogs(listen)) < workers or len(_backlogs(transparent)) < workers:
            assert time.monotonic() < deadline, proxy.log_text()[-2000:]
            time.sleep(0.1)
        assert _backlogs(listen) == [expected] * workers
        assert _backlogs(transparent) == [expected] * workers
    finally:
        proxy.stop()
