"""The current snapshot of a registry process, shared by the snapshot and bundle routes.

One `SnapshotHub` per app builds the snapshot once per version (10,000 recipients are not
rebuilt per request), wakes long polls when a write in this process commits a new version
(`keys.notify_snapshot_changed`) and, for several registry processes on one database, polls
`registry_state.version` every half second as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker

from registry.errors import ApiError
from registry.snapshot_builder import (
    PartCache,
    encoded_snapshot,
    fetch_snapshot_rows,
    read_version,
    unversioned_changes,
)
from sharewall.snapshot_delta import EncodedSnapshot, encode_delta, fingerprint

from . import keys

log = structlog.get_logger("sharewall.snapshot")

VERSION_POLL_INTERVAL_S = 0.5
# How often the poller reads every row to find recipients whose content changed without their
# version (a write path that forgot to bump it): those are re-read by the next build.
VERIFY_INTERVAL_S = 600.0
# How long shutdown waits for the version poller's read in progress before cancelling it.
POLLER_STOP_TIMEOUT_S = 10.0
# Versions a delta can start from: a follower further behind gets the full snapshot.
DELTA_HISTORY = 32
# A delta that changes more than this share of the recipients is sent as the full snapshot.
DELTA_MAX_SHARE = 0.5


@dataclass
class _Base:
    """What a delta from one past version needs: its revision and per-recipient fingerprints."""

    revision: str
    recipients: dict[str, int]
    workloads: int


@dataclass
class BuiltSnapshot:
    """A snapshot's encodings, built once per version."""

    header: dict[str, Any]  # version, revision, generated_at
    encoded: EncodedSnapshot
    body: bytes
    bundle: tuple[bytes, str] | None = field(default=None)  # (bytes, etag), built on first use
    gzip: bytes | None = field(default=None)  # made on first use (deltas need none)
    deltas: dict[int, bytes | None] = field(default_factory=dict)  # base version → delta body
    _document: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def document(self) -> dict[str, Any]:
        """The snapshot as dicts (the bundle and the impact replay use it), decoded on first use."""
        if self._document is None:
            self._document = orjson.loads(self.body)
        return self._document

    @property
    def version(self) -> int:
        return int(self.header["version"])

    @property
    def revision(self) -> str:
        return str(self.header["revision"])

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    async def gzip_body(self) -> bytes:
        """The body gzip'd (in a worker thread: zlib lets the loop run), once per version."""
        if self.gzip is None:
            self.gzip = await asyncio.to_thread(gzip.compress, self.body, 6, mtime=0)
        return self.gzip


def _build(rows: Any, reuse: PartCache | None) -> tuple[BuiltSnapshot, PartCache]:
    header, encoded, cache = encoded_snapshot(rows, reuse)
    body = encoded.body(header["version"], header["revision"], header["generated_at"])
    return BuiltSnapshot(header, encoded, body), cache


class SnapshotHub:
    """The current snapshot of one registry process and the wake-ups of its long polls."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._built: BuiltSnapshot | None = None
        self._history: OrderedDict[int, _Base] = OrderedDict()
        self._parts: PartCache | None = None  # the last build's, reused by the next
        self._suspect: set[str] = set()  # re-read whole by the next build (see `verify`)
        self._verified_at = time.monotonic()  # the last read of every row
        self._lock = asyncio.Lock()
        self._known: int | None = None
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()  # set at shutdown: long polls answer, the poller ends
        self.builds = 0
        self.incremental_builds = 0  # builds that read only the recipients that moved
        self.poll_interval = VERSION_POLL_INTERVAL_S
        self.verify_interval = VERIFY_INTERVAL_S

    @property
    def _sessions(self) -> async_sessionmaker:
        # Looked up on use: the database engine is created at startup, after routes are added.
        return self._app[keys.SESSIONS]

    def notify(self, version: int) -> None:
        """Record that `version` is committed and wake every waiter (a snapshot listener)."""
        if version == self._known:
            return
        self._known = version
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """Release every long poll now (they answer 304): shutdown must not wait out a `wait`."""
        self._closed.set()
        self._changed.set()

    async def current_version(self) -> int:
        """The committed version, read from the database (one indexed single-row read)."""
        async with self._sessions() as session:
            version = await read_version(session)
        self.notify(version)
        return version

    async def get(self) -> BuiltSnapshot:
        """The snapshot at the committed version, built at most once per version."""
        version = await self.current_version()
        built = self._built
        if built is not None and built.version == version:
            return built
        async with self._lock:
            built = self._built
            if built is not None and built.version == version:
                return built
            started = time.perf_counter()
            held, suspect = self._parts, self._suspect
            if held and suspect:
                held = {rid: entry for rid, entry in held.items() if rid not in suspect}
            async with self._sessions() as session:
                # Only the recipients whose stamp moved since the last build are read whole.
                rows = await fetch_snapshot_rows(session, held)
            fetched = time.perf_counter()
            # Encoding is CPU work: keep the event loop serving long polls.
            built, self._parts = await asyncio.to_thread(_build, rows, held)
            self._suspect = self._suspect - suspect
            if rows.present is None:
                self._verified_at = time.monotonic()
                # What is alive after a full build (the app, the imports, the 10,000 parts)
                # lives on: out of the collector's generations, a full collection no longer
                # rescans it (in process at 10k: a build's worst CPU 163-177 -> 65-68 ms).
                gc.freeze()
            self._built = built
            self._remember(built)
            self.builds += 1
            self.incremental_builds += rows.present is not None
            log.info(
                "snapshot.built",
                version=built.version,
                recipients=len(built.encoded.recipients),
                bytes=len(built.body),
                read=len(rows.recipients),
                incremental=rows.present is not None,
                fetch_ms=round((fetched - started) * 1e3, 1),
                encode_ms=round((time.perf_counter() - fetched) * 1e3, 1),
            )
            return built

    def _remember(self, built: BuiltSnapshot) -> None:
        self._history[built.version] = _Base(
            built.revision, fingerprint(built.encoded), hash(built.encoded.workloads)
        )
        while len(self._history) > DELTA_HISTORY:
            self._history.popitem(last=False)

    def delta(self, built: BuiltSnapshot, base_version: int) -> bytes | None:
        """The delta body from `base_version` to `built`, or None (base unknown, or too big)."""
        if base_version in built.deltas:
            return built.deltas[base_version]
        base = self._history.get(base_version)
        body: bytes | None = None
        if base is not None and base_version < built.version:
            body, changes = encode_delta(
                version=built.version,
                revision=built.revision,
                generated_at=built.header["generated_at"],
                base_version=base_version,
                base_revision=base.revision,
                base=base.recipients,
                base_workloads=base.workloads,
                current=built.encoded,
            )
            if changes > DELTA_MAX_SHARE * max(len(built.encoded.recipients), 1):
                body = None
        built.deltas[base_version] = body
        return body

    async def wait_for_change(self, version: int, seconds: float) -> bool:
        """Wait until a version other than `version` is known, or `seconds`; True if it changed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._known == version and not self._closed.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False
        return self._known != version

    async def verify(self) -> set[str]:
        """Read every row (as a restart would) and find the recipients whose content changed
        under an unchanged `(version, created_at)`: each is a write that forgot the version,
        which incremental builds would not see. They are logged and re-read whole by the next
        build (the version served now keeps its content: its ETag cannot change)."""
        held = self._parts
        if not held:
            return set()
        async with self._sessions() as session:
            rows = await fetch_snapshot_rows(session)
            after = await read_version(session)
        self._verified_at = time.monotonic()
        if after != rows.version:
            return set()  # a write landed while reading: its rows may be newer than their stamps
        stale = await asyncio.to_thread(unversioned_changes, rows, held)
        if stale:
            log.warning(
                "snapshot.unversioned_change", count=len(stale), recipients=sorted(stale)[:20]
            )
            self._suspect = self._suspect | stale
        return stale

    async def poll_versions(self) -> None:
        """Fallback for writes made by other processes: notice a new version within
        `poll_interval`; every `verify_interval`, check the held parts against every row.
        Returns once the hub is closed, between reads (see `_version_poller`)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.poll_interval)
            if self._closed.is_set():
                return
            try:
                await self.current_version()
                if self._parts and time.monotonic() - self._verified_at > self.verify_interval:
                    await self.verify()
            except Exception as exc:  # a database blip must not end the poller
                log.warning("snapshot.version_poll_failed", error=type(exc).__name__)


SNAPSHOT_HUB = web.AppKey("snapshot_hub", SnapshotHub)


def hub(app: web.Application) -> SnapshotHub:
    """The app's snapshot hub (created by `ensure_hub`)."""
    return app[SNAPSHOT_HUB]


def ensure_hub(app: web.Application) -> None:
    """Create the app's hub once, with its change listener, version poller and shutdown hook."""
    if SNAPSHOT_HUB in app:
        return
    snapshots = SnapshotHub(app)
    app[SNAPSHOT_HUB] = snapshots
    keys.add_snapshot_listener(app, snapshots.notify)
    app.cleanup_ctx.append(_version_poller)
    # on_shutdown runs before aiohttp waits for in-flight handlers to finish.
    app.on_shutdown.append(_release_long_polls)


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2 weak comparison of `If-None-Match` against our (strong) ETag."""
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def parse_wait(raw: str | None, cap: float, *, field_name: str = "wait") -> float:
    """A long-poll duration in seconds (clamped to `cap`); 422 when not a number >= 0."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects NaN
        raise ApiError(
            422,
            "validation-error",
            "Invalid query parameter",
            f"{field_name}: expected seconds >= 0",
            {"errors": [{"field": field_name, "message": "expected seconds >= 0"}]},
        )
    return min(value, cap)


async def _release_long_polls(app: web.Application) -> None:
    hub(app).close()


async def _version_poller(app: web.Application) -> AsyncIterator[None]:
    snapshots = hub(app)
    task = asyncio.create_task(snapshots.poll_versions(), name="snapshot-version-poller")
    yield
    # Stopped, not cancelled: a read cancelled midway leaves the database driver's thread
    # working after the engine is disposed and the loop closed (aiosqlite then raises
    # "Event loop is closed" from that thread).
    snapshots.close()
    done, _ = await asyncio.wait({task}, timeout=POLLER_STOP_TIMEOUT_S)
    if not done:  # a read stuck on the database: cancelled, as a last resort
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
