"""The ledger sink and the decision shipper against a real registry app on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp import web
from proxy_harness import free_port

from proxy.ledger import Ledger
from proxy.registry_follower import RegistryFollower
from proxy.registry_token import TokenExpiry
from proxy.shipper import LEDGER_PENDING_FILE, Shipper
from proxy.spool import Spool
from registry import db
from registry.api.app import create_app
from registry.models import ApiToken, BlockedFlow, LedgerEntry
from registry.settings import Settings
from registry.tokens import create_token, revoke_token, rotate_token

# -- the ledger sink ---------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def allowed(recipient: str = "twilio", categories=("contact.phone_number",), **over) -> dict:
    rec = {
        "action": "allow",
        "would_block": False,
        "recipient_id": recipient,
        "purpose": "service_delivery",
        "categories": list(categories),
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
    }
    return {**rec, **over}


def test_ledger_counts_per_minute_key_and_category():
    clock = Clock(1_800_000_000.0)  # 2027-01-15T08:00:00Z, a minute boundary
    ledger = Ledger(clock)
    ledger.record(allowed())
    ledger.record(allowed(categories=("contact.phone_number", "comms.content")))
    ledger.record(allowed(categories=()))
    ledger.record(allowed(action="deny"))  # blocked: a flow, not a ledger count
    ledger.record(allowed(action="allow", would_block=True))  # report mode: it did go out
    assert ledger.take_complete() == []  # the minute is not over yet
    clock.t += 60
    rows = {(r["category"], r["count"]) for r in ledger.take_complete()}
    assert rows == {("contact.phone_number", 3), ("comms.content", 1), ("", 1)}
    assert len(ledger) == 0


def test_ledger_rows_carry_the_minute_start():
    clock = Clock(1_800_000_000.0 + 59.9)
    ledger = Ledger(clock)
    ledger.record(allowed())
    [row] = ledger.take_complete(everything=True)
    assert row["minute"] == "2027-01-15T08:00:00Z"


# -- the shipper against a real registry ---------------------------------------------------------


@dataclass
class Registry:
    url: str
    token: str
    db_url: str

    def count(self, table, column, values) -> int:
        engine = sa.create_engine(self.db_url.replace("+aiosqlite", ""))
        try:
            with engine.connect() as conn:
                stmt = sa.select(sa.func.count()).select_from(table).where(column.in_(values))
                return conn.execute(stmt).scalar_one()
        finally:
            engine.dispose()


@pytest_asyncio.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}"
    await db.run_migrations(db_url)
    engine = db.create_engine(db_url)
    async with db.create_sessionmaker(engine)() as session:
        _, secret = await create_token(session, name="proxy-1", role="proxy")
        await session.commit()
    await engine.dispose()
    runner = web.AppRunner(create_app(Settings(db_url=db_url)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Registry(f"http://127.0.0.1:{port}", secret, db_url)
    await runner.cleanup()


def blocked_record() -> dict:
    return {
        "time": datetime.now(UTC).isoformat(),
        "decision_id": uuid.uuid4().hex,
        "action": "deny",
        "would_block": False,
        "mode": "enforce",
        "reason_codes": ["UNKNOWN_RECIPIENT"],
        "recipient_id": None,
        "host": "api.unknown.test",
        "method": "POST",
        "path": "/x",
        "purpose": "service_delivery",
        "categories": [],
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
        "findings": [],
    }


async def spooled(
    directory: Path, records: list[dict], per_segment: int = 7, *, registry: str | None = None
) -> Spool:
    """A closed spool holding `records` in sealed segments of `per_segment` records."""
    spool = Spool(directory, registry=registry)
    for start in range(0, max(len(records), 1), per_segment):
        spool = Spool(directory, registry=registry)
        await spool.start()
        for rec in records[start : start + per_segment]:
            spool.append(rec)
        await spool.close()
    return spool


async def test_shipper_ships_every_segment_then_removes_it(registry, tmp_path):
    records = [blocked_record() for _ in range(25)]
    spool = await spooled(tmp_path / "spool", records, registry=registry.url)
    assert len(spool.sealed_segments()) >= 2
    shipper = Shipper(registry.url, registry.token, spool, proxy_id="p1", batch_size=10)
    await shipper.start()
    try:
        # The background loop ships too (it starts at once): together, each record once.
        first, second = await asyncio.gather(shipper.ship_once(), shipper.ship_once())
        assert first + second <= 25
    finally:
        await shipper.close()
    assert shipper.shipped_decisions == 25
    assert spool.sealed_segments() == []
    ids = [r["decision_id"] for r in records]
    assert registry.count(BlockedFlow, BlockedFlow.decision_id, ids) == 25


async def test_resending_the_same_records_does_not_duplicate(registry, tmp_path):
    records = [blocked_record() for _ in range(5)]
    for attempt in range(2):  # e.g. a crash after the 2xx, before the segment was removed
        spool = await spooled(tmp_path / f"spool-{attempt}", records, registry=registry.url)
        shipper = Shipper(registry.url, registry.token, spool, proxy_id="p1")
        await shipper.start()
        await shipper.ship_once()
        await shipper.close()
    ids = [r["decision_id"] for r in records]
    assert registry.count(BlockedFlow, BlockedFlow.decision_id, ids) == 5


async def test_registry_down_keeps_segments_until_it_answers(registry, tmp_path):
    down_url = f"http://127.0.0.1:{free_port()}"
    unsent = await spooled(tmp_path / "down", [blocked_record()], registry=down_url)
    down = Shipper(down_url, registry.token, unsent, proxy_id="p1")
    await down.start()
    with pytest.raises(OSError):
        await down.ship_once()
    await down.close(drain_timeout=0.5)
    assert len(unsent.sealed_segments()) == 1
    records = [blocked_record() for _ in range(3)]
    spool = await spooled(tmp_path / "spool", records, registry=registry.url)
    wrong_token = Shipper(registry.url, "sw_wrong", spool, proxy_id="p1")
    await wrong_token.start()
    with pytest.raises(Exception, match="401"):
        await wrong_token.ship_once()
    await wrong_token.close(drain_timeout=0.5)
    assert len(spool.sealed_segments()) == 1
    up = Shipper(registry.url, registry.token, spool, proxy_id="p1")
    await up.start()
    assert await up.ship_once() == 3
    await up.close()
    assert spool.sealed_segments() == []


async def test_segments_of_another_registry_are_kept_not_shipped(registry, tmp_path):
    # A predecessor on this directory followed another registry: its records are not ours to
    # send here (today's registry would store, and show, another registry's flows).
    theirs = [blocked_record() for _ in range(3)]
    ours = [blocked_record() for _ in range(2)]
    spool = await spooled(tmp_path / "spool", theirs, registry="http://other-registry.test:8700")
    spool = await spooled(tmp_path / "spool", ours, registry=registry.url + "/")
    shipper = Shipper(registry.url, registry.token, spool, proxy_id="p1")
    await shipper.start()
    try:
        assert await shipper.ship_once() == 2
        assert await shipper.ship_once() == 0  # kept, and not read again every round
    finally:
        await shipper.close()
    assert len(shipper.foreign_segments) == 1
    [kept] = spool.sealed_segments()
    assert kept.name in shipper.foreign_segments
    assert (
        registry.count(BlockedFlow, BlockedFlow.decision_id, [r["decision_id"] for r in ours]) == 2
    )
    assert (
        registry.count(BlockedFlow, BlockedFlow.decision_id, [r["decision_id"] for r in theirs])
        == 0
    )


def ledger_counts(registry: Registry, workload: str) -> list[tuple[str, int]]:
    engine = sa.create_engine(registry.db_url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            stmt = sa.select(LedgerEntry.minute, LedgerEntry.count).where(
                LedgerEntry.source_workload == workload
            )
            return [(str(m)[:16], c) for m, c in conn.execute(stmt)]
    finally:
        engine.dispose()


MINUTE = 1_795_000_020 * 1.0  # a minute boundary (60 * 29_916_667) in late 2026


async def test_unshipped_ledger_rows_survive_a_proxy_restart(registry, tmp_path):
    spool = await spooled(tmp_path / "spool", [], registry=registry.url)
    workload = f"w-{uuid.uuid4().hex[:6]}"
    ledger = Ledger(Clock(MINUTE + 5))
    for _ in range(4):
        ledger.record(allowed(source_workload=workload))
    down = Shipper(f"http://127.0.0.1:{free_port()}", registry.token, spool, ledger, proxy_id="p1")
    await down.start()
    await down.close(drain_timeout=0.5)  # registry unreachable: rows go to disk
    pending = orjson.loads((spool.directory / LEDGER_PENDING_FILE).read_bytes())
    assert [r["count"] for r in pending] == [4]
    restarted = Shipper(
        registry.url, registry.token, spool, Ledger(Clock(MINUTE + 65)), proxy_id="p1"
    )
    await restarted.start()
    await restarted.ship_once()
    await restarted.close()
    assert not (spool.directory / LEDGER_PENDING_FILE).exists()
    assert [c for _, c in ledger_counts(registry, workload)] == [4]


async def test_a_minute_split_by_a_restart_is_shipped_whole(registry, tmp_path):
    # Re-sent rows replace: shipping the first half at shutdown and the second half after the
    # restart would leave only the second half. The half minute is carried over instead.
    spool = await spooled(tmp_path / "spool", [], registry=registry.url)
    workload = f"w-{uuid.uuid4().hex[:6]}"
    first = Ledger(Clock(MINUTE + 10))
    for _ in range(4):
        first.record(allowed(source_workload=workload))
    shipper = Shipper(registry.url, registry.token, spool, first, proxy_id="p1")
    await shipper.start()
    await shipper.close()
    assert ledger_counts(registry, workload) == []  # nothing half-counted went out
    clock = Clock(MINUTE + 30)
    second = Ledger(clock)
    shipper = Shipper(registry.url, registry.token, spool, second, proxy_id="p1")
    await shipper.start()
    for _ in range(3):
        second.record(allowed(source_workload=workload))
    clock.t = MINUTE + 61
    await shipper.ship_once()
    await shipper.close()
    assert [c for _, c in ledger_counts(registry, workload)] == [7]


async def _in_registry_db(registry: Registry, work):
    engine = db.create_engine(registry.db_url)
    try:
        async with db.create_sessionmaker(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


async def test_a_rotated_token_resends_a_minute_once_and_keeps_its_proxy_id(registry, tmp_path):
    """The old token shipped a minute but the answer was lost; after a rotation the proxy
    re-sends it with the new token: counted once. Another proxy token naming the same proxy
    id is refused (403) and keeps its spool."""
    spool = await spooled(tmp_path / "spool", [], registry=registry.url)
    workload = f"w-{uuid.uuid4().hex[:6]}"
    ledger = Ledger(Clock(MINUTE + 5))
    for _ in range(4):
        ledger.record(allowed(source_workload=workload))
    down = Shipper(f"http://127.0.0.1:{free_port()}", registry.token, spool, ledger, proxy_id="p2")
    await down.start()
    await down.close(drain_timeout=0.5)
    pending = (spool.directory / LEDGER_PENDING_FILE).read_bytes()
    old = Shipper(registry.url, registry.token, spool, Ledger(Clock(MINUTE + 65)), proxy_id="p2")
    await old.start()
    await old.ship_once()
    await old.close()
    assert [c for _, c in ledger_counts(registry, workload)] == [4]

    old_id = next(iter(await _in_registry_db(registry, _proxy_token_ids)))
    _, _, secret = await _in_registry_db(registry, lambda s: rotate_token(s, old_id))
    (spool.directory / LEDGER_PENDING_FILE).write_bytes(pending)  # the answer was lost
    new = Shipper(registry.url, secret, spool, Ledger(Clock(MINUTE + 65)), proxy_id="p2")
    await new.start()
    await new.ship_once()
    await new.close()
    assert [c for _, c in ledger_counts(registry, workload)] == [4]

    _, other = await _in_registry_db(
        registry, lambda s: create_token(s, name="proxy-other", role="proxy")
    )
    theirs = await spooled(tmp_path / "theirs", [blocked_record()], registry=registry.url)
    intruder = Shipper(registry.url, other, theirs, proxy_id="p2")
    await intruder.start()
    with pytest.raises(Exception, match="403"):
        await intruder.ship_once()
    await intruder.close(drain_timeout=0.5)
    assert len(theirs.sealed_segments()) == 1


async def _proxy_token_ids(session) -> list[int]:
    rows = await session.exec(
        sa.select(ApiToken.id).where(ApiToken.role == "proxy", ApiToken.revoked_at.is_(None))
    )
    return [r[0] for r in rows.all()]


async def test_the_follower_notices_a_rotated_token_with_nothing_to_ship(registry, tmp_path):
    """The snapshot follower's long polls carry the token's expiry too: a proxy with nothing
    to ship learns of a rotation all the same (`Sharewall-Token-Expires`)."""
    expiry = TokenExpiry()
    follower = RegistryFollower(
        registry.url, registry.token, tmp_path / "state", wait=1, token_expiry=expiry
    )
    (tmp_path / "state").mkdir()
    await follower.start(lambda snapshot: None)
    try:
        assert expiry.expires_at is None and expiry.notices() == []
        old_id = next(iter(await _in_registry_db(registry, _proxy_token_ids)))
        old, _, _ = await _in_registry_db(
            registry, lambda s: rotate_token(s, old_id, grace_seconds=600)
        )
        for _ in range(400):  # the registry's token cache, then the next long poll
            if expiry.expires_at is not None:
                break
            await asyncio.sleep(0.05)
        assert expiry.expires_at == old.expires_at.replace(microsecond=0)
        assert expiry.notices()[0].startswith("the registry token expires at ")
    finally:
        await follower.close()


async def test_the_follower_says_the_registry_refuses_it_and_keeps_its_snapshot(registry, tmp_path):
    """A revoked token: the follower's requests are 401, retried, and reported as a refusal
    (its reason code, the snapshot version it still enforces), not only as failures."""
    _, secret = await _in_registry_db(
        registry, lambda s: create_token(s, name="proxy-revoked", role="proxy")
    )
    follower = RegistryFollower(registry.url, secret, tmp_path / "state", wait=1, backoff_cap=1)
    (tmp_path / "state").mkdir()
    await follower.start(lambda snapshot: None)
    try:
        assert follower.has_snapshot and follower.notices() == []
        version = follower.snapshot.version
        token_id = await _in_registry_db(
            registry,
            lambda s: s.exec(sa.select(ApiToken.id).where(ApiToken.name == "proxy-revoked")),
        )
        await _in_registry_db(registry, lambda s: revoke_token(s, token_id.scalar_one()))
        for _ in range(400):  # the registry's token cache, then the next long poll
            if follower.refusals.current is not None:
                break
            await asyncio.sleep(0.05)
        refusal = follower.refusals.current
        assert (refusal.status, refusal.reason) == (401, "unauthorized")
        [notice] = follower.notices()
        assert "snapshot requests" in notice and "HTTP 401 unauthorized" in notice
        assert f"(version {version})" in notice and follower.snapshot.version == version
    finally:
        await follower.close()
