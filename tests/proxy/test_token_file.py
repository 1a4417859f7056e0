"""A rotated registry token reaches a running proxy through its token file: a real
`sharewall proxy --token-file` following and shipping to a real `sharewall registry serve`.

The file is laid out and updated as kubelet does a mounted Secret: `token` links to
`..data/token`, and `..data` is a symlink swapped atomically to a new directory. The proxy
takes the new secret for its next snapshot poll and shipment without a restart, so the old
secret can be revoked (or left to expire) without a single refusal.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from proxy_harness import ProxyProcess, Upstreams, pins
from registry_harness import RegistryProcess, api, wait_ready
from test_shipping_refused import blocked_call, readiness, samples

pytestmark = pytest.mark.timeout(300)


def mount_secret(directory: Path, secret: str, generation: int) -> Path:
    """Write `secret` as kubelet updates a Secret volume: a new timestamped directory, then
    `..data` swapped to it by a rename; `token` -> `..data/token` never changes."""
    data = directory / f"..2026_11_30_{generation:02d}"
    data.mkdir(parents=True)
    (data / "token").write_text(secret + "\n")
    staged = directory / "..data_tmp"
    staged.symlink_to(data.name)
    os.replace(staged, directory / "..data")
    link = directory / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    return link


def start_proxy(
    workdir: Path, reg: RegistryProcess, token_file: Path, upstreams: Upstreams, *extra: str
) -> ProxyProcess:
    return ProxyProcess(
        workdir,
        [
            "--registry-url",
            reg.url,
            "--token-file",
            str(token_file),
            "--default-purpose",
            "service_delivery",
            *pins(upstreams),
            *extra,
        ],
    )


def lines(proxy: ProxyProcess, name: str, count: int, timeout: float = 60) -> list[dict]:
    """The proxy's `name` lines once there are `count` of them (fails after `timeout`)."""
    found = proxy.lines_where(lambda line: line.get("event") == name, count=count, timeout=timeout)
    assert len(found) >= count, (
        f"{len(found)} {name} lines, not {count}:\n{proxy.log_text()[-3000:]}"
    )
    return found


def revoke_grant(reg: RegistryProcess, tokens: dict, recipient: str) -> None:
    """A registry change: the proxy's long poll is answered with a new snapshot."""
    body = api(reg, tokens["engineer"], "GET", f"/v1/recipients/{recipient}").json()
    [grant] = [g for g in body["grants"] if g["purpose"] == "service_delivery"]
    resp = api(
        reg, tokens["security"], "POST", f"/v1/recipients/{recipient}/grants/{grant['id']}/revoke"
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("workers", "changes"),
    # Each run revokes grants of its own recipients: the registry is the module's.
    [(1, ("origin", "partner")), (2, ("vendor", "tunnel"))],
    ids=["one process", "two workers"],
)
def test_a_rotated_secret_in_the_token_file_is_used_without_a_restart(
    admin_registry, upstreams, tmp_path, monkeypatch, workers, changes
):
    reg, tokens = admin_registry
    admin = tokens["admin"]
    pod = f"pod-{uuid.uuid4().hex[:8]}"
    created = api(reg, admin, "POST", "/v1/tokens", json={"name": pod, "role": "proxy"}).json()
    monkeypatch.setenv("SHAREWALL_PROXY_ID", pod)
    token_file = mount_secret(tmp_path / "secret", created["secret"], 1)
    proxy = start_proxy(tmp_path, reg, token_file, upstreams, "--workers", str(workers))
    try:
        wait_ready(proxy)
        blocked_call(proxy, upstreams)
        shipped = len(lines(proxy, "shipper.segment_shipped", 1))

        # Rotated with a grace, the Secret updated: the next shipment reads the new secret.
        rotated = api(
            reg, admin, "POST", f"/v1/tokens/{created['id']}/rotate", json={"grace_seconds": 900}
        ).json()
        blocked_call(proxy, upstreams)  # shipped with the old secret: it is told its expiry
        lines(proxy, "registry.token_expiring", 1)
        shipped = len(lines(proxy, "shipper.segment_shipped", shipped + 1))
        mount_secret(tmp_path / "secret", rotated["secret"], 2)
        blocked_call(proxy, upstreams)
        [reloaded, *_] = lines(proxy, "registry.token_reloaded", 1)
        assert reloaded["path"] == str(token_file)
        shipped = len(lines(proxy, "shipper.segment_shipped", shipped + 1))
        if workers == 1:  # (each worker reads the file at its own next request)
            # The old secret's expiry went with it: no notice, no gauge.
            assert readiness(proxy) == (200, {"status": "ready"})
            assert samples(proxy, "sharewall_registry_token_expiry_timestamp_seconds") == {}

        # The old secret revoked: nothing the proxy sends is refused. A shipment...
        assert api(reg, admin, "DELETE", f"/v1/tokens/{created['id']}").status_code == 204
        blocked_call(proxy, upstreams)
        lines(proxy, "shipper.segment_shipped", shipped + 1)
        # ...and the snapshot polls: the one answered by the second change was asked after
        # the revocation (after the first change's answer), so with the old secret it would
        # have been refused and the change never taken.
        first, second = changes
        received = len(lines(proxy, "registry.snapshot_received", workers))  # one per worker
        revoke_grant(reg, tokens, first)
        received = len(lines(proxy, "registry.snapshot_received", received + workers))
        revoke_grant(reg, tokens, second)
        lines(proxy, "registry.snapshot_received", received + workers)

        text = proxy.log_text()
        assert readiness(proxy)[0] == 200
        for refused in ("shipper.refused", "registry.follow_refused"):
            assert refused not in text, text[-3000:]
        assert created["secret"] not in text and rotated["secret"] not in text
    finally:
        proxy.stop()
