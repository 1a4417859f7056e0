"""Incremental snapshot builds (only recipients whose stamp moved are re-read) against full ones.

Random sequences of real API writes go through two registry apps on one database (two
processes' hubs, each with its own cache); after each, both serve exactly the snapshot a build
from scratch makes of the database.
"""

from __future__ import annotations

import asyncio
import random
from datetime import date

import pytest
import sqlalchemy as sa
import yaml
from aiohttp.test_utils import TestClient

from registry.api.app import create_app
from registry.api.snapshot_hub import hub
from registry.models import Recipient
from registry.snapshot_builder import encoded_snapshot, fetch_snapshot_rows
from registry.state import bump_snapshot_version
from sharewall.cli import main

from .conftest import RegistryTestServer

IDS = ("alpha", "bravo", "charlie", "delta", "echo")
HOSTS = ("api.{}.example", "*.{}.example", "cdn.{}.example", "shared.example")
PURPOSES = ("service_delivery", "billing", "customer_support")
CATEGORIES = ("contact.phone_number", "contact.email", "contact.name", "comms.content")
WRITERS = ("engineer", "engineer2")
REVIEWERS = ("security", "security2")


async def full_build(sessions) -> bytes:
    """The snapshot body a registry builds from nothing (what a restarted process serves)."""
    async with sessions() as session:
        header, encoded, _ = encoded_snapshot(await fetch_snapshot_rows(session))
    return encoded.body(header["version"], header["revision"], header["generated_at"])


async def served(client: TestClient, auth) -> bytes:
    resp = await client.get("/v1/snapshot", headers=auth("proxy"))
    assert resp.status == 200
    return await resp.read()


class Writer:
    """Random real API writes: recipients, grants, reviews, workloads, apply."""

    def __init__(self, rng: random.Random, auth, db_url: str = "", tmp_path=None) -> None:
        self.rng = rng
        self.auth = auth
        self.db_url = db_url
        self.tmp_path = tmp_path

    def _hosts(self, rid: str) -> list[str]:
        return [h.format(rid) for h in self.rng.sample(HOSTS, self.rng.randint(0, 3))]

    def _grant(self) -> dict:
        grant = {
            "purpose": self.rng.choice(PURPOSES),
            "categories": self.rng.sample(CATEGORIES, self.rng.randint(1, 3)),
            "legal_basis": self.rng.choice((None, "contract", "consent")),
        }
        if self.rng.random() < 0.3:
            grant["expires"] = date(2030, 1, self.rng.randint(1, 28)).isoformat()
        return grant

    def _recipient(self, rid: str) -> dict:
        return {
            "id": rid,
            "name": self.rng.choice(("Alpha", "Beta Ltd", "Gamma Inc.")),
            "kind": self.rng.choice(("vendor", "ott_provider", "carrier")),
            "regions": self.rng.sample(["SG", "US", "DE"], self.rng.randint(0, 2)),
            "hosts": self._hosts(rid),
            "grants": [self._grant() for _ in range(self.rng.randint(0, 2))],
        }

    async def _read(self, client, rid: str, who: str) -> tuple[dict | None, str]:
        resp = await client.get(f"/v1/recipients/{rid}", headers=self.auth(who))
        if resp.status != 200:
            return None, '"0"'
        return await resp.json(), resp.headers["ETag"]

    async def step(self, client: TestClient) -> str:
        rng = self.rng
        rid = rng.choice(IDS)
        who, reviewer = rng.choice(WRITERS), rng.choice(REVIEWERS)
        doc, etag = await self._read(client, rid, who)
        grants = doc["grants"] if doc else []
        gid = rng.choice(grants)["id"] if grants else 0
        base = f"/v1/recipients/{rid}"
        if doc is None:
            op = rng.choice(
                ("create", "create", "create", "create", "workload", "apply", "apply_db")
            )
        else:
            op = rng.choice(
                (
                    "edit",
                    "edit",
                    "grant_add",
                    "approve",
                    "approve",
                    "approve",
                    "reject",
                    "suspend",
                    "revoke",
                    "delete",
                    "workload",
                    "apply",
                    "apply_db",
                    *(("grant_edit", "grant_delete", "grant_revoke") if grants else ()),
                )
            )
        headers = {**self.auth(who), "If-Match": etag}
        review = {**self.auth(reviewer), "If-Match": etag}
        if op == "create":
            resp = await client.post("/v1/recipients", json=self._recipient(rid), headers=headers)
        elif op == "edit":
            patch = {"hosts": self._hosts(rid)} if rng.random() < 0.5 else {}
            patch[rng.choice(("name", "contract_ref", "owner_team"))] = f"v{rng.randint(0, 9)}"
            if rng.random() < 0.3:
                patch["inspect_tls"] = rng.random() < 0.5
            resp = await client.patch(base, json=patch, headers=headers)
        elif op == "grant_add":
            resp = await client.post(f"{base}/grants", json=self._grant(), headers=headers)
        elif op == "grant_edit":
            patch = {"categories": rng.sample(CATEGORIES, rng.randint(1, 3))}
            if rng.random() < 0.5:
                patch["expires"] = date(2031, 2, rng.randint(1, 28)).isoformat()
            resp = await client.patch(f"{base}/grants/{gid}", json=patch, headers=headers)
        elif op == "grant_delete":
            resp = await client.delete(f"{base}/grants/{gid}", headers=headers)
        elif op == "grant_revoke":
            resp = await client.post(f"{base}/grants/{gid}/revoke", headers=review)
        elif op in ("approve", "reject", "suspend", "revoke"):
            resp = await client.post(f"{base}/{op}", headers=review)
        elif op == "delete":
            resp = await client.delete(base, headers=headers)
        elif op == "workload":
            ns = f"ns{rng.randint(0, 2)}"
            body = {"namespace": ns, "name": "job", "purposes": [rng.choice(PURPOSES)]}
            resp = await client.post("/v1/workloads", json=body, headers=self.auth("engineer"))
            if resp.status == 201:
                path = f"/v1/workloads/{ns}/job"
                tag = (await client.get(path, headers=self.auth(reviewer))).headers["ETag"]
                resp = await client.post(
                    f"{path}/approve", headers={**self.auth(reviewer), "If-Match": tag}
                )
        elif op == "apply":  # the registry becomes a file of some of the ids (the others go)
            ids = rng.sample(IDS, rng.randint(1, len(IDS)))
            recipients = [{**self._recipient(i), "status": "approved"} for i in ids]
            resp = await client.post(
                "/v1/apply", json={"recipients": recipients}, headers=self.auth(reviewer)
            )
        else:  # the operator's bootstrap from another process: statuses written as the file says
            return f"{op}: {await self._apply_db()}"
        assert resp.status < 500, (op, await resp.text())
        return f"{op} {rid}: {resp.status}"

    async def _apply_db(self) -> int:
        rng = self.rng
        ids = rng.sample(IDS, rng.randint(1, len(IDS)))
        statuses = ("approved", "approved", "suspended", "proposed")
        doc = {
            "recipients": [{**self._recipient(i), "status": rng.choice(statuses)} for i in ids],
            "workloads": [
                {
                    "namespace": "ns-file",
                    "name": "job",
                    "status": "approved",
                    "purposes": [rng.choice(PURPOSES)],
                    "recipients": rng.sample(ids, 1),
                }
            ],
        }
        path = self.tmp_path / "registry.yaml"
        path.write_text(yaml.safe_dump(doc))
        argv = ["registry", "apply", str(path), "--db", self.db_url]
        return await asyncio.to_thread(main, argv)


@pytest.mark.parametrize("seed", [1, 2])
async def test_incremental_builds_serve_exactly_the_full_build(
    client, auth, sessions, settings, db_url, tmp_path, seed
):
    other = RegistryTestServer(create_app(settings), host="127.0.0.1", port=0)
    async with TestClient(other) as second:
        rng = random.Random(seed)
        writer = Writer(rng, auth, db_url, tmp_path)
        apps = (client, second)
        for c in apps:
            assert await served(c, auth) == await full_build(sessions)
        done = []
        for _ in range(80):
            done.append(await writer.step(rng.choice(apps)))
            # Sometimes several versions pass before a build (a deleted and re-created
            # recipient is back at version 1 then).
            if rng.random() < 0.7:
                expected = await full_build(sessions)
                for c in apps:
                    assert await served(c, auth) == expected, done
        expected = await full_build(sessions)
        for c in apps:
            assert await served(c, auth) == expected, done
        # The builds after the first read only what moved (the test would pass vacuously
        # if every build were a full one).
        for c in apps:
            assert hub(c.app).incremental_builds > 0
        assert sum(" 20" in line for line in done) > 30, done


async def test_a_recipient_deleted_and_created_again_at_version_1_is_read_again(
    client, auth, sessions
):
    body = {"id": "foxtrot", "name": "F", "kind": "vendor", "hosts": ["a.foxtrot.example"]}
    doc = {"recipients": [{**body, "status": "approved"}]}
    resp = await client.post("/v1/apply", json=doc, headers=auth("security"))
    assert resp.status == 200, await resp.text()
    before = await served(client, auth)
    assert b"a.foxtrot.example" in before
    # Removed by one apply, applied again with another host: version 1 both times.
    assert (await client.post("/v1/apply", json={"recipients": []}, headers=auth("security"))).ok
    doc["recipients"][0]["hosts"] = ["b.foxtrot.example"]
    assert (await client.post("/v1/apply", json=doc, headers=auth("security"))).ok
    current, etag = await Writer(random.Random(0), auth)._read(client, "foxtrot", "security")
    assert etag == '"1"' and current["status"] == "proposed"
    after = await served(client, auth)
    assert after == await full_build(sessions)
    assert b"b.foxtrot.example" in after and b"a.foxtrot.example" not in after
    assert hub(client.app).incremental_builds > 0


async def test_builds_racing_writes_end_with_the_full_build(
    client, auth, sessions, settings, db_url, tmp_path
):
    """Builds made while writes commit (stamps read before a commit, rows after) never keep
    a recipient's old content under its new stamp: once writes stop, both apps serve exactly
    a build from scratch. Several writers at once (API writes, applies, the CLI's apply from
    another process): every one gets its answer (a 409/412 for a real conflict), never a
    503 from one writer's lock order meeting another's."""
    other = RegistryTestServer(create_app(settings), host="127.0.0.1", port=0)
    async with TestClient(other) as second:
        apps = (client, second)
        writing = True

        async def write(seed: int) -> list[str]:
            rng = random.Random(seed)
            own = tmp_path / f"writer{seed}"
            own.mkdir()
            writer = Writer(rng, auth, db_url, own)
            return [await writer.step(rng.choice(apps)) for _ in range(25)]

        async def read(c: TestClient) -> int:
            builds = 0
            while writing:
                await served(c, auth)
                builds += 1
            return builds

        readers = [asyncio.create_task(read(c)) for c in apps]
        try:
            done = await asyncio.gather(*(write(seed) for seed in (11, 12, 13)))
        finally:
            writing = False
        assert all(await asyncio.gather(*readers))
        # The writers did write (the test would pass vacuously if all were refused).
        assert sum(" 20" in line for lines in done for line in lines) > 15, done
        expected = await full_build(sessions)
        for c in apps:
            assert await served(c, auth) == expected
            assert hub(c.app).incremental_builds > 0


async def test_a_write_that_forgets_the_version_is_found_and_served_from_the_next_version(
    client, auth, sessions
):
    body = {"id": "golf", "name": "Golf", "kind": "vendor", "hosts": ["api.golf.example"]}
    assert (await client.post("/v1/recipients", json=body, headers=auth("engineer"))).ok
    assert b'"name":"Golf"' in await served(client, auth)
    snapshots = hub(client.app)
    assert await snapshots.verify() == set()
    # A direct write that bumps the snapshot version but not the recipient's.
    async with sessions() as session:
        await session.exec(sa.update(Recipient).where(Recipient.id == "golf").values(name="Golf 2"))
        await bump_snapshot_version(session)
        await session.commit()
    # What an incremental build cannot see (the stamp did not move)...
    assert b'"name":"Golf 2"' not in await served(client, auth)
    # ...the periodic full read finds, and the next version serves.
    assert await snapshots.verify() == {"golf"}
    async with sessions() as session:
        await bump_snapshot_version(session)
        await session.commit()
    after = await served(client, auth)
    assert b'"name":"Golf 2"' in after and after == await full_build(sessions)
    assert await snapshots.verify() == set()
