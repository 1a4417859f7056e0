"""The watched registry file: reloads on change (edit, atomic swap), never on a broken file."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from proxy_harness import REGISTRY_YAML

from proxy.snapshot_source import FileSnapshotSource
from sharewall.registry_file import RegistryFileError


async def _until(predicate, timeout: float = 3.0) -> bool:
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
    source = FileSnapshotSource(registry, interval=0.05)
    await source.start(seen.append)
    try:
        registry.write_text(registry.read_text())
        os.utime(registry, ns=(1, 1))
        await asyncio.sleep(0.3)
        assert len(seen) == 1
    finally:
        await source.close()


async def test_a_broken_edit_keeps_the_last_good_snapshot_until_fixed(registry):
    seen = []
    good = registry.read_text()
    source = FileSnapshotSource(registry, interval=0.05)
    await source.start(seen.append)
    try:
        registry.write_text("recipients:\n  - id: Not A Slug\n")
        await asyncio.sleep(0.3)
        assert len(seen) == 1 and source.snapshot is seen[0]
        registry.write_text(good.replace("status: approved", "status: revoked", 1))
        assert await _until(lambda: len(seen) == 2)
    finally:
        await source.close()
