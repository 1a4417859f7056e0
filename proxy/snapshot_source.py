"""Where the proxy's registry snapshot comes from: a watched YAML file (here) or the registry API.

A source calls `on_snapshot(snapshot)` with every new snapshot it accepts; a snapshot that
fails to load never replaces the last good one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import structlog

from sharewall.registry_file import RegistryFileError, load_registry_file_sliced
from sharewall.snapshot import Snapshot

log = structlog.get_logger("sharewall.proxy.snapshot")

OnSnapshot = Callable[[Snapshot], Awaitable[None] | None]


class SnapshotSource(Protocol):
    """Something that delivers registry snapshots (a file watcher, a registry follower)."""

    async def start(self, on_snapshot: OnSnapshot) -> None: ...

    async def close(self) -> None: ...


def _file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """(inode, device, size, mtime_ns): changes on edit, on atomic rename and on truncation."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class FileSnapshotSource:
    """Loads a YAML registry file, then polls it and reloads it when it changes."""

    def __init__(self, path: Path, *, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self.snapshot: Snapshot | None = None
        self._identity: tuple[int, int, int, int] | None = None
        self._on_snapshot: OnSnapshot | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_snapshot: OnSnapshot) -> None:
        """Load the file once (raising `RegistryFileError` if it is unusable), then watch it."""
        self._on_snapshot = on_snapshot
        self._identity = _file_identity(self.path)
        snapshot = await load_registry_file_sliced(self.path)
        await self._accept(snapshot)
        self._task = asyncio.create_task(self._watch(), name="registry-file-watch")

    async def close(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload(self) -> bool:
        """Load the file now; True if a new snapshot was accepted, False if it failed to load,
        did not change, or changed while it was read (then it is loaded again once settled)."""
        identity = _file_identity(self.path)
        snapshot: Snapshot | None = None
        problem = ""
        try:
            # Decoded in a child process, validated in slices: calls keep being served.
            snapshot = await load_registry_file_sliced(self.path)
        except RegistryFileError as exc:
            problem = str(exc)
        if _file_identity(self.path) != identity:
            # Written to while it was read: what was read may be a file half written.
            log.info("snapshot.reload_deferred", path=str(self.path), reason="changed_while_read")
            return False
        if snapshot is None:
            log.warning("snapshot.reload_failed", path=str(self.path), reason=problem)
            return False
        await asyncio.sleep(0)  # what the load let go of, and calls, before the swap's work
        if self.snapshot is not None and snapshot.revision == self.snapshot.revision:
            return False  # touched, not changed
        await self._accept(snapshot)
        return True

    async def _accept(self, snapshot: Snapshot) -> None:
        assert self._on_snapshot is not None
        result = self._on_snapshot(snapshot)
        if inspect.isawaitable(result):
            await result
        self.snapshot = snapshot
        log.info(
            "snapshot.loaded",
            path=str(self.path),
            revision=snapshot.revision,
            recipients=len(snapshot.recipients),
            **snapshot.source_binding(),
        )

    async def _watch(self) -> None:
        seen = self._identity
        while True:
            await asyncio.sleep(self.interval)
            identity = _file_identity(self.path)
            if identity != seen:
                # Changed since the last look: loaded once it has stayed so for an interval.
                # A file saved in place (truncated, then written) can be seen half written,
                # and its first half may parse: a registry without its workloads section yet
                # binds no source, and calls it would refuse went through until the next look.
                seen = identity
                continue
            if identity == self._identity:
                continue
            self._identity = identity
            try:
                await self.reload()
            except Exception:
                # A bug in a callback must not stop the watcher: the old snapshot stays.
                log.exception("snapshot.reload_failed", path=str(self.path), reason="internal")
