"""`sharewall registry flows | triage | impact` and `apply --dry-run` with its impact."""

from __future__ import annotations

import asyncio
import gzip
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import orjson


async def sharewall(*args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SHAREWALL_TOKEN"}
    if token:
        env["SHAREWALL_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sharewall.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def ship(client, auth, decisions=(), ledger=()) -> None:
    body = gzip.compress(
        orjson.dumps({"proxy_id": "p1", "decisions": list(decisions), "ledger": list(ledger)})
    )
    headers = {**auth("proxy"), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    resp = await client.post("/v1/decisions", data=body, headers=headers)
    assert (await resp.json())["rejected"] == []


def blocked(recipient: str) -> dict:
    return {
        "time": datetime.now(UTC).isoformat(),
        "decision_id": uuid.uuid4().hex,
        "action": "deny",
        "reason_codes": ["CATEGORY_NOT_APPROVED"],
        "recipient_id": recipient,
        "host": f"{recipient}.example.com",
        "method": "POST",
        "path": "/v1/send",
        "purpose": "customer_support",
        "categories": ["contact.phone_number"],
        "source_workload": "support-app",
        "source_namespace": "support",
    }


def url_of(client) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_flows_prints_a_table_and_triage_sets_the_state(client, auth, tokens, unique):
    rid = unique("zendesk")
    flow = blocked(rid)
    await ship(client, auth, [flow])
    url = url_of(client)
    code, out, err = await sharewall(
        "registry", "flows", "--url", url, "--recipient", rid, token=tokens["security"]
    )
    assert code == 0, err
    header, row = out.strip().splitlines()
    assert header.split()[:3] == ["TIME", "DECISION", "MODE"]
    assert (
        flow["decision_id"] in row
        and "CATEGORY_NOT_APPROVED" in row
        and "support/support-app" in row
    )
    assert row.rstrip().endswith("new")

    code, out, err = await sharewall(
        "registry",
        "triage",
        flow["decision_id"],
        "false_positive",
        "--note",
        "test number",
        "--url",
        url,
        token=tokens["security"],
    )
    assert code == 0, err
    assert out.strip() == f"{flow['decision_id']} false_positive by sec-carol: test number"
    code, out, _ = await sharewall(
        "registry",
        "flows",
        "--url",
        url,
        "--state",
        "false_positive",
        "--since",
        "1h",
        token=tokens["engineer"],
    )
    assert flow["decision_id"] in out


async def test_flows_and_triage_mistakes_are_one_line_and_exit_2(client, auth, tokens):
    url = url_of(client)
    code, out, err = await sharewall("registry", "flows", "--url", url)
    assert (
        (code, out) == (2, "") and len(err.strip().splitlines()) == 1 and "SHAREWALL_TOKEN" in err
    )
    code, _, err = await sharewall("registry", "flows", "--since", "yesterday")
    assert code == 2 and "Traceback" not in err
    code, _, err = await sharewall(
        "registry", "triage", "x", "ignored", "--url", url, token=tokens["security"]
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    # An engineer may read flows but not triage them: the API's 403, one line, exit 2.
    code, _, err = await sharewall(
        "registry", "triage", "x", "acknowledged", "--url", url, token=tokens["engineer"]
    )
    assert code == 2 and err.startswith("error: 403")


async def test_impact_and_apply_dry_run_print_the_flips(
    client, auth, tokens, unique, db_url, tmp_path
):
    rid = unique("vendor")
    host = f"{rid}.example.com"

    def registry_yaml(categories: str) -> str:
        return f"""
recipients:
  - id: {rid}
    name: {rid}
    kind: vendor
    status: approved
    regions: [SG]
    hosts: [{host}]
    grants:
      - purpose: customer_support
        categories: [{categories}]
        legal_basis: contract
"""

    live = tmp_path / "live.yaml"
    live.write_text(registry_yaml("contact.email, contact.phone_number"))
    code, _, err = await sharewall("registry", "apply", str(live), "--db", db_url)
    assert code == 0, err
    minute = (datetime.now(UTC) - timedelta(minutes=5)).replace(second=0, microsecond=0)
    fact = {
        "kind": "fact",
        "minute": minute.isoformat(),
        "source_workload": "support-app",
        "source_namespace": "support",
        "host": host,
        "port": 443,
        "recipient_id": rid,
        "purpose": "customer_support",
        "categories": ["contact.phone_number"],
        "scheme": "https",
        "inspected": True,
        "tls_upstream": True,
        "complete": True,
        "verdict": "allow",
        "reason_codes": [],
        "count": 42,
    }
    await ship(client, auth, ledger=[fact])
    change = tmp_path / "change.yaml"
    change.write_text(registry_yaml("contact.email"))

    code, out, err = await sharewall(
        "registry", "impact", str(change), "--url", url_of(client), token=tokens["engineer"]
    )
    assert code == 0, err
    assert "allow -> deny: 42 calls" in out
    [line] = [x for x in out.splitlines() if rid in x]
    assert line.split() == [
        "allow->deny",
        "42",
        "support/support-app",
        rid,
        "customer_support",
        "contact.phone_number",
        "CATEGORY_NOT_APPROVED",
    ]

    # Applied as a whole registry, the file also removes every other test's recipient: only
    # this recipient's rows matter here.
    code, out, err = await sharewall("registry", "apply", str(change), "--dry-run", "--db", db_url)
    assert code == 0, err
    diff, _, impact = out.partition("\nimpact over ")
    assert f"~ recipient {rid}" in diff
    assert any(rid in x and "42" in x for x in impact.splitlines())
