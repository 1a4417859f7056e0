"""The OPA bundle: layout OPA expects, deterministic bytes, and contents that load in regorus."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
import regorus

from proxy.decision import Call, build_policy_input
from proxy.engines import create_engine
from proxy.inspect.model import Finding, Inspection
from registry.bundle import build_bundle, bundle_etag, read_bundle
from registry.state import bump_snapshot_version
from sharewall.registry_file import load_registry_file
from sharewall.snapshot import Grant, Recipient, Snapshot
from sharewall.taxonomy import TAXONOMY_RELPATH, policy_dir

EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"


def _snapshot(status: str = "approved") -> Snapshot:
    twilio = Recipient(
        id="twilio",
        name="Twilio Inc.",
        kind="ott_provider",
        status=status,
        regions=("SG",),
        hosts=("api.twilio.com",),
        grants=(Grant(purpose="service_delivery", categories=("contact.phone_number",)),),
    )
    return Snapshot(version=7, recipients=(twilio,)).with_revision()


@pytest.fixture
def policy_tree(tmp_path):
    """A small policy folder: one rule reading the bundle's registry data, a test file, the taxonomy."""
    (tmp_path / "sharewall" / "probe").mkdir(parents=True)
    (tmp_path / "sharewall" / "probe" / "probe.rego").write_text(
        "package sharewall.probe\n\n"
        "status := data.sharewall.registry.recipients[input.recipient_id].status\n"
        "kinds := count(data.sharewall.taxonomy.recipient_kinds)\n"
    )
    (tmp_path / "sharewall" / "probe" / "probe_test.rego").write_text(
        "package sharewall.probe_test\n\ntest_nothing if true\n"
    )
    taxonomy = tmp_path / TAXONOMY_RELPATH
    taxonomy.parent.mkdir(parents=True)
    taxonomy.write_bytes((policy_dir() / TAXONOMY_RELPATH).read_bytes())
    # A stale registry data file on disk must never shadow the generated one.
    stale = tmp_path / "sharewall" / "registry" / "data.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"recipients": {}}')
    return tmp_path


def _load_into_regorus(files: dict[str, bytes]) -> regorus.Engine:
    """Load a bundle like OPA does: each data.json at the path of its folder, every policy file."""
    engine = regorus.Engine()
    data: dict = {}
    for name, body in files.items():
        if name.endswith(".rego"):
            engine.add_policy(name, body.decode())
        elif name.endswith("data.json"):
            *folders, _ = name.split("/")
            node = data
            for part in folders[:-1]:
                node = node.setdefault(part, {})
            node[folders[-1]] = orjson.loads(body)
    # regorus refuses to merge two documents that share a top-level key: add the merged tree once.
    engine.add_data_json(orjson.dumps(data).decode())
    return engine


def test_bundle_has_manifest_registry_data_taxonomy_and_policies_without_tests(policy_tree):
    snap = _snapshot()
    files = read_bundle(build_bundle(snap, revision=snap.revision, root=policy_tree))
    assert sorted(files) == [
        ".manifest",
        "sharewall/probe/probe.rego",
        "sharewall/registry/data.json",
        "sharewall/taxonomy/data.json",
    ]
    manifest = orjson.loads(files[".manifest"])
    assert manifest["revision"] == snap.revision
    assert manifest["roots"] == ["sharewall"]
    assert orjson.loads(files["sharewall/registry/data.json"]) == orjson.loads(
        orjson.dumps(snap.policy_data())
    )


def test_same_snapshot_gives_same_bytes_and_etag(policy_tree):
    snap = _snapshot()
    first = build_bundle(snap, revision="r1", root=policy_tree)
    second = build_bundle(snap.replace(), revision="r1", root=policy_tree)
    assert first == second
    assert bundle_etag(first) == bundle_etag(second)


def test_changed_snapshot_changes_etag(policy_tree):
    before = build_bundle(_snapshot("approved"), revision="r1", root=policy_tree)
    after = build_bundle(_snapshot("suspended"), revision="r1", root=policy_tree)
    assert bundle_etag(before) != bundle_etag(after)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param("approved", "approved", id="registry data at data.sharewall.registry"),
        pytest.param("revoked", "revoked", id="a revoked recipient reads as revoked"),
    ],
)
def test_bundle_contents_load_in_regorus_at_their_data_paths(policy_tree, status, expected):
    snap = _snapshot(status)
    engine = _load_into_regorus(read_bundle(build_bundle(snap, revision="r", root=policy_tree)))
    engine.set_input_json('{"recipient_id": "twilio"}')
    assert engine.eval_rule("data.sharewall.probe.status") == expected
    assert engine.eval_rule("data.sharewall.probe.kinds") == 6


def test_default_policy_dir_bundle_ships_the_taxonomy():
    files = read_bundle(build_bundle(_snapshot(), revision="r"))
    assert TAXONOMY_RELPATH.as_posix() in files
    assert not any(name.endswith("_test.rego") for name in files)


# -- the bundle is the same policy as the embedded engine -----------------------------------


def _policy_inputs(snapshot: Snapshot) -> list[dict]:
    """A spread of calls: every recipient, several purposes, several data mixes, http and https."""
    mixes = [
        (),
        (Finding("contact.phone_number", "form:To", "phone"),),
        (Finding("mobile.sms_consent", "json:$.optin", "key:sms_consent"),),
        (
            Finding("contact.email", "json:$.email", "email"),
            Finding("comms.content", "form:Body", "key"),
        ),
    ]
    inputs = []
    for recipient in (*snapshot.recipients, None):
        host = (
            recipient.hosts[0].removeprefix("*.")
            if recipient and recipient.hosts
            else "unknown.example"
        )
        for purpose in ("service_delivery", "marketing", "customer_support", "nonsense", None):
            for findings in mixes:
                for scheme in ("https", "http"):
                    call = Call(
                        method="POST",
                        scheme=scheme,
                        host=host,
                        port=443 if scheme == "https" else 80,
                        path="/v1/send",
                        inspected=True,
                        tls_upstream=scheme == "https",
                        recipient_id=recipient.id if recipient else None,
                        purpose=purpose,
                        source_workload="sms-gateway",
                        source_namespace="messaging",
                        request_id="r1",
                    )
                    inputs.append(
                        build_policy_input(call, Inspection(findings=findings), date="2026-11-28")
                    )
    return inputs


async def test_bundle_gives_the_same_decisions_as_the_embedded_engine():
    snapshot = load_registry_file(EXAMPLE_REGISTRY)
    from_bundle = _load_into_regorus(read_bundle(build_bundle(snapshot, revision="r")))
    embedded = create_engine("embedded")
    await embedded.set_snapshot(snapshot)
    seen_codes: set[str] = set()
    allowed = 0
    for policy_input in _policy_inputs(snapshot):
        expected = await embedded.evaluate(policy_input)
        from_bundle.set_input_json(orjson.dumps(policy_input).decode())
        got = from_bundle.eval_rule("data.sharewall.egress.decision")
        assert got == expected, policy_input
        allowed += bool(expected["allow"])
        seen_codes.update(r["code"] for r in expected["reasons"])
    # The table must exercise both outcomes and many rules, or equality would prove little.
    assert allowed > 0
    assert len(seen_codes) >= 6, seen_codes


# -- GET /v1/bundles/sharewall.tar.gz ----------------------------------------------------------

BUNDLE_URL = "/v1/bundles/sharewall.tar.gz"


async def _bump_version(sessions) -> int:
    async with sessions() as session:
        version = await bump_snapshot_version(session)
        await session.commit()
        return version


async def test_bundle_endpoint_serves_gzip_with_etag_and_304(client, auth, sessions):
    version = await _bump_version(sessions)
    resp = await client.get(BUNDLE_URL, headers=auth("proxy"))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/gzip"
    files = read_bundle(await resp.read())
    assert orjson.loads(files["sharewall/registry/data.json"])["version"] == version
    assert orjson.loads(files[".manifest"])["revision"].startswith(f"{version}-")
    etag = resp.headers["ETag"]
    again = await client.get(BUNDLE_URL, headers={**auth("proxy"), "If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param("proxy", 200, id="proxy (OPA sidecar credentials)"),
        pytest.param("admin", 200, id="admin"),
        pytest.param("security", 200, id="security"),
        pytest.param("engineer", 403, id="engineer is refused"),
        pytest.param(None, 401, id="no token"),
    ],
)
async def test_bundle_roles(client, auth, role, status):
    resp = await client.get(BUNDLE_URL, headers=auth(role) if role else {})
    assert resp.status == status


async def test_opa_long_poll_times_out_with_304_and_long_poll_content_type(client, auth):
    etag = (await client.get(BUNDLE_URL, headers=auth("proxy"))).headers["ETag"]
    started = time.monotonic()
    resp = await client.get(
        BUNDLE_URL, headers={**auth("proxy"), "If-None-Match": etag, "Prefer": "wait=1"}
    )
    assert resp.status == 304
    assert resp.headers["Content-Type"] == "application/vnd.openpolicyagent.bundles"
    assert 0.9 <= time.monotonic() - started < 10  # held for the wait, then answered


async def test_opa_long_poll_returns_the_new_bundle_within_a_second(client, auth, sessions):
    etag = (await client.get(BUNDLE_URL, headers=auth("proxy"))).headers["ETag"]
    poll = asyncio.create_task(
        client.get(
            BUNDLE_URL, headers={**auth("proxy"), "If-None-Match": etag, "Prefer": "wait=30"}
        )
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    version = await _bump_version(sessions)
    # Woken by the change: the 30 s wait running out would fail this 5 s bound (the 1 s
    # figure is bench/'s).
    resp = await asyncio.wait_for(poll, 5)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.openpolicyagent.bundles"
    assert resp.headers["ETag"] != etag
    data = orjson.loads(read_bundle(await resp.read())["sharewall/registry/data.json"])
    assert data["version"] == version
