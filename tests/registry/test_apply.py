"""`registry apply` (CLI --db, CLI --url, POST /v1/apply): diff, dry run, idempotence, roles."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from registry.state import current_version
from sharewall.cli import main

P = "https://sharewall.dev/problems/"

BASE = {
    "recipients": [
        {
            "id": "acme-sms",
            "name": "Acme SMS",
            "kind": "ott_provider",
            "status": "approved",
            "regions": ["SG"],
            "hosts": ["api.acme-sms.example", "*.acme-sms.example"],
            "grants": [
                {
                    "purpose": "service_delivery",
                    "categories": ["contact.phone_number", "comms.content"],
                    "legal_basis": "contract",
                }
            ],
        },
        {
            "id": "helpdesk",
            "name": "Helpdesk Ltd",
            "kind": "vendor",
            "status": "proposed",
            "hosts": ["helpdesk.example"],
            "grants": [{"purpose": "customer_support", "categories": ["contact.email"]}],
        },
    ]
}


def edited():
    """BASE with a host moved, a grant changed, a grant added, a recipient removed/added."""
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    acme = doc["recipients"][0]
    acme["hosts"] = ["api.acme-sms.example"]
    acme["grants"][0]["categories"] = ["contact.phone_number"]
    acme["grants"].append({"purpose": "billing", "categories": ["contact.name"]})
    doc["recipients"][1] = {
        "id": "carrier-x",
        "name": "Carrier X",
        "kind": "carrier",
        "status": "approved",
        "hosts": ["*.carrier-x.example"],
    }
    return doc


def write(tmp_path, doc, name="registry.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def run_cli(capsys, *argv):
    code = main(["registry", "apply", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def empty_registry(db_url, tmp_path, capsys):
    """Every test of this module starts from an empty registry (apply is global)."""
    code, _, err = run_cli(
        capsys, write(tmp_path, {"recipients": []}, "empty.yaml"), "--db", db_url
    )
    assert code == 0, err


def test_apply_db_prints_the_diff_then_no_changes(db_url, tmp_path, capsys, empty_registry):
    path = write(tmp_path, BASE)
    code, out, _ = run_cli(capsys, path, "--db", db_url, "--dry-run")
    assert code == 0
    assert "+ recipient acme-sms (ott_provider, approved)" in out
    assert "2 added, 0 changed, 0 removed (not applied)" in out
    code, out, _ = run_cli(capsys, path, "--db", db_url, "--dry-run")
    assert "2 added" in out  # the dry run wrote nothing
    code, out, _ = run_cli(capsys, path, "--db", db_url)
    assert code == 0
    # The operator's bootstrap writes acme-sms approved as the file says; helpdesk is a
    # proposal a reviewer approves in the registry.
    assert "2 added, 0 changed, 0 removed\nawaiting approval (1): helpdesk" in out
    code, out, _ = run_cli(capsys, path, "--db", db_url)
    assert (code, out.strip()) == (0, "no changes")


def test_apply_db_stages_changes_of_live_recipients_and_removes_recipients(
    db_url, tmp_path, capsys, empty_registry
):
    import json

    run_cli(capsys, write(tmp_path, BASE), "--db", db_url)
    path = write(tmp_path, edited(), "edited.yaml")
    code, out, err = run_cli(capsys, path, "--db", db_url, "--json")
    assert code == 0, err
    diff = json.loads(out)
    assert diff["applied"] is True
    recipients = diff["recipients"]
    assert [r["id"] for r in recipients["added"]] == ["carrier-x"]
    assert recipients["removed"] == ["helpdesk"]
    (acme,) = recipients["changed"]
    assert acme["pending_approval"] is True  # acme-sms is live: its change awaits approval
    assert diff["awaiting_approval"] == ["acme-sms"]
    assert acme["hosts"] == {"added": [], "removed": ["*.acme-sms.example"]}
    assert [g["purpose"] for g in acme["grants"]["added"]] == ["billing"]
    assert acme["grants"]["changed"][0]["fields"]["categories"] == [
        ["comms.content", "contact.phone_number"],
        ["contact.phone_number"],
    ]
    code, out, _ = run_cli(capsys, path, "--db", db_url)
    assert out.strip() == "no changes"


async def test_apply_db_keeps_the_live_version_in_the_snapshot_until_approved(
    client, auth, db_url, tmp_path, capsys, empty_registry
):
    await asyncio.to_thread(run_cli, capsys, write(tmp_path, BASE), "--db", db_url)
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["recipients"][0]["inspect_tls"] = True
    doc["recipients"][0]["hosts"].append("exfil.example")
    code, _, err = await asyncio.to_thread(
        run_cli, capsys, write(tmp_path, doc, "weaker.yaml"), "--db", db_url
    )
    assert code == 0, err
    snap = await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    acme = next(r for r in snap["recipients"] if r["id"] == "acme-sms")
    assert "exfil.example" not in acme["hosts"]
    assert acme["inspect_tls"] is False
    current = await client.get("/v1/recipients/acme-sms", headers=auth("security"))
    resp = await client.post(
        "/v1/recipients/acme-sms/approve",
        headers={**auth("security"), "If-Match": current.headers["ETag"]},
    )
    assert resp.status == 200, await resp.text()
    snap = await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    acme = next(r for r in snap["recipients"] if r["id"] == "acme-sms")
    assert "exfil.example" in acme["hosts"]
    assert acme["inspect_tls"] is True


async def test_apply_api_dry_run_then_apply_bumps_version_once(
    client, auth, sessions, db_url, tmp_path, capsys, empty_registry
):
    async with sessions() as session:
        start = await current_version(session)
    resp = await client.post("/v1/apply", json={**BASE, "dry_run": True}, headers=auth("security"))
    assert resp.status == 200
    dry = await resp.json()
    assert (dry["changed"], dry["applied"]) == (True, False)
    async with sessions() as session:
        assert await current_version(session) == start
    resp = await client.post("/v1/apply", json=BASE, headers=auth("security"))
    applied = await resp.json()
    assert applied["applied"] is True
    assert applied["version"] == start + 1
    again = await (await client.post("/v1/apply", json=BASE, headers=auth("security"))).json()
    assert (again["changed"], again["applied"]) == (False, False)
    async with sessions() as session:
        assert await current_version(session) == start + 1
    # Through the API nothing is approved by applying: the applier cannot approve it either.
    assert applied["awaiting_approval"] == ["acme-sms", "helpdesk"]
    current = await client.get("/v1/recipients/acme-sms", headers=auth("security"))
    acme = await current.json()
    assert acme["status"] == "proposed"
    assert acme["pending_change"]["authors"] == ["sec-carol"]
    etag = {"If-Match": current.headers["ETag"]}
    resp = await client.post(
        "/v1/recipients/acme-sms/approve", headers={**auth("security"), **etag}
    )
    assert resp.status == 403
    assert (await resp.json())["type"] == P + "four-eyes"
    resp = await client.post(
        "/v1/recipients/acme-sms/approve", headers={**auth("security2"), **etag}
    )
    assert resp.status == 200
    acme = await resp.json()
    assert [(g["status"], g["approved_by"]) for g in acme["grants"]] == [("approved", "sec-dave")]
    trail = await (
        await client.get("/v1/audit", params={"action": "registry.apply"}, headers=auth("admin"))
    ).json()
    assert trail["items"][0]["after"]["added"] == ["acme-sms", "helpdesk"]


async def test_apply_via_cli_url_uses_the_api(client, tokens, tmp_path, capsys, empty_registry):
    url = str(client.make_url("/"))
    path = write(tmp_path, BASE)
    argv = ["registry", "apply", path, "--url", url, "--token", tokens["security"]]
    code = await asyncio.to_thread(main, [*argv, "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(not applied)" in out
    assert await asyncio.to_thread(main, argv) == 0
    assert "2 added, 0 changed, 0 removed" in capsys.readouterr().out
    assert await asyncio.to_thread(main, argv) == 0
    # The server in this process logs to the same stdout; the CLI's answer is the last line.
    assert capsys.readouterr().out.strip().splitlines()[-1] == "no changes"
    code = await asyncio.to_thread(main, [*argv[:-1], "sw_wrong"])
    assert code == 2
    assert "401" in capsys.readouterr().err


async def test_an_engineer_may_apply_proposals_but_not_suspend_a_live_recipient(
    client, auth, db_url, tmp_path, capsys, empty_registry
):
    resp = await client.post("/v1/apply", json=BASE, headers=auth("engineer"))
    assert resp.status == 200  # everything it adds is a proposal
    assert (await resp.json())["awaiting_approval"] == ["acme-sms", "helpdesk"]
    await asyncio.to_thread(run_cli, capsys, write(tmp_path, BASE), "--db", db_url)  # live now
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["recipients"][0]["status"] = "suspended"
    resp = await client.post("/v1/apply", json=doc, headers=auth("engineer"))
    assert resp.status == 403
    assert (await resp.json())["type"] == P + "apply-needs-reviewer"
    resp = await client.post("/v1/apply", json=doc, headers=auth("security"))
    assert resp.status == 200
    acme = await (await client.get("/v1/recipients/acme-sms", headers=auth("security"))).json()
    assert acme["status"] == "suspended"
    assert (await client.post("/v1/apply", json=BASE, headers=auth("proxy"))).status == 403


@pytest.mark.parametrize(
    ("doc", "status"),
    [
        pytest.param({"recipients": [{"id": "x", "name": "X", "kind": "pirate"}]}, 422, id="kind"),
        pytest.param(
            {
                "recipients": [
                    {
                        "id": "x",
                        "name": "X",
                        "kind": "vendor",
                        "grants": [{"purpose": "billing", "categories": ["no.such"]}],
                    }
                ]
            },
            422,
            id="category",
        ),
        pytest.param(
            {
                "recipients": [
                    {"id": "a", "name": "A", "kind": "vendor", "hosts": ["same.example"]},
                    {"id": "b", "name": "B", "kind": "vendor", "hosts": ["same.example"]},
                ]
            },
            422,
            id="host listed twice",
        ),
        pytest.param({"recipients": [], "extra": 1}, 422, id="unknown field"),
    ],
)
async def test_invalid_documents_are_refused(client, auth, doc, status):
    resp = await client.post("/v1/apply", json=doc, headers=auth("security"))
    assert resp.status == status, await resp.text()
