"""The proxy's on-disk spool of decision records (JSON lines in segments) for the registry.

- **Durable before the answer**: `commit()` returns once the record is fsync'd. Records that
  arrive within a few milliseconds share one write and one fsync, done in a worker thread (the
  event loop never blocks), so a 403 leaves only after its record is on disk, and throughput
  holds.
- **Unawaited records are gathered**: report mode's would-block records (and a 503's own
  record) wait for no disk. They are written together, up to `flush_interval` (50 ms) after
  the first, in one write without an fsync of their own (the next refusal's fsync, or sealing
  the segment, makes them durable): one hop to the worker thread per interval, not per few
  calls. A refusal arriving meanwhile ends the wait and takes them along.
- **No torn line, no duplicate**: a failed write (disk full) is cut back to the last whole
  record and its segment sealed. The records of the failed write that a caller waits for are
  refused (`SpoolUnavailable`: their calls are answered 503); those nobody waits for (the 503
  faults themselves, report mode's would-block records) are kept in a bounded backlog and
  written once, when the disk takes writes again. The spool reports why it is unwritable
  (`problem`, on `/readyz`) until a write or a probe succeeds.
- **One proxy per directory**: `start()` takes an exclusive `flock` on `spool.lock`; a second
  proxy on the same directory gets `SpoolLocked` (exit 2).
- **Segments know their registry**: each segment starts with a header line naming the registry
  it was written for (`registry_identity`), so a successor ships a crashed predecessor's records
  to that registry and never to another.

A segment is written as `*.jsonl.open` and sealed (renamed to `*.jsonl`) when full, old, after
a failed write, or when the spool closes; sealed segments are what the shipper sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from sharewall.hosts import BadAuthority, format_authority, parse_service_url, split_url

log = structlog.get_logger("sharewall.proxy.spool")

OPEN_SUFFIX = ".jsonl.open"
SEALED_SUFFIX = ".jsonl"
LOCK_FILE = "spool.lock"
PROBE_FILE = ".spool-probe"
HEADER_KEY = "spool_segment"  # the first line of a segment: {"spool_segment": 1, "registry": …}
_PROBE_BYTES = b"\0" * 4096
# A record as a segment line: orjson appends the newline (no copy of the record to add it).
_LINE = orjson.OPT_APPEND_NEWLINE


class SpoolUnavailable(Exception):
    """The record could not be written: the call must fail closed (503)."""


class SpoolLocked(Exception):
    """Another live process owns the spool directory."""


def registry_identity(url: str | None) -> str | None:
    """The registry a segment is written for: `scheme://host:port/path`, normalised; None for none.

    Two spellings of one registry (IDN or punycode, `[::0001]` or `[::1]`, a default port or
    none, a trailing dot or slash) are one identity; userinfo never appears in it.
    """
    if not url:
        return None
    try:
        target = parse_service_url(url)
    except BadAuthority:
        # Not a URL the shipper can call: named as written (lower-cased, without userinfo).
        parts = split_url(url.strip())
        hostport = (parts.authority or "").rpartition("@")[2].lower()
        return f"{parts.scheme}://{hostport}{parts.path.rstrip('/')}"
    authority = format_authority(target.host, target.port, "")  # always with the port
    return f"{target.scheme}://{authority}{target.path.partition('?')[0].rstrip('/')}"


@dataclass
class Segment:
    """A sealed segment read back: the registry it was written for and its records."""

    path: Path
    registry: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    corrupt_lines: int = 0


def read_segment(path: Path) -> Segment:
    """Parse a sealed segment; a corrupt line is counted, logged and skipped (it cannot be sent).

    A segment without a header (written before segments had one) belongs to no known registry.
    """
    segment = Segment(path, None)
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            segment.corrupt_lines += 1
            log.warning("spool.corrupt_line", segment=path.name, line=number)
            continue
        if number == 1 and isinstance(doc, dict) and HEADER_KEY in doc:
            segment.registry = doc.get("registry")
        elif isinstance(doc, dict):
            segment.records.append(doc)
    return segment


T = TypeVar("T")


class _Wakeup:
    """What the writer task waits for (an `asyncio.Event` for one waiter), with a timeout.

    `asyncio.wait_for(event.wait(), timeout)` makes a task and a waiter and, when it times
    out, a cancellation and its exception: ~80k instructions, once or twice per batch. Here
    one future and one timer (~16k), and a timeout is no exception.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None:
            _release(self._waiter)

    def clear(self) -> None:
        self._set = False

    async def wait(self, seconds: float | None) -> None:
        """Return once set, or after `seconds` (None: no limit), whichever comes first."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _release, waiter) if seconds is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _FileThread:
    """The one thread that does the spool's file work, in order: `await run(fn, *args)`.

    `asyncio.to_thread` per batch costs ~128k instructions (a context copy, the executor's
    `concurrent.futures.Future` chained to an asyncio one); a queue to a thread of the spool's
    own and the answer posted back to the loop, ~17k.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sharewall-spool", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the thread; its result, or what it raised."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, answer, fn, args))
        return await answer

    def stop(self) -> None:
        """The thread ends after the jobs queued before (it is never waited for)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        jobs = self._jobs
        while (job := jobs.get()) is not None:  # blocks without the GIL
            loop, answer, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the caller, whatever it is
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_answer, answer, result, error)


def _answer(answer: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if answer.done():  # the caller was cancelled
        return
    if error is None:
        answer.set_result(result)
    else:
        answer.set_exception(error)


class Spool:
    """Append-only decision spool owned by one proxy; nothing here blocks the event loop."""

    def __init__(
        self,
        directory: Path,
        *,
        registry: str | None = None,
        group_window: float = 0.002,
        flush_interval: float = 0.05,
        segment_max_records: int = 5000,
        segment_max_age: float = 2.0,
        probe_interval: float = 1.0,
        backlog_limit: int = 10_000,
    ) -> None:
        self.directory = Path(directory)
        self.registry = registry_identity(registry)
        self.group_window = group_window
        self.flush_interval = flush_interval
        self.segment_max_records = segment_max_records
        self.segment_max_age = segment_max_age
        self.probe_interval = probe_interval
        self.backlog_limit = backlog_limit
        # Counters read by the metrics collector.
        self.records_written = 0  # written to the segment (fsync'd: see `fsyncs`)
        self.fsyncs = 0
        self.write_failures = 0
        self.records_refused = 0
        self.records_dropped = 0
        # Unawaited records of failed writes, written first once the disk takes writes again.
        self._backlog: list[tuple[bytes, asyncio.Future[None] | None]] = []
        self._problem: str | None = None
        self._pending: list[tuple[bytes, asyncio.Future[None] | None]] = []
        self._awaited = 0  # records in `_pending` that a caller waits for (`commit`)
        self._wakeup = _Wakeup()  # something is pending
        self._urgent = _Wakeup()  # a caller waits, or the spool closes: write soon
        self._files: _FileThread | None = None  # from start() to close()
        self._unsynced = False  # the open segment holds bytes written without an fsync
        self._task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._offset = 0
        self._records = 0
        self._opened_at = 0.0
        self._last_probe = 0.0
        self._seq = 0
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the directory (`SpoolLocked` if taken), seal what a crash left open, start writing."""
        self._files = _FileThread()
        try:
            await self._files.run(self._lock_and_recover)
        except BaseException:
            self._files.stop()
            self._files = None
            raise
        self._task = asyncio.create_task(self._run(), name="spool-writer")

    async def close(self) -> None:
        """Write what is pending, seal the open segment, stop the writer, release the lock."""
        if self._closing and self._task is None and self._lock_fd is None:
            return
        self._closing = True
        self._urgent.set()
        # One last try for the backlog (it goes back there if the disk is still full).
        self._pending[:0], self._backlog = self._backlog, []
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._files is not None:
            try:
                await self._files.run(self._close_files)
            finally:
                self._files.stop()
                self._files = None
        if self._backlog:
            log.error(
                "spool.backlog_lost", directory=str(self.directory), records=len(self._backlog)
            )

    # -- writing -----------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why the spool cannot take records now (None: it can)."""
        return self._problem

    async def commit(self, record: dict[str, Any], line: bytes | None = None) -> None:
        """Write one record and return once it is on disk; raise `SpoolUnavailable` if it is not.

        `line`: the record's JSON line (`orjson.dumps` with `OPT_APPEND_NEWLINE`), when the
        caller has it already.
        """
        if self._closing:
            raise SpoolUnavailable("the spool is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line or orjson.dumps(record, option=_LINE), future))
        self._awaited += 1
        self._wakeup.set()
        self._urgent.set()
        await future

    def append(self, record: dict[str, Any], line: bytes | None = None) -> None:
        """Queue one record without waiting for the disk (would-block records of report mode).

        Written with the others of the next `flush_interval`, fsync'd with the next refusal's
        record or when its segment is sealed. `line`: as for `commit`.
        """
        self._pending.append((line or orjson.dumps(record, option=_LINE), None))
        if len(self._pending) == 1:
            self._wakeup.set()

    def sealed_segments(self) -> list[Path]:
        """Closed segment files ready for shipping, oldest first."""
        return sorted(self.directory.glob(f"*{SEALED_SUFFIX}"))

    def remove(self, segment: Path) -> None:
        """Delete a segment the registry acknowledged."""
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()

    # -- the writer task ---------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._files is not None
        files = self._files
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wakeup.wait(self._idle_timeout())
                self._wakeup.clear()
                if not self._pending:
                    await files.run(self._tick)
                    self._requeue_backlog()
                    continue
            if not self._awaited and self.flush_interval > 0 and not self._closing:
                # Nobody waits for these: gather what comes in the next `flush_interval` into
                # one write (a commit, or closing, ends the wait).
                self._urgent.clear()
                await self._urgent.wait(self.flush_interval)
            if self._awaited and self.group_window > 0 and not self._closing:
                # Let the calls of the next few milliseconds share this write and fsync.
                await asyncio.sleep(self.group_window)
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            sync, self._awaited = self._awaited > 0 or self._closing, 0
            try:
                await files.run(self._write, [line for line, _ in batch], sync)
            except OSError as exc:
                self._refuse(batch, exc)
            else:
                self._problem = None
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)
                self._requeue_backlog()

    def _requeue_backlog(self) -> None:
        if self._backlog and self._problem is None:
            self._pending[:0], self._backlog = self._backlog, []
            self._wakeup.set()

    def _idle_timeout(self) -> float | None:
        waits = []
        if self._fd is not None:
            waits.append(self._opened_at + self.segment_max_age - time.monotonic())
        if self._problem is not None:
            waits.append(self._last_probe + self.probe_interval - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    def _refuse(self, batch: list[tuple[bytes, asyncio.Future[None] | None]], exc: OSError) -> None:
        self.write_failures += 1
        self.records_refused += sum(1 for _, f in batch if f is not None)
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self._problem = f"spool unwritable ({reason}: {exc.strerror or exc}) in {self.directory}"
        self._last_probe = time.monotonic()
        kept = [item for item in batch if item[1] is None]
        self._backlog.extend(kept)
        dropped = len(self._backlog) - self.backlog_limit
        if dropped > 0:
            del self._backlog[:dropped]
            self.records_dropped += dropped
        log.error(
            "spool.write_failed",
            directory=str(self.directory),
            error=reason,
            refused=len(batch) - len(kept),
            kept_for_later=len(kept),
            dropped=max(dropped, 0),
        )
        error = SpoolUnavailable(self._problem)
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(error)

    # -- in the worker thread ----------------------------------------------------------------

    def _write(self, lines: list[bytes], sync: bool = True) -> None:
        """Append `lines` to the open segment; with `sync`, fsync it (what was unsynced too)."""
        if self._fd is None:
            self._open_segment()
        assert self._fd is not None
        data = b"".join(lines)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if sync:
                os.fsync(self._fd)
        except OSError:
            self._abandon_segment()
            raise
        if sync:
            self.fsyncs += 1
        self._unsynced = not sync
        self.records_written += len(lines)
        self._offset += len(data)
        self._records += len(lines)
        if self._records >= self.segment_max_records:
            self._seal()

    def _open_segment(self) -> None:
        self._seq += 1
        name = f"segment-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{OPEN_SUFFIX}"
        path = self.directory / name
        header = orjson.dumps({HEADER_KEY: 1, "registry": self.registry}) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            os.write(fd, header)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._path = fd, path
        self._offset = len(header)
        self._records = 0
        self._unsynced = False
        self._opened_at = time.monotonic()

    def _abandon_segment(self) -> None:
        """After a failed write: cut the file back to its last whole record and seal it."""
        assert self._fd is not None and self._path is not None
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._offset)
        if self._records == 0:
            os.close(self._fd)
            self._path.unlink(missing_ok=True)
            self._fd, self._path = None, None
            return
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        self._seal()

    def _seal(self) -> None:
        assert self._fd is not None and self._path is not None
        fd, path = self._fd, self._path
        if self._unsynced:
            # Records nobody waited for: durable before the segment is offered for shipping.
            os.fsync(fd)
            self.fsyncs += 1
            self._unsynced = False
        self._fd, self._path = None, None
        os.close(fd)
        os.replace(path, path.with_name(path.name.removesuffix(OPEN_SUFFIX) + SEALED_SUFFIX))
        _fsync_dir(self.directory)

    def _tick(self) -> None:
        """Idle work: seal an old segment; while unwritable, probe whether space came back."""
        if self._fd is not None and time.monotonic() - self._opened_at >= self.segment_max_age:
            try:
                self._seal()
            except OSError:
                log.exception("spool.seal_failed", directory=str(self.directory))
        if self._problem is not None and time.monotonic() - self._last_probe >= self.probe_interval:
            self._last_probe = time.monotonic()
            probe = self.directory / PROBE_FILE
            try:
                with open(probe, "wb") as handle:
                    handle.write(_PROBE_BYTES)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError:
                return
            finally:
                with contextlib.suppress(OSError):
                    probe.unlink()
            self._problem = None
            log.info("spool.writable_again", directory=str(self.directory))

    def _close_files(self) -> None:
        if self._fd is not None:
            try:
                self._seal()
            except OSError:
                log.exception("spool.seal_failed", directory=str(self.directory))
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock_and_recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.directory / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise SpoolLocked(
                f"spool directory {self.directory} is in use by another proxy (pid {owner}); "
                "give each proxy its own --spool-dir"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        for leftover in sorted(self.directory.glob(f"*{OPEN_SUFFIX}")):
            data = leftover.read_bytes()
            # A crash may leave half a line: keep only whole records.
            whole = data[: data.rfind(b"\n") + 1]
            if whole != data:
                with open(leftover, "r+b") as handle:
                    handle.truncate(len(whole))
                    os.fsync(handle.fileno())
            sealed = leftover.with_name(leftover.name.removesuffix(OPEN_SUFFIX) + SEALED_SUFFIX)
            os.replace(leftover, sealed)
            log.info("spool.recovered_segment", segment=sealed.name)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PROBE_FILE).unlink()
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
