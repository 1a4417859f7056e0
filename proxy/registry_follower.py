"""A snapshot source that follows the registry's `GET /v1/snapshot` (ETag + long poll), cached on disk.

Holding a version, the follower asks for a delta (`sharewall.snapshot_delta`): the registry
answers with what changed since, which is validated and merged (and must hash to the registry's
revision); a registry that cannot serve one answers with the full snapshot, and a delta that
does not apply is followed by a full fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import orjson
import structlog

from proxy.control_client import ControlClient
from proxy.registry_token import REFUSED_STATUSES, Refusals, RegistryToken, TokenExpiry
from sharewall.slices import release_gradually
from sharewall.snapshot import Snapshot
from sharewall.snapshot_delta import DELTA_MEDIA_TYPE, DeltaError, HeldSnapshot

log = structlog.get_logger("sharewall.proxy.registry_follower")

SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_PATH = "/v1/snapshot"
OnSnapshot = Callable[[Snapshot], Awaitable[None] | None]


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): uniform in [base/2, min(cap, base*2^n)]."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(min(base / 2, ceiling), ceiling)


def snapshot_etag(snapshot: Snapshot) -> str:
    """The ETag the registry gives a snapshot: its quoted version."""
    return f'"{snapshot.version}"'


def write_file_atomically(path: Path, body: bytes | Iterable[bytes]) -> None:
    """Write `body` (bytes, or pieces of it) to `path` atomically (temp file in the same
    folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new name per write, created exclusively, as tempfile.mkstemp would (tempfile imports
    # shutil, and with it bz2 and lzma: 0.35 MB of every sidecar for one file name).
    tmp = path.parent / f".{path.name}-{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in (body,) if isinstance(body, bytes) else body:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_snapshot_file(path: Path) -> bytes | None:
    """The cached snapshot's bytes, or None when there is none (or it cannot be read)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("registry.snapshot_cache_unreadable", path=str(path), error=type(exc).__name__)
        return None


class RegistryFollower:
    """Follow the registry's snapshot: the cache first, then long polls; `on_snapshot` gets each new one.

    The last snapshot `on_snapshot` accepted is written to `<state_dir>/snapshot.json`, so a proxy
    restarted while the registry is down still enforces the last approved registry.
    """

    def __init__(
        self,
        registry_url: str,
        token: str | RegistryToken | None,
        state_dir: Path,
        *,
        wait: float = 30.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        connect_timeout: float = 5.0,
        token_expiry: TokenExpiry | None = None,
    ) -> None:
        self.registry_url = registry_url
        self.url = registry_url.rstrip("/") + SNAPSHOT_PATH
        # A fixed secret, or a token file read again when it changes (`RegistryToken`).
        self.token = token if isinstance(token, RegistryToken) else RegistryToken(token)
        self.path = Path(state_dir) / SNAPSHOT_FILE
        self.wait = wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.connect_timeout = connect_timeout
        self.token_expiry = token_expiry or TokenExpiry()
        # The registry's refusals of our snapshot requests (a revoked or expired token): the
        # proxy goes on enforcing what it holds, which no longer follows the registry.
        self.refusals = Refusals()
        self.held: HeldSnapshot | None = None
        self._etag: str | None = None
        # Off when the registry's revision is not the hash of its own content (an older
        # registry): a delta could never be checked, so it is not asked for.
        self._use_deltas = True
        self._full_next = False  # the last delta failed: fetch the full snapshot once
        self._on_snapshot: OnSnapshot | None = None
        self._task: asyncio.Task[None] | None = None
        self._persisting: asyncio.Future[None] | None = None
        self._client: ControlClient | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        return self.held.snapshot if self.held is not None else None

    @property
    def has_snapshot(self) -> bool:
        return self.held is not None

    def notices(self) -> list[str]:
        """`/readyz` notices: the registry refusing our snapshot requests (empty: it is not)."""
        refusal = self.refusals.current
        if refusal is None:
            return []
        version = self.held.snapshot.version if self.held is not None else None
        return [
            refusal.notice(
                "snapshot requests",
                f"the proxy enforces the snapshot it holds (version {version}), which no "
                "longer follows the registry",
            )
        ]

    async def start(self, on_snapshot: OnSnapshot) -> None:
        """Load the cached snapshot (if any) into `on_snapshot`, then follow the registry in the background."""
        self._on_snapshot = on_snapshot
        cached = await self._load_cache()
        if cached is not None:
            log.info(
                "registry.snapshot_cached", version=cached.snapshot.version, path=str(self.path)
            )
            await self._accept(cached, persist=False)
        # No Accept-Encoding: gzip: the client would inflate a full snapshot in one call on the
        # loop (~4 MB at 10,000 recipients), and a delta is small anyway.
        self._client = ControlClient(
            self.registry_url,
            token=self.token.current(),
            headers={"Accept": "application/json"},
            connect_timeout=self.connect_timeout,
        )
        if cached is None:
            # One quick try, so a proxy started beside a live registry starts ready.
            try:
                await self._poll_once(bound=self.connect_timeout)
            except Exception as exc:
                log.warning("registry.first_fetch_failed", error=type(exc).__name__)
        self._task = asyncio.create_task(self._follow(), name="registry-follower")

    async def close(self) -> None:
        """Stop following and close the HTTP session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._persisting is not None:
            with contextlib.suppress(Exception):
                await self._persisting
            self._persisting = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _load_cache(self) -> HeldSnapshot | None:
        """The snapshot kept on disk, validated like one from the registry (None if unusable)."""
        body = await asyncio.to_thread(read_snapshot_file, self.path)
        if body is None:
            return None
        try:
            return await HeldSnapshot.load(body)
        except ValueError as exc:  # a corrupt cache is not fatal: the registry has the truth
            log.warning(
                "registry.snapshot_cache_unreadable", path=str(self.path), error=type(exc).__name__
            )
            return None

    async def _accept(
        self,
        held: HeldSnapshot,
        *,
        persist: bool,
        body: bytes | None = None,
        etag: str | None = None,
    ) -> None:
        assert self._on_snapshot is not None
        result = self._on_snapshot(held.snapshot)
        if inspect.isawaitable(result):
            await result
        # Only a snapshot the proxy took is "last good": persist after on_snapshot succeeded.
        replaced, self.held = self.held, held
        if replaced is not None:
            # Its two 10,000-entry tables freed a slice at a time (the parts of a full load are
            # all its own: ~1-2 ms at once), once the old snapshot is gone everywhere.
            release_gradually(replaced.by_id, replaced.encoded.recipients)
            del replaced
        self._etag = etag or snapshot_etag(held.snapshot)
        log.info(
            "snapshot.loaded",
            registry=self.url,
            version=held.snapshot.version,
            revision=held.snapshot.revision,
            recipients=len(held.snapshot.recipients),
        )
        if persist:  # after the line: the snapshot is in force, the cache is for restarts
            # Shielded and kept: a close() mid-write waits for it, so the cache on disk is the
            # snapshot last taken (a cancelled await would leave the thread writing after close).
            self._persisting = asyncio.ensure_future(
                asyncio.to_thread(
                    write_file_atomically,
                    self.path,
                    body if body is not None else held.body_chunks(),
                )
            )
            await asyncio.shield(self._persisting)

    async def _follow(self) -> None:
        attempt = 0
        while True:
            try:
                changed = await self._poll_once()
                attempt = 0
                if not changed and self.wait <= 0:
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is retried: the cache keeps enforcing meanwhile
                delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
                attempt += 1
                refusal = self.refusals.current
                if isinstance(exc, RegistryHTTPError) and refusal is not None:
                    log.error(
                        "registry.follow_refused",
                        status=refusal.status,
                        reason=refusal.reason,
                        detail=refusal.detail,
                        attempt=attempt,
                        retry_in=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "registry.follow_failed",
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _poll_once(self, *, bound: float | None = None) -> bool:
        """One GET (a long poll once we hold a version); True when a new snapshot was taken.

        `bound` limits the request (not the loading of what it brought, which takes its time
        in slices: cutting it short would only start it over)."""
        assert self._client is not None
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
            if self._use_deltas and not self._full_next and self.held is not None:
                headers["Accept"] = f"{DELTA_MEDIA_TYPE}, application/json;q=0.5"
            if self.wait > 0 and not self._full_next:
                params["wait"] = str(int(self.wait))
        secret = self.token.current()
        self._client.use_token(secret)
        async with asyncio.timeout(bound if bound is not None else self.wait + 15.0):
            resp = await self._client.get(SNAPSHOT_PATH, headers=headers, params=params)
        if secret == self.token.secret:  # else the expiry is of a secret replaced meanwhile
            self.token_expiry.note(resp.headers)
        if resp.status == 401:
            self.token.refused()  # a rotated secret in the file is used by the retry
        if resp.status in REFUSED_STATUSES:
            self.refusals.refused(resp.status, resp.body)
            raise RegistryHTTPError(resp.status, resp.text()[:200])
        if resp.status in (200, 304) and (ended := self.refusals.accepted()) is not None:
            log.info("registry.follow_refusal_over", reason=ended.reason)
        if resp.status == 304:
            return False
        if resp.status != 200:
            raise RegistryHTTPError(resp.status, resp.text()[:200])
        body = resp.body
        etag = resp.headers.get("etag")
        media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        is_delta = media_type == DELTA_MEDIA_TYPE
        if is_delta:
            return await self._take_delta(body, etag)
        self._full_next = False
        # Validating 10,000 recipients takes a while: decoded in a child process, validated in
        # slices, so that no call waits on it (a worker thread would hold the GIL as long).
        held = await HeldSnapshot.load(body)
        snapshot = held.snapshot
        self._use_deltas = await held.content_revision() == snapshot.revision
        if not self._use_deltas:
            log.info("registry.deltas_off", reason="revision is not the content hash")
        log.info(
            "registry.snapshot_received",
            version=snapshot.version,
            revision=snapshot.revision,
            recipients=len(snapshot.recipients),
            delta=False,
            **snapshot.source_binding(),
        )
        await self._accept(held, persist=True, body=body, etag=etag)
        return True

    async def _take_delta(self, body: bytes, etag: str | None) -> bool:
        """Apply a delta to the held snapshot; on any mismatch fetch the full snapshot next."""
        held = self.held
        try:
            if held is None:
                raise DeltaError("no snapshot held")
            delta = orjson.loads(body)
            # Merged on the loop in 1 ms slices, the ~4 MB hash in a worker thread.
            new = await held.apply_async(delta)
        except (DeltaError, ValueError) as exc:
            log.warning("registry.delta_rejected", reason=str(exc)[:200])
            self._full_next = True
            return False
        snapshot = new.snapshot
        log.info(
            "registry.snapshot_received",
            version=snapshot.version,
            revision=snapshot.revision,
            recipients=len(snapshot.recipients),
            delta=True,
            changed=len(delta.get("recipients", ())) + len(delta.get("removed", ())),
            **snapshot.source_binding(),
        )
        await self._accept(new, persist=True, etag=etag)
        return True


class RegistryHTTPError(Exception):
    """The registry answered something other than 200/304."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
