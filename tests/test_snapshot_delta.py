"""Snapshot deltas: a follower that applies deltas ends with exactly the snapshot a full load gives."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from sharewall.snapshot import Snapshot, content_revision
from sharewall.snapshot_delta import (
    DeltaError,
    EncodedSnapshot,
    HeldSnapshot,
    encode_delta,
    fingerprint,
    revision_of_parts,
)

GENERATED_AT = "2026-11-30T02:00:00Z"


def recipient(i: int, rev: int = 0, *, status: str = "approved") -> dict:
    return {
        "id": f"vendor-{i:03d}",
        "name": f"Vendor {i} rev {rev}",
        "kind": "vendor",
        "status": status,
        "regions": ["SG"],
        "hosts": [f"api.vendor{i}.example", f"*.v{i}.example"],
        "grants": [
            {
                "purpose": "service_delivery",
                "categories": ["contact.phone_number"] if rev % 2 == 0 else ["comms.content"],
                "legal_basis": "contract",
            }
        ],
    }


def registry_snapshot(version: int, recipients: list[dict], workloads: list[dict]) -> Snapshot:
    """What the registry serves: recipients ordered by id, revision = content hash."""
    ordered = sorted(recipients, key=lambda r: r["id"])
    draft = Snapshot.from_data(
        {
            "version": version,
            "generated_at": GENERATED_AT,
            "recipients": ordered,
            "workloads": workloads,
        }
    )
    return draft.with_revision()


def delta_between(base: Snapshot, current: Snapshot) -> dict:
    """The registry's delta from `base` to `current` (the hub's encoding)."""
    encoded = EncodedSnapshot.of_snapshot(current)
    body, _ = encode_delta(
        version=current.version,
        revision=current.revision,
        generated_at=GENERATED_AT,
        base_version=base.version,
        base_revision=base.revision,
        base=fingerprint(EncodedSnapshot.of_snapshot(base)),
        base_workloads=hash(EncodedSnapshot.of_snapshot(base).workloads),
        current=encoded,
    )
    return orjson.loads(body)


@pytest.mark.parametrize("with_workloads", [False, True])
def test_parts_hash_to_the_content_revision(with_workloads: bool) -> None:
    workloads = (
        [{"namespace": "sms", "name": "gateway", "status": "approved", "purposes": ["billing"]}]
        if with_workloads
        else []
    )
    snapshot = registry_snapshot(1, [recipient(i) for i in range(5)], workloads)
    dumped = snapshot.to_data()
    expected = content_revision(dumped["recipients"], dumped["workloads"])
    encoded = EncodedSnapshot.of_snapshot(snapshot)
    assert encoded.revision == expected == snapshot.revision
    assert revision_of_parts(encoded.recipients.values(), encoded.workloads) == expected
    # In pieces (as the follower hashes and writes from a worker thread): the same hash and bytes.
    for chunk in (1, 2, 256):
        assert revision_of_parts(encoded.recipients.values(), encoded.workloads, chunk=chunk) == (
            expected
        )
        pieces = encoded.body_chunks(1, expected, GENERATED_AT, chunk)
        assert b"".join(pieces) == encoded.body(1, expected, GENERATED_AT)


def applied(held: HeldSnapshot, delta: dict, how: str) -> HeldSnapshot:
    """`held` after `delta`, applied at once or as the follower does (in slices, off the loop)."""
    if how == "apply":
        return held.apply(delta)
    return asyncio.run(held.apply_async(delta))


@pytest.mark.parametrize("how", ["apply", "apply_async"])
def test_applied_deltas_equal_full_loads_over_random_changes(how: str) -> None:
    rng = random.Random(10)
    live = {i: recipient(i) for i in range(40)}
    workloads: list[dict] = []
    full = registry_snapshot(1, list(live.values()), workloads)
    held = HeldSnapshot.of(full)
    next_id = 40
    for version in range(2, 40):
        for _ in range(rng.randint(1, 4)):
            move = rng.choice(["edit", "add", "remove", "suspend", "workloads"])
            if move == "edit" and live:
                i = rng.choice(sorted(live))
                live[i] = recipient(i, rng.randint(1, 9))
            elif move == "add":
                live[next_id] = recipient(next_id)
                next_id += 1
            elif move == "remove" and live:
                del live[rng.choice(sorted(live))]
            elif move == "suspend" and live:
                i = rng.choice(sorted(live))
                live[i] = recipient(i, status="suspended")
            elif move == "workloads" and live:
                targets = [f"vendor-{i:03d}" for i in rng.sample(sorted(live), 1)]
                workloads = [
                    {
                        "namespace": "sms",
                        "name": f"gw-{version}",
                        "status": "approved",
                        "purposes": ["service_delivery"],
                        "recipients": targets,
                    }
                ]
        previous, full = full, registry_snapshot(version, list(live.values()), workloads)
        held = applied(held, delta_between(previous, full), how)
        loaded = HeldSnapshot.of(full)
        assert held.snapshot == loaded.snapshot
        assert held.snapshot.to_data() == loaded.snapshot.to_data()
        assert held.snapshot.policy_data() == loaded.snapshot.policy_data()
        assert held.body() == loaded.body() == b"".join(held.body_chunks())
        assert Snapshot.from_json(held.body()) == full


@pytest.mark.parametrize("how", ["apply", "apply_async"])
def test_unchanged_recipients_keep_their_objects(how: str) -> None:
    before = registry_snapshot(1, [recipient(i) for i in range(10)], [])
    after = registry_snapshot(2, [recipient(i, 1 if i == 3 else 0) for i in range(10)], [])
    held = HeldSnapshot.of(before)
    new = applied(held, delta_between(before, after), how)
    kept = [a is b for a, b in zip(held.snapshot.recipients, new.snapshot.recipients, strict=True)]
    assert kept == [i != 3 for i in range(10)]


def tampered(delta: dict, **changes) -> dict:
    return {**delta, **changes}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: tampered(d, base_version=d["base_version"] - 1), id="other base"),
        pytest.param(lambda d: tampered(d, base_revision="0" * 16), id="other base revision"),
        pytest.param(lambda d: tampered(d, revision="f" * 16), id="revision mismatch"),
        pytest.param(lambda d: tampered(d, recipients=[]), id="a change left out"),
        pytest.param(
            lambda d: tampered(d, recipients=[{**d["recipients"][0], "kind": "pirate"}]),
            id="invalid recipient",
        ),
        pytest.param(
            lambda d: tampered(d, recipients=d["recipients"] * 2), id="duplicate recipient"
        ),
        pytest.param(lambda d: tampered(d, removed=["nobody"]), id="removes an unknown id"),
        pytest.param(lambda d: tampered(d, removed=None), id="malformed"),
        pytest.param(lambda d: tampered(d, generated_at="yesterday"), id="bad header"),
        pytest.param(lambda d: [d], id="not an object"),
    ],
)
@pytest.mark.parametrize("how", ["apply", "apply_async"])
def test_a_delta_that_does_not_check_out_is_refused(change, how: str) -> None:
    before = registry_snapshot(1, [recipient(i) for i in range(5)], [])
    after = registry_snapshot(2, [recipient(i, 1 if i == 2 else 0) for i in range(5)], [])
    held = HeldSnapshot.of(before)
    delta = delta_between(before, after)
    applied(held, delta, how)  # the untampered delta applies
    with pytest.raises(DeltaError):
        applied(held, change(delta), how)


@pytest.fixture(params=["in process", "child process"])
def decoder(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the body decoded in process (small) and in the child process (big)."""
    if request.param == "child process":
        monkeypatch.setattr("sharewall.document_split.INLINE_BYTES", {})
    return request.param


WORKLOAD = {"namespace": "sms", "name": "gateway", "status": "approved", "purposes": ["billing"]}


@pytest.mark.parametrize("workloads", [[], [WORKLOAD]])
async def test_a_full_snapshot_loaded_in_slices_is_the_validated_one(workloads, decoder) -> None:
    snapshot = registry_snapshot(7, [recipient(i) for i in range(300)], workloads)
    body = HeldSnapshot.of(snapshot).body()
    held = await HeldSnapshot.load(body)
    assert held.snapshot == Snapshot.from_json(body) == snapshot
    assert held.encoded == HeldSnapshot.of(snapshot).encoded
    assert await held.content_revision() == snapshot.revision


def _body(**changes) -> bytes:
    document = registry_snapshot(1, [recipient(i) for i in range(3)], []).to_data()
    return orjson.dumps({**document, **changes})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="invalid JSON"),
        pytest.param(b"[1, 2]", id="not an object"),
        pytest.param(_body(recipients=[{**recipient(1), "kind": "pirate"}]), id="bad recipient"),
        pytest.param(_body(recipients=[recipient(1), recipient(1)]), id="duplicate id"),
        pytest.param(_body(recipients={"a": 1}), id="recipients not a list"),
        pytest.param(_body(colour="red"), id="unknown key"),
        pytest.param(_body(version="seven"), id="bad version"),
        pytest.param(_body(workloads=[WORKLOAD, WORKLOAD]), id="duplicate workload"),
    ],
)
async def test_a_snapshot_the_schema_refuses_is_refused_in_slices_too(body: bytes, decoder) -> None:
    with pytest.raises(ValueError):
        Snapshot.from_json(body)
    with pytest.raises(ValueError):
        await HeldSnapshot.load(body)
