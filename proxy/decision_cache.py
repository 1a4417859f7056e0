"""A bounded LRU of policy outcomes, keyed on exactly the facts a decision depends on."""

from __future__ import annotations

from typing import Generic, TypeVar

from proxy.decision import Call
from proxy.inspect.model import Inspection

V = TypeVar("V")

# (recipient_id, purpose, categories, source workload, source namespace, scheme, inspected,
#  tls_upstream, inspection complete, UTC day). Never the request id, host, path, method or
# finding locations: the policy may not read those (see policies.rego/sharewall/egress/).
CacheKey = tuple[
    str | None, str | None, frozenset[str], str | None, str | None, str, bool, bool, bool, str
]


def cache_key(call: Call, categories: frozenset[str], complete: bool, day: str) -> CacheKey:
    """The key of one decision: a tuple of already-hashable values, cheap to build and hash."""
    return (
        call.recipient_id,
        call.purpose,
        categories,
        call.source_workload,
        call.source_namespace,
        call.scheme,
        call.inspected,
        call.tls_upstream,
        complete,
        day,
    )


def inspection_key(call: Call, inspection: Inspection, day: str) -> CacheKey:
    """`cache_key` for a call and its inspection."""
    return cache_key(call, inspection.categories, inspection.complete, day)


class DecisionCache(Generic[V]):
    """Least-recently-used map from `CacheKey` to a policy outcome, for one snapshot revision.

    `reset(revision)` empties it when the snapshot changes. `generation` lets a caller that
    awaited an engine drop a result computed against a snapshot replaced meanwhile.

    A plain dict in recency order (dicts keep insertion order): a hit is popped and stored
    again at the end, ~1.3k instructions less than an `OrderedDict` lookup and `move_to_end`
    (a hit is paid by nearly every call); the least recently used entry is the first. The
    most recently used entry is also kept apart: a hit on it (an app's calls of one kind in a
    row) moves nothing, so it is answered by one comparison instead of hashing the key twice
    (~1.2k instructions less).
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self.generation = 0
        self.revision: str | None = None
        self._entries: dict[CacheKey, V] = {}
        # The last entry of `_entries` (the most recently used), or None.
        self._newest: tuple[CacheKey, V] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> V | None:
        """The cached outcome (marked most recently used), or None; counts a hit or a miss."""
        value = self.hit(key)
        if value is None:
            self.misses += 1
        return value

    def hit(self, key: CacheKey) -> V | None:
        """`get` without counting a miss: for a caller that falls back to `get` on None."""
        newest = self._newest
        if newest is not None and newest[0] == key:
            self.hits += 1
            return newest[1]
        entries = self._entries
        value = entries.pop(key, None)
        if value is None:
            return None
        entries[key] = value  # now the most recently used
        self._newest = (key, value)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: V, *, generation: int | None = None) -> None:
        """Store an outcome unless it was computed in an earlier generation (older snapshot)."""
        if self.maxsize == 0 or (generation is not None and generation != self.generation):
            return
        entries = self._entries
        entries.pop(key, None)  # stored again at the end: the most recently used
        entries[key] = value
        self._newest = (key, value)
        if len(entries) > self.maxsize:
            del entries[next(iter(entries))]

    def reset(self, revision: str | None) -> None:
        """Forget every entry unless `revision` is the (non-empty) one they were computed for."""
        # An empty revision says nothing about content: two such snapshots may differ.
        if revision and revision == self.revision:
            return
        self._entries.clear()
        self._newest = None
        self.revision = revision
        self.generation += 1
