"""A replay whose policy fails: the caller gets a 503, and the real `sharewall registry serve`
releases the replay's regorus engines on the thread that built them.

A regorus `Engine` is a pyo3 `unsendable` class. The replay runs on an `asyncio.to_thread`
worker; if its error reached the event loop with frames holding the replay's engines, they
would be released there, which pyo3 refuses: it leaks them and prints "Engine is unsendable,
but is being dropped on another thread" on the process's stderr.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import requests

from sharewall.taxonomy import TAXONOMY_RELPATH, policy_dir

# Two complete definitions of the decision with different values: every evaluation is an
# error ("rule conflicts"), as a broken policy's would be, while the policy still loads.
CONFLICTING_DECISION = """package sharewall.egress

decision := {"allow": true, "action": "allow", "reasons": []} if input.date
decision := {"allow": false, "action": "deny", "reasons": []} if input.date
"""


@pytest.fixture
def failing_policies(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    (root / TAXONOMY_RELPATH).parent.mkdir(parents=True)
    shutil.copy(policy_dir() / TAXONOMY_RELPATH, root / TAXONOMY_RELPATH)
    (root / "sharewall" / "egress").mkdir(parents=True)
    (root / "sharewall" / "egress" / "decision.rego").write_text(CONFLICTING_DECISION)
    return root


@pytest.fixture
def registry(db_url: str, failing_policies: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`sharewall registry serve` on the failing policies; its URL and its stdout+stderr file."""
    log_path = tmp_path / "registry.log"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["SHAREWALL_POLICY_DIR"] = str(failing_policies)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharewall.cli", "registry", "serve", "--db", db_url,
             "--listen", "127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        url = None
        while url is None:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            for line in log_path.read_text().splitlines():
                if '"registry.listening"' in line:
                    url = f"http://127.0.0.1:{json.loads(line)['port']}"
            time.sleep(0.05)
        yield url, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_failing_replay_is_a_503_and_releases_its_engines_on_their_thread(
    registry: tuple[str, Path], tokens: dict[str, str]
) -> None:
    url, log_path = registry
    session = requests.Session()
    session.trust_env = False
    host = "helpdesk-impact-failure.example.com"
    minute = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    fact = {
        "kind": "fact", "minute": minute.isoformat(), "source_workload": "support-app",
        "source_namespace": "support", "host": host, "port": 443, "recipient_id": "",
        "purpose": "customer_support", "categories": ["contact.email"], "scheme": "https",
        "inspected": True, "tls_upstream": True, "complete": True, "verdict": "deny",
        "reason_codes": ["UNKNOWN_RECIPIENT"], "count": 3,
    }  # fmt: skip
    shipped = session.post(
        f"{url}/v1/decisions",
        data=gzip.compress(orjson.dumps({"proxy_id": "p1", "decisions": [], "ledger": [fact]})),
        headers={
            "Authorization": f"Bearer {tokens['proxy']}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
        timeout=30,
    )
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["rejected"] == []
    # A candidate naming the recorded host: its calls must be decided again, and each
    # evaluation fails.
    candidate = {
        "id": "helpdesk-impact-failure", "name": "Helpdesk", "kind": "vendor",
        "status": "approved", "regions": ["SG"], "hosts": [host],
        "grants": [{"purpose": "customer_support", "categories": ["contact.email"]}],
    }  # fmt: skip
    for _ in range(3):
        resp = session.post(
            f"{url}/v1/impact",
            json={"registry": candidate},
            headers={"Authorization": f"Bearer {tokens['security']}"},
            timeout=60,
        )
        assert resp.status_code == 503, resp.text
        assert resp.json()["type"].endswith("/policy-unavailable")
    # The process is still whole, and has said nothing of engines released off their thread.
    assert session.get(f"{url}/healthz", timeout=10).status_code == 200
    log = log_path.read_text(errors="replace")
    assert "unsendable" not in log, log[-3000:]
