"""A local on-disk spool of decision records (JSON lines in segments) for shipping to the registry.

Records are appended to an open segment (`*.jsonl.open`) by a background task, fsync'd in
batches in a worker thread; a segment is sealed (renamed to `*.jsonl`) when it is full, old
or the spool closes. Sealed segments are what the shipper sends, then `remove()`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

log = structlog.get_logger("sharewall.proxy.spool")

OPEN_SUFFIX = ".jsonl.open"
SEALED_SUFFIX = ".jsonl"


class Spool:
    """Append-only decision spool; `append` never blocks the event loop."""

    def __init__(
        self,
        directory: Path,
        *,
        flush_interval: float = 0.2,
        segment_max_records: int = 5000,
        segment_max_age: float = 2.0,
    ) -> None:
        self.directory = Path(directory)
        self.flush_interval = flush_interval
        self.segment_max_records = segment_max_records
        self.segment_max_age = segment_max_age
        self._pending: list[bytes] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._records = 0
        self._opened_at = 0.0
        self._seq = 0
        self._closing = False

    async def start(self) -> None:
        """Create the directory, seal segments left open by a crash, start the writer task."""
        await asyncio.to_thread(self._recover)
        self._task = asyncio.create_task(self._run(), name="spool-writer")

    async def close(self) -> None:
        """Write what is pending, fsync and seal the open segment, stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._flush_and_maybe_seal, self._take(), True)

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record; it reaches the disk within `flush_interval`."""
        self._pending.append(orjson.dumps(record) + b"\n")

    def sealed_segments(self) -> list[Path]:
        """Closed segment files ready for shipping, oldest first."""
        return sorted(self.directory.glob(f"*{SEALED_SUFFIX}"))

    def remove(self, segment: Path) -> None:
        """Delete a segment the registry acknowledged."""
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()

    # -- internals -------------------------------------------------------------------------

    def _take(self) -> list[bytes]:
        batch, self._pending = self._pending, []
        return batch

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.flush_interval)
            self._wakeup.clear()
            batch = self._take()
            try:
                await asyncio.to_thread(self._flush_and_maybe_seal, batch, False)
            except OSError:
                # Keep the records for the next round rather than lose them (disk full...).
                self._pending[:0] = batch
                log.exception("spool.write_failed", directory=str(self.directory))

    def _flush_and_maybe_seal(self, batch: list[bytes], final: bool) -> None:
        if batch:
            if self._file is None:
                self._open_segment()
            assert self._file is not None
            self._file.write(b"".join(batch))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._records += len(batch)
        if self._file is not None and (
            final
            or self._records >= self.segment_max_records
            or time.monotonic() - self._opened_at >= self.segment_max_age
        ):
            self._seal()

    def _open_segment(self) -> None:
        self._seq += 1
        name = f"segment-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{OPEN_SUFFIX}"
        self._path = self.directory / name
        self._file = open(self._path, "ab")  # noqa: SIM115 - kept open across batches
        self._records = 0
        self._opened_at = time.monotonic()

    def _seal(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        sealed = self._path.with_name(self._path.name.removesuffix(OPEN_SUFFIX) + SEALED_SUFFIX)
        os.replace(self._path, sealed)
        _fsync_dir(self.directory)
        self._file = None
        self._path = None

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(self.directory.glob(f"*{OPEN_SUFFIX}")):
            data = leftover.read_bytes()
            # A crash may leave half a line: keep only whole records.
            whole = data[: data.rfind(b"\n") + 1]
            if whole != data:
                leftover.write_bytes(whole)
            sealed = leftover.with_name(leftover.name.removesuffix(OPEN_SUFFIX) + SEALED_SUFFIX)
            os.replace(leftover, sealed)
            log.info("spool.recovered_segment", segment=sealed.name)
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
