"""Work in slices on the event loop: every item visited, and a replaced snapshot let go of."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

from sharewall.slices import (
    collector_paused,
    each_in_slices,
    freeze_start_up_heap,
    release_gradually,
    sliced,
)


class Thing:
    """Something that can be watched being freed."""


async def test_each_in_slices_and_sliced_visit_every_item_in_order_while_the_loop_runs():
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    seen: list[int] = []
    await each_in_slices(range(20000), seen.append, slice_s=0.0001)
    async with contextlib.aclosing(sliced(range(20000), slice_s=0.0001)) as walk:
        async for item in walk:
            seen.append(item)
    task.cancel()
    assert seen == [*range(20000), *range(20000)]
    assert ticks > 2  # the loop ran between slices


async def _until(condition, timeout: float = 10.0) -> None:
    """Return once `condition()` holds, or after `timeout` seconds (the asserts then say why)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def test_release_gradually_frees_what_it_was_given_once_no_one_else_holds_it():
    gc.disable()  # freed by reference counting, not by a collection
    try:
        listed = [Thing() for _ in range(50)]
        mapped = {i: Thing() for i in range(50)}
        still_read = {i: Thing() for i in range(50)}  # a call still holds this table
        watched = [weakref.ref(t) for t in (*listed, *mapped.values(), *still_read.values())]
        reader = still_read
        release_gradually(listed, mapped, still_read, after=0.05)
        del listed, mapped, still_read
        # Waited for, not slept on: on a loaded machine the release may run later than 0.2 s.
        await _until(lambda: not any(w() for w in watched[:100]))
        alive = [w() is not None for w in watched]
        assert alive == [False] * 100 + [True] * 50
        assert len(reader) == 50  # a table someone reads is left whole
        del reader
        await _until(lambda: not any(w() for w in watched))
        assert all(w() is None for w in watched)
    finally:
        gc.enable()


class _Node:
    """A cycle's member that a weak reference can follow."""

    other: _Node | None = None


def test_freezing_the_start_up_heap_collects_the_garbage_a_paused_load_froze() -> None:
    try:
        with collector_paused():
            a, b = _Node(), _Node()
            a.other, b.other = b, a
            gone = weakref.ref(a)
            del a, b  # a cycle: only the collector frees it, and the load's freeze hides it
        gc.collect()
        assert gone() is not None
        freeze_start_up_heap()
        assert gone() is None
    finally:
        gc.unfreeze()
