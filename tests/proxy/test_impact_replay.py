"""The impact replay checked against the proxy itself.

A real proxy following a real registry records its calls; the registry replays the recorded
facts with a candidate registry (`POST /v1/impact`); a second real proxy running the candidate
file is sent the very same calls. The flips the registry predicts are the flips the proxy makes.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
import requests
from proxy_harness import PHONE, REGISTRY_YAML, ProxyProcess, Upstreams, pins
from registry_harness import RegistryProcess, api, ship, wait_ready
from registry_harness import run_cli as _run

from sharewall.registry_file import decode_registry_text

UNKNOWN_HOST = "api.unknown.test"

# Three processes (a registry and two proxies) on a shared machine: more than the default.
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    from proxy_harness import free_port

    workdir = tmp_path_factory.mktemp("impact-registry")
    db_url = f"sqlite+aiosqlite:///{workdir / 'registry.sqlite'}"
    _run("registry", "apply", str(REGISTRY_YAML), "--db", db_url)
    tokens = {
        role: _run(
            "registry", "tokens", "create", "--role", role, "--name", f"t-{role}", "--db", db_url
        )
        for role in ("proxy", "security")
    }
    reg = RegistryProcess(workdir, db_url, free_port())
    reg.start()
    yield reg, tokens
    reg.stop()


def candidate_document() -> dict:
    """The test registry, changed: origin loses comms.content and gains e-mail; a new recipient
    owns the unknown host; the partner affiliate is suspended; vendor may do marketing."""
    doc = decode_registry_text(REGISTRY_YAML.read_text())
    by_id = {r["id"]: r for r in doc["recipients"]}
    by_id["origin"]["grants"][0]["categories"] = ["contact.phone_number", "contact.email"]
    by_id["partner"]["status"] = "suspended"
    by_id["vendor"]["grants"].append(
        {"purpose": "marketing", "categories": ["contact.email"], "legal_basis": "consent"}
    )
    doc["recipients"].append(
        {
            "id": "newco",
            "name": "A vendor that was not registered",
            "kind": "vendor",
            "status": "approved",
            "regions": ["SG"],
            "hosts": [UNKNOWN_HOST],
            "grants": [
                {
                    "purpose": "service_delivery",
                    "categories": ["contact.phone_number"],
                    "legal_basis": "contract",
                }
            ],
        }
    )
    return doc


def calls(upstreams: Upstreams) -> list[dict]:
    """A mix of calls: allowed, blocked for several reasons, several purposes and hosts."""
    http = upstreams.http_port
    vendor, origin = f"http://api.vendor.test:{http}", f"http://origin.vendor.test:{http}"
    unknown = f"http://{UNKNOWN_HOST}:{http}"
    phone = {"to": PHONE}
    both = {"to": PHONE, "message": "Your verification code is 4821, reply STOP to opt out"}
    email = {"to": PHONE, "email": "jane.doe@example.com"}
    out = []

    def add(n: int, url: str, *, purpose: str | None = None, body: dict | None = None) -> None:
        for _ in range(n):
            out.append({"url": url, "purpose": purpose, "body": body})

    add(3, vendor)  # no personal data: allowed
    add(2, vendor, body=phone)  # plain HTTP: PERSONAL_DATA_IN_CLEARTEXT
    add(2, vendor, purpose="marketing", body={"email": "jane.doe@example.com"})
    add(4, origin, body=phone)  # TLS origination, granted: allowed
    add(3, origin, body=both)  # comms.content granted now, not in the candidate
    add(2, origin, body=email)  # e-mail not granted now, granted in the candidate
    add(2, origin, purpose="marketing", body=phone)  # MOBILE_INFO_FOR_MARKETING either way
    add(3, unknown)  # UNKNOWN_RECIPIENT now, newco in the candidate
    add(1, origin, purpose="no_such_purpose", body=phone)
    return out


def send(proxy: ProxyProcess, call: dict, marker: str) -> int:
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy.url}
    headers = {"X-Sharewall-Purpose": call["purpose"]} if call["purpose"] else {}
    resp = session.post(f"{call['url']}/{marker}", json=call["body"], headers=headers, timeout=10)
    return resp.status_code


def run_calls(proxy: ProxyProcess, plan: list[dict], run: str) -> list[dict]:
    """Send every call; return each call's `egress.decision` line, in order."""
    lines = []
    for index, call in enumerate(plan):
        marker = f"impact-{run}-{index}-{uuid.uuid4().hex[:6]}"
        send(proxy, call, marker)
        [line] = proxy.decisions_for(marker)
        lines.append(line)
    return lines


def proxy_args(upstreams: Upstreams) -> list[str]:
    return [
        "--default-purpose",
        "service_delivery",
        *pins(upstreams),
        "--resolve",
        f"{UNKNOWN_HOST}:{upstreams.http_port}:127.0.0.1",
    ]


def ship_pending_facts(reg: RegistryProcess, token: str, spool: Path) -> None:
    """Ship the counts of the unfinished minute a stopped proxy keeps for its next run.

    The proxy ships a minute once it is over; rather than wait for the minute to end, the test
    sends the rows the proxy saved, exactly as its shipper would.
    """
    pending = spool / "ledger-pending.json"
    if not pending.exists():
        return
    rows = orjson.loads(pending.read_bytes())
    assert any(r.get("kind") == "fact" for r in rows)
    answer = ship(reg, token, {"proxy_id": "impact-test", "decisions": [], "ledger": rows})
    assert answer["rejected"] == []


def proxy_flips(before: list[dict], after: list[dict]) -> tuple[Counter, dict[str, int]]:
    flips: Counter = Counter()
    totals = {"allow_to_deny": 0, "deny_to_allow": 0}
    for one, two in zip(before, after, strict=True):
        if one["action"] == two["action"]:
            continue
        totals[f"{one['action']}_to_{two['action']}"] += 1
        reasons = two["reason_codes"] if two["action"] == "deny" else one["reason_codes"]
        recipient = two["recipient_id"] or one["recipient_id"]
        for code in reasons:
            flips[(one["action"], two["action"], recipient, one["purpose"], code)] += 1
    return flips, totals


def test_impact_predicts_the_flips_a_proxy_running_the_candidate_makes(
    registry, upstreams, tmp_path
):
    reg, tokens = registry
    plan = calls(upstreams)

    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live = ProxyProcess(
        live_dir, ["--registry-url", reg.url, "--token", tokens["proxy"], *proxy_args(upstreams)]
    )
    try:
        wait_ready(live)
        recorded = run_calls(live, plan, "live")
    finally:
        live.stop()
    ship_pending_facts(reg, tokens["proxy"], live_dir / "spool")

    candidate = candidate_document()
    candidate_file = tmp_path / "candidate.yaml"
    candidate_file.write_text(json.dumps(candidate))  # JSON is YAML
    resp = api(reg, tokens["security"], "POST", "/v1/impact", json={"registry": candidate})
    assert resp.status_code == 200, resp.text
    impact = resp.json()
    assert impact["replayed"] == len(plan)

    cand_dir = tmp_path / "candidate"
    cand_dir.mkdir()
    replayer = ProxyProcess(
        cand_dir, ["--registry-file", str(candidate_file), *proxy_args(upstreams)]
    )
    try:
        wait_ready(replayer)
        replayed = run_calls(replayer, plan, "candidate")
    finally:
        replayer.stop()

    expected, totals = proxy_flips(recorded, replayed)
    predicted: Counter = Counter()
    for flip in impact["flips"]:
        assert (flip["source"], flip["namespace"]) == ("test-workload", "test-ns")
        key = (flip["from"], flip["to"], flip["recipient_id"], flip["purpose"], flip["reason"])
        predicted[key] += flip["count"]
    assert impact["totals"] == totals
    assert predicted == expected
    # The plan exercises both directions, or the comparison would prove little.
    assert totals["allow_to_deny"] > 0 and totals["deny_to_allow"] > 0
