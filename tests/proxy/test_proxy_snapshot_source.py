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


WORKLOADS = """
workloads:
  - namespace: test-ns
    name: test-workload
    status: approved
    purposes: [service_delivery]
"""


async def test_a_file_saved_in_place_is_loaded_whole_never_half_written(registry):
    """An in-place save (truncated, then written) can be seen half written, and the first half
    of a registry may parse: without its workloads section yet, it would bind no source. A
    change is loaded once the file has stayed the same for an interval."""
    registry.write_text(registry.read_text() + WORKLOADS)
    seen = []
    source = FileSnapshotSource(registry, interval=1.0)
    await source.start(seen.append)
    try:
        assert seen[0].workloads
        edited = registry.read_text().replace("status: approved", "status: suspended", 1)
        cut = edited.index("\nworkloads:") + 1
        with registry.open("w") as f:
            f.write(edited[:cut])  # the recipients, a registry on their own
            f.flush()
            # Still being written: each pause shorter than the interval, two of them longer
            # (a file looked at twice an interval apart is looked at mid-write).
            for i in range(2):
                await asyncio.sleep(0.9)
                f.write(f"# {i}\n")
                f.flush()
            f.write(edited[cut:])
        assert await _until(lambda: len(seen) >= 2)
        assert [bool(s.workloads) for s in seen] == [True, True]
        assert seen[1].recipient("vendor").status == "suspended"
    finally:
        await source.close()


async def test_a_file_written_to_while_it_is_read_is_not_taken(registry):
    """Whatever part of the writing the read saw, the snapshot waits for the file to settle."""
    whole = registry.read_text() + WORKLOADS
    registry.write_text(whole)
    seen = []
    source = FileSnapshotSource(registry, interval=3600)
    await source.start(seen.append)
    try:
        cut = whole.index("\nworkloads:") + 1
        registry.write_text(whole[:cut].replace("status: approved", "status: suspended", 1))
        with capture_logs() as logs:
            reloading = asyncio.create_task(source.reload())
            await asyncio.sleep(0)  # the reload has looked at the file
            with registry.open("a") as f:
                f.write(whole[cut:])
            assert await reloading is False
        assert "snapshot.reload_deferred" in [e["event"] for e in logs]
        assert seen == [source.snapshot]
        assert await source.reload() is True  # settled
        assert seen[1].workloads and seen[1].recipient("vendor").status == "suspended"
    finally:
        await source.close()
