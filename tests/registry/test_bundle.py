"""The OPA bundle: layout OPA expects, deterministic bytes, and contents that load in regorus."""

from __future__ import annotations

import orjson
import pytest
import regorus

from registry.bundle import build_bundle, bundle_etag, read_bundle
from registry.snapshot import Grant, Recipient, Snapshot
from registry.taxonomy import TAXONOMY_RELPATH, policy_dir


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
    second = build_bundle(snap.model_copy(), revision="r1", root=policy_tree)
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
