"""`GET /v1/snapshot`: what proxies follow (approved grants only, ETag = version, 304, long poll)."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import orjson
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from registry.api.app import create_app
from registry.api.snapshot import SNAPSHOT_HUB
from registry.models import Grant, Recipient, RecipientHost
from registry.snapshot_builder import build_snapshot
from registry.state import bump_snapshot_version
from sharewall.snapshot import Snapshot, policy_data_of
from sharewall.snapshot_delta import DELTA_MEDIA_TYPE, HeldSnapshot


async def seed_recipient(sessions, rid: str, *, status: str = "approved", grants=()) -> int:
    """Insert a recipient with one host and `grants` [(purpose, categories, grant status)]."""
    async with sessions() as session:
        session.add(
            Recipient(
                id=rid,
                name=rid.title(),
                kind="ott_provider",
                status=status,
                regions=["SG"],
                proposed_by="eng-alice",
                updated_by="eng-alice",
            )
        )
        await session.flush()
        session.add(RecipientHost(recipient_id=rid, pattern=f"api.{rid}.example"))
        for purpose, categories, grant_status in grants:
            session.add(
                Grant(
                    recipient_id=rid,
                    purpose=purpose,
                    categories=list(categories),
                    status=grant_status,
                    proposed_by="eng-alice",
                )
            )
        version = await bump_snapshot_version(session)
        await session.commit()
        return version


async def touch(session, rid: str) -> None:
    """What every write to a recipient's hosts or grants does: bump the recipient's version."""
    await session.exec(
        sa.update(Recipient).where(Recipient.id == rid).values(version=Recipient.version + 1)
    )


async def set_status(sessions, rid: str, status: str) -> int:
    async with sessions() as session:
        # A write to a recipient's snapshot content bumps its version (its ETag; the hub
        # re-reads only recipients whose version moved).
        await session.exec(
            sa.update(Recipient)
            .where(Recipient.id == rid)
            .values(status=status, version=Recipient.version + 1)
        )
        version = await bump_snapshot_version(session)
        await session.commit()
        return version


async def test_snapshot_has_recipients_hosts_and_only_approved_grants(
    client, auth, sessions, unique
):
    rid = unique("twilio")
    version = await seed_recipient(
        sessions,
        rid,
        grants=[
            ("service_delivery", ["contact.phone_number"], "approved"),
            ("marketing", ["contact.email"], "proposed"),
        ],
    )
    resp = await client.get("/v1/snapshot", headers=auth("proxy"))
    assert resp.status == 200
    snapshot = Snapshot.from_data(await resp.json())
    assert snapshot.version == version
    assert resp.headers["ETag"] == f'"{version}"'
    recipient = snapshot.recipient(rid)
    assert recipient is not None
    assert recipient.hosts == (f"api.{rid}.example",)
    assert [g.purpose for g in recipient.grants] == ["service_delivery"]
    assert snapshot.revision


async def test_editing_an_approved_grant_of_a_revoked_recipient_moves_the_snapshot(
    client, auth, sessions, unique
):
    """A revoked recipient's approved grant, edited, goes back to proposed: it leaves the
    snapshot, so the snapshot's version moves and the new version no longer holds it."""
    rid = unique("revoked")
    await seed_recipient(
        sessions,
        rid,
        status="revoked",
        grants=[("customer_support", ["contact.email"], "approved")],
    )
    before = Snapshot.from_data(
        await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    )
    assert [g.purpose for g in before.recipient(rid).grants] == ["customer_support"]
    recipient = await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))
    gid = (await recipient.json())["grants"][0]["id"]
    resp = await client.patch(
        f"/v1/recipients/{rid}/grants/{gid}",
        json={"categories": ["contact.email", "contact.name"]},
        headers=auth("engineer"),
    )
    assert resp.status == 200, await resp.text()
    after = Snapshot.from_data(
        await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    )
    assert after.version > before.version
    assert after.recipient(rid).grants == ()


async def test_unchanged_snapshot_is_304_on_if_none_match(client, auth):
    first = await client.get("/v1/snapshot", headers=auth("proxy"))
    etag = first.headers["ETag"]
    again = await client.get("/v1/snapshot", headers={**auth("proxy"), "If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    stale = await client.get("/v1/snapshot", headers={**auth("proxy"), "If-None-Match": '"-1"'})
    assert stale.status == 200


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param("proxy", 200, id="proxy reads"),
        pytest.param("security", 200, id="security reads"),
        pytest.param("engineer", 200, id="engineer reads"),
        pytest.param("admin", 200, id="admin reads"),
        pytest.param(None, 401, id="no token is 401"),
    ],
)
async def test_snapshot_roles(client, auth, role, status):
    resp = await client.get("/v1/snapshot", headers=auth(role) if role else {})
    assert resp.status == status


async def test_long_poll_times_out_with_304(client, auth):
    etag = (await client.get("/v1/snapshot", headers=auth("proxy"))).headers["ETag"]
    started = time.monotonic()
    resp = await client.get("/v1/snapshot?wait=1", headers={**auth("proxy"), "If-None-Match": etag})
    assert resp.status == 304
    assert 0.9 <= time.monotonic() - started < 10  # held for the wait, then answered


async def test_long_poll_wakes_within_a_second_of_a_change(client, auth, sessions, unique):
    rid = unique("vonage")
    await seed_recipient(
        sessions, rid, grants=[("service_delivery", ["comms.content"], "approved")]
    )
    etag = (await client.get("/v1/snapshot", headers=auth("proxy"))).headers["ETag"]
    poll = asyncio.create_task(
        client.get("/v1/snapshot?wait=30", headers={**auth("proxy"), "If-None-Match": etag})
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    # A write by another process: only the version poller can see it.
    version = await set_status(sessions, rid, "suspended")
    # Woken by the change: the 30 s wait running out would fail this 5 s bound (the 1 s
    # figure is bench/'s).
    resp = await asyncio.wait_for(poll, 5)
    assert resp.status == 200
    snapshot = Snapshot.from_data(await resp.json())
    assert snapshot.version == version
    assert snapshot.recipient(rid).status == "suspended"


@pytest.mark.parametrize(
    "query", [pytest.param("wait=abc", id="not a number"), pytest.param("wait=-1", id="negative")]
)
async def test_bad_wait_is_422(client, auth, query):
    resp = await client.get(f"/v1/snapshot?{query}", headers=auth("proxy"))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "wait"


async def test_gzip_is_served_to_clients_that_accept_it(client, auth):
    resp = await client.get("/v1/snapshot", headers={**auth("proxy"), "Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    Snapshot.from_data(await resp.json())  # the client decompresses transparently


async def test_served_document_matches_the_schema_revision_and_policy_data(
    client, auth, sessions, unique
):
    rid = unique("infobip")
    await seed_recipient(
        sessions,
        rid,
        grants=[("service_delivery", ["contact.phone_number", "comms.content"], "approved")],
    )
    async with sessions() as session:
        await session.exec(
            sa.update(Grant).where(Grant.recipient_id == rid).values(expires=date(2027, 12, 31))
        )
        await touch(session, rid)
        await bump_snapshot_version(session)
        await session.commit()
    doc = await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    snapshot = Snapshot.from_data(doc)
    # The fast path (dicts from rows) agrees with the shared schema on every derived value.
    assert snapshot.replace(revision="").with_revision().revision == doc["revision"]
    assert orjson.loads(orjson.dumps(policy_data_of(doc))) == orjson.loads(
        orjson.dumps(snapshot.policy_data())
    )
    assert snapshot.recipient(rid).grants[0].expires == date(2027, 12, 31)
    async with sessions() as session:
        built = await build_snapshot(session)
    assert built.revision == doc["revision"]
    assert built.recipients == snapshot.recipients


async def full_snapshot(client, auth) -> HeldSnapshot:
    resp = await client.get("/v1/snapshot", headers=auth("proxy"))
    assert resp.status == 200 and resp.content_type == "application/json"
    return HeldSnapshot.of(Snapshot.from_json(await resp.read()))


async def delta_since(client, auth, version: int):
    return await client.get(
        "/v1/snapshot",
        headers={
            **auth("proxy"),
            "If-None-Match": f'"{version}"',
            "Accept": f"{DELTA_MEDIA_TYPE}, application/json;q=0.5",
            "Accept-Encoding": "gzip",
        },
    )


async def test_a_follower_applying_deltas_ends_with_the_full_snapshot(
    client, auth, sessions, unique
):
    first, second = unique("plivo"), unique("vonage")
    # Recipients that do not change: with only the two changing, a change touches more than
    # DELTA_MAX_SHARE of the registry and is answered in full (alone, no other test left any).
    for _ in range(4):
        await seed_recipient(sessions, unique("bystander"))
    await seed_recipient(sessions, first, grants=[("billing", ["contact.email"], "approved")])
    held = await full_snapshot(client, auth)
    # Several changes, each fetched as a delta from the version held: add, edit, remove.
    await seed_recipient(sessions, second)
    await set_status(sessions, first, "suspended")
    for change in ("add", "grant", "remove"):
        if change == "grant":
            async with sessions() as session:
                await session.exec(
                    sa.update(Grant)
                    .where(Grant.recipient_id == first)
                    .values(categories=["contact.email", "contact.name"])
                )
                await touch(session, first)
                await bump_snapshot_version(session)
                await session.commit()
        elif change == "remove":
            async with sessions() as session:
                await session.exec(sa.delete(Grant).where(Grant.recipient_id == second))
                await session.exec(
                    sa.delete(RecipientHost).where(RecipientHost.recipient_id == second)
                )
                await session.exec(sa.delete(Recipient).where(Recipient.id == second))
                await bump_snapshot_version(session)
                await session.commit()
        resp = await delta_since(client, auth, held.snapshot.version)
        assert resp.status == 200
        assert resp.content_type == DELTA_MEDIA_TYPE
        assert "Content-Encoding" not in resp.headers
        delta = orjson.loads(await resp.read())
        held = held.apply(delta)
        full = await full_snapshot(client, auth)
        assert held.snapshot == full.snapshot
        assert held.snapshot.policy_data() == full.snapshot.policy_data()
        assert held.body() == full.body()
        assert resp.headers["ETag"] == f'"{full.snapshot.version}"'
    assert held.snapshot.recipient(second) is None
    assert held.snapshot.recipient(first).status == "suspended"
    # Only what changed travels: the last delta removed one recipient and carried none.
    assert delta["removed"] == [second] and delta["recipients"] == []


async def test_a_version_the_registry_does_not_know_gets_the_full_snapshot(
    client, auth, sessions, unique
):
    await seed_recipient(sessions, unique("telnyx"))
    held = await full_snapshot(client, auth)
    for version in (0, held.snapshot.version + 100):
        resp = await delta_since(client, auth, version)
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert Snapshot.from_json(await resp.read()) == held.snapshot


async def test_a_following_proxy_takes_deltas_and_falls_back_to_the_full_snapshot(
    client, auth, sessions, unique, tokens, tmp_path
):
    """The proxy's follower: deltas while its base matches; a foreign base → the full snapshot."""
    from structlog.testing import capture_logs

    from proxy.registry_follower import RegistryFollower

    first = unique("kaleyra")
    await seed_recipient(sessions, first)
    current = await full_snapshot(client, auth)
    # A cache left by another registry: the same version number, other content.
    renamed = current.snapshot.recipients[0].replace(name="Someone else")
    foreign = current.snapshot.replace(recipients=(renamed,)).with_revision()
    (tmp_path / "snapshot.json").write_bytes(foreign.to_json())
    taken: list[Snapshot] = []
    follower = RegistryFollower(str(client.make_url("")), tokens["proxy"], tmp_path, wait=5)

    async def changed_to(version: int) -> Snapshot:
        for _ in range(200):
            if follower.snapshot is not None and follower.snapshot.version == version:
                return follower.snapshot
            await asyncio.sleep(0.05)
        raise AssertionError(f"the follower did not reach version {version}")

    with capture_logs() as logs:
        await follower.start(taken.append)
        try:
            assert follower.snapshot == foreign  # the cache first (304: same version)
            version = await set_status(sessions, first, "suspended")
            assert await changed_to(version) == (await full_snapshot(client, auth)).snapshot
            version = await set_status(sessions, first, "approved")
            assert await changed_to(version) == (await full_snapshot(client, auth)).snapshot
        finally:
            await follower.close()
    received = [e for e in logs if e["event"] == "registry.snapshot_received"]
    rejected = [e for e in logs if e["event"] == "registry.delta_rejected"]
    assert len(rejected) == 1  # the delta for the foreign base
    assert [e["delta"] for e in received] == [False, True]  # then a full fetch, then a delta
    assert Snapshot.from_json((tmp_path / "snapshot.json").read_bytes()) == taken[-1]


async def test_api_write_wakes_long_polls_in_process(settings, auth, sessions, unique):
    app = create_app(settings)
    # Set before the app starts: the fallback poll never runs, so it cannot be what wakes us.
    app[SNAPSHOT_HUB].poll_interval = 60.0
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        rid = unique("sinch")
        await seed_recipient(sessions, rid)
        etag = (await client.get("/v1/snapshot", headers=auth("proxy"))).headers["ETag"]
        poll = asyncio.create_task(
            client.get("/v1/snapshot?wait=30", headers={**auth("proxy"), "If-None-Match": etag})
        )
        await asyncio.sleep(0.2)
        suspended = await client.post(f"/v1/recipients/{rid}/suspend", headers=auth("security"))
        assert suspended.status == 200, await suspended.text()
        # Woken by the change: the 30 s wait running out would fail this 5 s bound (the 1 s
        # figure is bench/'s).
        resp = await asyncio.wait_for(poll, 5)
        assert Snapshot.from_data(await resp.json()).recipient(rid).status == "suspended"


async def test_shutdown_releases_long_polls(settings, auth):
    server = TestServer(create_app(settings), host="127.0.0.1", port=0)
    client = TestClient(server)
    await client.start_server()
    etag = (await client.get("/v1/snapshot", headers=auth("proxy"))).headers["ETag"]
    poll = asyncio.create_task(
        client.get("/v1/snapshot?wait=60", headers={**auth("proxy"), "If-None-Match": etag})
    )
    await asyncio.sleep(0.3)
    started = time.monotonic()
    closing = asyncio.create_task(client.server.close())
    # The held poll is answered (304, "nothing new"), not cut off, and shutdown is not held up.
    resp = await asyncio.wait_for(poll, 5)
    assert resp.status == 304
    await closing
    assert time.monotonic() - started < 5
    await client.close()
