"""Long CPU work on the event loop in slices, so that no call waits behind it.

A worker thread does not help with work that holds the GIL (pydantic validation, building
dicts): the loop waits for the GIL instead. Done on the loop in slices of `SLICE_S`, with the
loop running between them, a call waits at most one slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

SLICE_S = 0.001


async def each_in_slices(
    items: Iterable[T], work: Callable[[T], object], *, slice_s: float = SLICE_S
) -> None:
    """Call `work(item)` for every item, letting the event loop run every `slice_s` seconds."""
    clock = time.perf_counter
    deadline = clock() + slice_s
    for item in items:
        work(item)
        if clock() >= deadline:
            await asyncio.sleep(0)
            deadline = clock() + slice_s


async def sliced(items: Iterable[T], *, slice_s: float = SLICE_S) -> AsyncIterator[T]:
    """Each item of `items` (`async for`), letting the event loop run every `slice_s` seconds.

    For a walk that may stop early (`break`); `each_in_slices` when every item is visited.
    """
    clock = time.perf_counter
    deadline = clock() + slice_s
    for item in items:
        yield item
        if clock() >= deadline:
            await asyncio.sleep(0)
            deadline = clock() + slice_s


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Build a big, long-lived structure without garbage collections, then freeze it.

    A snapshot of 10,000 recipients is ~300,000 objects: allocating them triggers full
    collections that scan the whole heap in one go (100-250 ms during which no call is served,
    measured). Paused while building; afterwards `gc.freeze()` moves what exists to the
    permanent generation, so later collections skip the snapshot (its objects are still freed
    by reference counting when a newer one replaces it).

    The trade: cyclic garbage that calls served during the load left behind is frozen too and
    never collected. Full loads are rare (start, a follower's fallback, a file edit; a delta
    does not pause the collector) and last seconds. Collecting only the young generations
    meanwhile was measured too: it keeps that garbage collectable but scans the growing
    snapshot at every second-generation pass (loop stretches p99 6-7 ms instead of 2.4 ms).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def freeze_start_up_heap() -> None:
    """Collect once, then move every object left to the permanent generation (`gc.freeze()`).

    Called once the proxy is started and warmed up, before it serves: what exists then (modules,
    functions, classes, the inspector's plans, phonenumbers' metadata, the snapshot, the engine)
    lives as long as the process. Left in the collected generations, each full collection walks
    all of it: 22-42 ms with no call served. Frozen, collections see only what calls allocate.
    The same move `collector_paused` makes after each full snapshot load; as there, frozen
    objects are still freed by reference counting (a replaced snapshot is), only cyclic garbage
    among them is never collected, and the collection first leaves none of it behind: it
    unfreezes first, so that the cyclic garbage `collector_paused` froze during start (156
    objects of the start-up load and imports on the sample registry) is collected too.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def consumed(items: list[T]) -> Iterator[T]:
    """Each item of `items`, the list letting go of it as it goes (so it is freed once used).

    Freeing 10,000 decoded recipients in one go is ~15 ms during which no call is served.
    """
    for i in range(len(items)):
        item = items[i]
        items[i] = None  # type: ignore[call-overload]
        yield item


def _emptied(container: list[Any] | dict[Any, Any]) -> Iterator[object]:
    """What `container` holds, taken out one at a time (freed once used, if nothing else holds it)."""
    if isinstance(container, dict):
        while container:
            yield container.popitem()
    else:
        yield from consumed(container)


_releasing: set[asyncio.Task[None]] = set()
# A container someone still refers to is looked at again every `after` seconds, this many times.
_RELEASE_TRIES = 30


def release_gradually(*containers: list[Any] | dict[Any, Any], after: float = 1.0) -> None:
    """Let go of what `containers` hold (a replaced snapshot's recipients, an old index's
    tables) a slice at a time, `after` seconds from now, when whatever else held those (the old
    snapshot, engine, caches) is gone: freeing 10,000 recipients is ~15 ms, an index of 10,000
    recipients' hosts ~3.5 ms, at once.

    A container is emptied only while this is the one reference to it left (no call can be
    reading it); one still referred to is looked at again later, and let go of as it is if it
    stays referred to.
    """

    async def release(held: list[list[Any] | dict[Any, Any]]) -> None:
        tries = 0
        while held:
            await asyncio.sleep(after)
            while held:
                container = held.pop()
                # Referred to by `container` and getrefcount's argument only: ours alone.
                if sys.getrefcount(container) > 2 and tries < _RELEASE_TRIES:
                    held.insert(0, container)
                    del container
                    tries += 1
                    break
                await each_in_slices(_emptied(container), _drop)
                del container

    task = asyncio.get_running_loop().create_task(
        release(list(containers)), name="release-old-snapshot"
    )
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


def _drop(_: object) -> None:
    """Nothing: the item goes when the walk moves on."""
