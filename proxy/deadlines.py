"""Read deadlines on a stream without a timer per read: one lazily re-armed timer per stream.

`asyncio.timeout()` around every read schedules a timer and cancels it again (a heap push, a
Timeout object and two running-loop lookups per read): two of them per proxied call, for the
client's next request head and for the upstream's response head. A `StreamDeadline` keeps one
timer per stream. Setting a deadline is a float assignment unless it is earlier than the armed
timer; when the timer fires before the deadline (it moved later meanwhile) it re-arms itself
for the new one. On a keep-alive connection that reads one request after another, the timer
fires about once per timeout period instead of being scheduled and cancelled per request.

A read still waiting when its deadline passes fails with `TimeoutError` (the reader's
exception is set, so any later read on the stream fails too: a timed-out stream is done), and,
with `abort=True`, the transport is aborted so that a write waiting in `drain()` fails as well
(`expired` tells the caller why).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Protocol

NEVER = math.inf


class Failable(Protocol):
    """What a deadline fails: a `StreamReader`, or a protocol that reads (`proxy.http1`)."""

    def set_exception(self, exc: BaseException) -> None: ...


class StreamDeadline:
    """A deadline for the reads of one stream (loop time; `NEVER` between reads)."""

    __slots__ = ("__weakref__", "_abort", "_armed_at", "_handle", "_loop", "_reader", "_transport",
                 "deadline", "expired")  # fmt: skip

    def __init__(
        self,
        reader: Failable,
        transport: asyncio.BaseTransport | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        abort: bool = False,
    ) -> None:
        self._reader = reader
        self._transport = transport
        self._loop = loop or asyncio.get_running_loop()
        self._abort = abort
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = NEVER
        self.deadline = NEVER
        self.expired = False

    def time(self) -> float:
        return self._loop.time()

    def start(self, seconds: float) -> float:
        """Reads fail once `seconds` from now have passed; the deadline (loop time)."""
        deadline = self._loop.time() + seconds
        if self.expired or deadline < self._armed_at:
            self.set(deadline)
        else:
            self.deadline = deadline  # (`set()`'s usual case inline: once or twice per call)
        return deadline

    def set(self, deadline: float) -> None:
        """Reads fail once the loop time `deadline` has passed (until `clear()`)."""
        if self.expired:
            return
        self.deadline = deadline
        if deadline < self._armed_at:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = deadline
            # The timer holds the stream weakly: a stream dropped without `close()` is freed.
            self._handle = self._loop.call_at(deadline, _check, weakref.ref(self))

    def clear(self) -> None:
        """No read is waiting on a deadline (the timer, if armed, will find nothing to do)."""
        self.deadline = NEVER

    def close(self) -> None:
        """The stream is done: drop the timer (it would keep the stream alive until it fires)."""
        self.deadline = NEVER
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = NEVER

    def _check(self) -> None:
        self._handle = None
        self._armed_at = NEVER
        deadline = self.deadline
        if deadline == NEVER:
            return
        if self._loop.time() < deadline:
            self.set(deadline)  # the deadline moved later since the timer was armed
            return
        self.expired = True
        self._reader.set_exception(TimeoutError())
        if self._abort and self._transport is not None:
            self._transport.abort()


def _check(ref: weakref.ref[StreamDeadline]) -> None:
    deadline = ref()
    if deadline is not None:
        deadline._check()
