"""Log lines to stdout from a writer thread, through a bounded buffer, whole and in order.

A process's log lines (structlog's and the proxy's decision lines alike) are queued here and
written by one thread, so a stdout whose reader stalls blocks that thread, never the event
loop. Lines queued on the loop are handed to the thread together, 50 ms after the first of
them (one wake-up per batch, not per line); the thread does nothing but `os.write` (which
releases the GIL). To a pipe, a socket or a terminal it writes chunks of whole lines of at most
`PIPE_BUF` bytes, so processes sharing one stdout pipe (`proxy --workers N`) never cut into
each other's lines; to a regular file, each batch in one write (POSIX makes writes to a regular
file atomic with respect to each other), as each write costs the thread a wait for the GIL and
the loop's thread a forced hand-over of it.

The buffer is bounded by its owner, not by dropping: `accepting` turns false once `limit`
bytes wait (or while writes fail, e.g. EPIPE), and the proxy then refuses new calls (503
`log_unavailable`) rather than lose the line of a call it lets through. Lines queued anyway
(those of calls already under way, the refusals', structlog's) are all kept, except lines
queued as `sheddable` (a refusal's, whose record is in the fsync'd spool) once `2 * limit`
bytes wait: those are shed and counted, and a `log.lines_shed` line says how many once the
reader is back.
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import stat
import threading
import time

import orjson

# ~10,000 decision lines: seconds of a stalled reader at 1,000 calls/s.
DEFAULT_LIMIT_BYTES = 4 * 1024 * 1024
# Lines queued on the loop wait this long to be handed off together: one thread wake-up per
# ~50 calls at 1,000 calls/s instead of one per call. Each wake-up costs the thread its CPU
# (~30 us) and, under load, two waits for the GIL that the busy loop's thread must hand over
# (one on waking, one after the write); at 10 ms the writer cost ~2.5x the CPU per call.
# A line reaches stdout up to this much later (the spool gathers its records as long).
HAND_OFF_SECONDS = 0.05
# While a write fails (EPIPE, EIO...), the thread tries the same lines again this often.
RETRY_SECONDS = 1.0


class LineWriter:
    """Queues lines (bytes without the newline) for a writer thread that writes them to `fd`."""

    def __init__(self, fd: int, *, limit: int = DEFAULT_LIMIT_BYTES) -> None:
        self.fd = fd
        self.limit = limit
        # Bytes per write at most (whole lines, one longer line alone); None: the whole batch.
        self._chunk: int | None = select.PIPE_BUF
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self._chunk = None
        except OSError:
            pass
        # Guards the batch being filled and pending_bytes: lines may come from several threads
        # (structlog in a worker thread), and the writer thread takes bytes off.
        self._count = threading.Lock()
        self._queued: list[bytes] = []  # the loop's current batch, not yet handed off
        # Batches handed to the thread (C: put/get wake it without Python-level locking);
        # None tells it to stop.
        self._batches: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._hand_off_scheduled = False
        # Bytes queued and not yet written (the batch being written included).
        self.pending_bytes = 0
        self.written_lines = 0
        self.shed_lines = 0
        self._shed_unreported = 0
        self.error: str | None = None  # the last write's error, None once a write succeeds
        self._closed = False
        self._thread: threading.Thread | None = None

    # The loop's side -------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether a new call's line can be kept: fewer than `limit` bytes wait, writes succeed."""
        return self.pending_bytes < self.limit and self.error is None

    @property
    def problem(self) -> str | None:
        """Why new calls are refused (for `/readyz`), or None."""
        if self.accepting:
            return None
        detail = f": {self.error}" if self.error else " (its reader does not read)"
        return (
            f"stdout takes no log lines{detail}; {self.pending_bytes} bytes wait "
            f"(limit {self.limit}), new calls are refused"
        )

    def write_line(self, line: bytes, *, sheddable: bool = False) -> None:
        """Queue one line (no newline); it reaches `fd` after every line queued before it."""
        size = len(line) + 1
        if sheddable and self.pending_bytes + size > 2 * self.limit:
            self.shed_lines += 1
            self._shed_unreported += 1
            return
        if self._closed:
            self._write_now([line])
            return
        # acquire/release rather than `with`: the statement's __enter__/__exit__ lookups and
        # calls cost ~1k instructions, on every call's line.
        self._count.acquire()
        try:
            self._queued.append(line)
            self.pending_bytes += size
        finally:
            self._count.release()
        if self._hand_off_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: hand off at once
            self._hand_off()
            return
        self._hand_off_scheduled = True
        loop.call_later(HAND_OFF_SECONDS, self._hand_off)

    def drain(self, timeout: float | None = None) -> bool:
        """Hand off what is queued and wait until the thread has written it all; True if it has.

        Without a timeout, waits while the reader is merely slow or stalled, and gives up only
        when writes fail (an error such as EPIPE: nobody will read these lines)."""
        self._hand_off()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending_bytes > 0:
            if self.error is not None:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Drain, stop the thread; later lines are written synchronously. True if nothing was lost."""
        drained = self.drain(timeout)
        self._closed = True
        self._batches.put(None)
        if not drained:
            lost = self.pending_bytes
            os.write(2, f"log lines lost at exit: {lost} bytes ({self.error})\n".encode())
        return drained

    def _hand_off(self) -> None:
        self._hand_off_scheduled = False
        with self._count:
            if not self._queued:
                return
            batch, self._queued = self._queued, []
            self._batches.put(batch)  # under the lock: batches reach the thread in order
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="sharewall-log-writer", daemon=True
            )
            self._thread.start()

    # The thread's side -----------------------------------------------------------------

    def _run(self) -> None:
        batches = self._batches
        while True:
            lines = batches.get()  # blocks without the GIL
            while lines is not None and not batches.empty():  # what queued meanwhile, at once
                more = batches.get_nowait()
                if more is None:
                    self._write_all(lines)
                    return
                lines += more
            if lines is None:
                return
            self._write_all(lines)

    def _write_all(self, lines: list[bytes]) -> None:
        size = sum(map(len, lines)) + len(lines)
        if self._shed_unreported:
            shed, self._shed_unreported = self._shed_unreported, 0
            lines.append(
                orjson.dumps({"event": "log.lines_shed", "level": "warning", "count": shed})
            )
        data = b"\n".join(lines) + b"\n"
        view, done = memoryview(data), 0
        while done < len(data):
            try:
                done += os.write(self.fd, view[done : _chunk_end(data, done, self._chunk)])
            except BlockingIOError:  # a non-blocking stdout: wait until it takes bytes
                select.select([], [self.fd], [])
            except OSError as exc:
                self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
                time.sleep(RETRY_SECONDS)  # then on from `done`: no byte is written twice
        with self._count:
            self.pending_bytes -= size
        self.error = None
        self.written_lines += len(lines)

    def _write_now(self, lines: list[bytes]) -> None:
        data = b"\n".join(lines) + b"\n"
        view, done = memoryview(data), 0
        while done < len(data):
            done += os.write(self.fd, view[done : _chunk_end(data, done, self._chunk)])


def _chunk_end(data: bytes, start: int, chunk: int | None) -> int:
    """Where the write from `start` stops: after the last whole line within `chunk` bytes
    (PIPE_BUF: a pipe keeps a write of up to PIPE_BUF whole), or after one longer line; at the
    end with no `chunk`."""
    if chunk is None:
        return len(data)
    end = start + chunk
    if end >= len(data):
        return len(data)
    cut = data.rfind(b"\n", start, end)
    if cut < start:
        cut = data.find(b"\n", end)
    return cut + 1 if cut >= 0 else len(data)
