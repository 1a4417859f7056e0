"""The snapshot version: bumped once by each committed change proxies must see, never else."""

from __future__ import annotations

from registry.api import keys
from registry.state import current_version


async def test_version_moves_exactly_when_the_snapshot_content_changes(
    client, auth, sessions, unique
):
    heard: list[int] = []
    keys.add_snapshot_listener(client.server.app, heard.append)
    eng, sec = auth("engineer"), auth("security")
    rid = unique("ver")

    async def version() -> int:
        async with sessions() as session:
            return await current_version(session)

    async def step(method, path, headers, body=None, expect_bump=True):
        before = await version()
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status < 300, await resp.text()
        after = await version()
        assert after == before + (1 if expect_bump else 0), (method, path)
        if expect_bump:
            assert heard[-1] == after  # listeners hear the committed version
        return await resp.json() if resp.status != 204 else None

    created = await step(
        "post",
        "/v1/recipients",
        eng,
        {"id": rid, "name": "V", "kind": "vendor", "hosts": [f"{rid}.example"]},
    )
    assert created["status"] == "proposed"
    grant = await step(
        "post",
        f"/v1/recipients/{rid}/grants",
        eng,
        {"purpose": "billing", "categories": ["contact.name"]},
        expect_bump=False,  # a proposed grant is not in the snapshot
    )

    async def reviewed() -> dict[str, str]:
        etag = (await client.get(f"/v1/recipients/{rid}", headers=sec)).headers["ETag"]
        return {**sec, "If-Match": etag}

    await step("post", f"/v1/recipients/{rid}/approve", await reviewed())
    # Edits of a live recipient are pending changes: the snapshot keeps the approved version.
    await step(
        "patch",
        f"/v1/recipients/{rid}/grants/{grant['id']}",
        eng,
        {"categories": ["contact.email"]},
        expect_bump=False,
    )
    await step("patch", f"/v1/recipients/{rid}", eng, {"notes": "x"}, expect_bump=False)
    await step("patch", f"/v1/recipients/{rid}", eng, {"notes": "x"}, expect_bump=False)  # no-op
    await step("post", f"/v1/recipients/{rid}/approve", await reviewed())
    await step("post", f"/v1/recipients/{rid}/revoke", sec)
    await step("delete", f"/v1/recipients/{rid}", eng)
    refused = await client.post(f"/v1/recipients/{rid}/approve", headers=sec)
    assert refused.status == 404
