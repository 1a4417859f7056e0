"""The watched registry file: reloads on change (edit, atomic swap), never on a broken file."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from proxy_harness import REGISTRY_YAML
from structlog.testing import capture_logs

from proxy.snapshot_source import FileSnapshotSource
from sharewall.registry_file import RegistryFileError

# Each reload decodes the file in a child process: on a loaded machine starting it can take
# seconds. Success returns at once; only a failing test waits this long.
WAIT_S = 60.0


async def _until(predicate, timeout: float = WAIT_S) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.fixture
def registry(tmp_path):
    path = tmp_path / "registry.yaml"
    shutil.copy(REGISTRY_YAML, path)
    return path


async def test_an_unusable_file_at_start_is_an_error(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("recipients: [oops")
    with pytest.raises(RegistryFileError):
        await FileSnapshotSource(path).start(lambda s: None)


async def test_an_atomic_swap_like_a_configmap_update_is_picked_up(registry, tmp_path):
    seen = []
    source = FileSnapshotSource(registry, interval=0.05)
    await source.start(seen.append)
    try:
        new = tmp_path / "next.yaml"
        new.write_text(registry.read_text().replace("status: approved", "status: suspended", 1))
        os.replace(new, registry)
        assert await _until(lambda: len(seen) == 2)
        assert seen[1].recipient("vendor").status == "suspended"
    finally:
        await source.close()


async def test_a_touched_but_unchanged_file_is_not_reloaded(registry):
    seen = []
    text = registry.read_text()
    source = FileSnapshotSource(registry, interval=0.05)
    await source.start(seen.append)
    try:
        registry.write_text(text)
        os.utime(registry, ns=(1, 1))
        await asyncio.sleep(0.3)
        assert len(seen) == 1
        # A real change after the touch: the next snapshot is that change, not the touch.
        registry.write_text(text.replace("status: approved", "status: suspended", 1))
        assert await _until(lambda: len(seen) == 2)
        assert seen[1].recipient("vendor").status == "suspended"
    finally:
        await source.close()


async def test_a_broken_edit_keeps_the_last_good_snapshot_until_fixed(registry):
    seen = []
    good = registry.read_text()
    source = FileSnapshotSource(registry, interval=0.05)
    await source.start(seen.append)
    try:
        with capture_logs() as logs:
            registry.write_text("recipients:\n  - id: Not A Slug\n")
            # The watcher has tried the broken file (not merely: some time went by).
            assert await _until(
                lambda: any(e["event"] == "snapshot.reload_failed" for e in logs)
            ), "the broken edit was never loaded"
        assert len(seen) == 1 and source.snapshot is seen[0]
        registry.write_text(good.replace("status: approved", "status: revoked", 1))
        assert await _until(lambda: len(seen) == 2)
        assert source.snapshot is seen[1]
        assert seen[1].recipient("vendor").status == "revoked"
    finally:
        await source.close()
