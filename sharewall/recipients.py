"""Recipient resolution: which registered recipient a (host, port) belongs to, for one snapshot."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable

import structlog

from sharewall.hosts import (
    BadAuthority,
    is_ip_literal,
    normalise_host_cached,
    parse_host_pattern,
)
from sharewall.public_suffixes import load_public_suffixes
from sharewall.slices import collector_paused, each_in_slices, sliced
from sharewall.snapshot import Recipient, Snapshot

log = structlog.get_logger("sharewall.recipients")


_psl = load_public_suffixes()


@functools.lru_cache(maxsize=4096)
def _public_suffix(name: str) -> str:
    """The longest public suffix of `name` (ICANN and private sections), "" when none applies."""
    return _psl.publicsuffix(name) or ""


def is_public_suffix(name: str) -> bool:
    """True when `name` is itself a public suffix ("com", "co.uk", "github.io") or a bare TLD."""
    return "." not in name or _public_suffix(name) == name


# One name's patterns: port (None = any port) → recipient.
_Entry = dict[int | None, Recipient]

# resolve() answers per (host, port), kept per index: a sidecar calls a handful of hosts, and an
# index is never mutated after construction (a new snapshot builds a new index), so an answer
# never goes stale. Bounded so that an app calling endless distinct hosts cannot grow it.
_RESOLVE_CACHE_SIZE = 4096
_MISS = object()


class RecipientIndex:
    """Host → recipient for one snapshot; O(1)-ish for 10,000 recipients.

    Exact names win over wildcards, a longer wildcard suffix over a shorter one, and at the
    same name a port-specific pattern over an any-port one. A wildcard `*.example.com` matches
    any depth below the suffix but never the apex, and never a host whose own public suffix
    lies below the wildcard's suffix (`*.amazonaws.com` does not match `x.s3.amazonaws.com`).
    """

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._exact: dict[str, _Entry] = {}
        self._wildcard: dict[str, _Entry] = {}
        self._resolved: dict[tuple[str, int], Recipient | None] = {}
        # Names claimed by two recipients: who holds them depends on the snapshot's order.
        self._contested: set[tuple[bool, str, int | None]] = set()
        if snapshot is not None:
            self.add(snapshot.recipients)

    def add(self, recipients: Iterable[Recipient]) -> None:
        """Register `recipients`' host patterns, in order (only while the index is being built)."""
        for recipient in recipients:
            self._add_recipient(recipient)

    def _add_recipient(self, recipient: Recipient) -> None:
        for pattern in recipient.hosts:
            self._add(recipient, pattern)

    @classmethod
    async def build_sliced(cls, recipients: Iterable[Recipient]) -> RecipientIndex:
        """The index of `recipients`, built on the event loop in slices (`sharewall.slices`)."""
        index = cls()
        with collector_paused():
            await each_in_slices(recipients, index._add_recipient)
        return index

    def updated(
        self, removed: Iterable[Recipient], added: Iterable[Recipient]
    ) -> RecipientIndex | None:
        """A new index without `removed` and with `added`, sharing this one's unchanged entries.

        None when a name either side touches is contested (or becomes so): then who holds it
        depends on the whole snapshot's order, and the caller builds the index afresh.
        """
        new = RecipientIndex()
        new._exact, new._wildcard = dict(self._exact), dict(self._wildcard)
        new._contested = set(self._contested)
        for recipient in removed:
            for pattern in recipient.hosts:
                key = _pattern_key(pattern)
                if key is None:
                    continue  # never registered
                if key in new._contested:
                    return None
                wildcard, name, port = key
                table = new._wildcard if wildcard else new._exact
                entry = table.get(name)
                if entry is None or port not in entry:
                    continue
                entry = dict(entry)  # entries are shared with the old index: copy, then change
                del entry[port]
                if entry:
                    table[name] = entry
                else:
                    del table[name]
        for recipient in added:
            for pattern in recipient.hosts:
                if not new._add(recipient, pattern, shared=True):
                    return None
        return new

    def _add(self, recipient: Recipient, pattern: str, *, shared: bool = False) -> bool:
        """Register one pattern; False when it collides with another recipient's."""
        try:
            parsed = parse_host_pattern(pattern)
        except BadAuthority as exc:
            log.warning(
                "recipients.pattern_rejected",
                recipient_id=recipient.id,
                pattern=pattern,
                why=str(exc),
            )
            return True
        name, wildcard, port = parsed.name, parsed.wildcard, parsed.port
        if wildcard and is_public_suffix(name):
            log.warning(
                "recipients.pattern_rejected",
                recipient_id=recipient.id,
                pattern=pattern,
                why="wildcard over a public suffix",
            )
            return True
        table = self._wildcard if wildcard else self._exact
        entry = table.get(name)
        holder = entry.get(port) if entry is not None else None
        if holder is not None and holder.id != recipient.id:
            self._contested.add((wildcard, name, port))
            if shared:
                return False
            # First registration wins so that a later, conflicting claim cannot take a host over.
            log.warning(
                "recipients.host_conflict",
                pattern=pattern,
                recipient_id=recipient.id,
                kept_recipient_id=holder.id,
            )
            return False
        entry = {} if entry is None else (dict(entry) if shared else entry)
        entry[port] = recipient
        table[name] = entry
        return True

    def tables(self) -> tuple[dict[str, _Entry], dict[str, _Entry]]:
        """Its two big tables, for `release_gradually` once the index is replaced (freeing
        10,000 recipients' host entries at once is ~3.5 ms)."""
        return self._exact, self._wildcard

    def __len__(self) -> int:
        return sum(len(e) for e in self._exact.values()) + sum(
            len(e) for e in self._wildcard.values()
        )

    def resolve(self, host: str, port: int) -> Recipient | None:
        """The recipient that `host:port` belongs to, or None when no pattern matches."""
        key = (host, port)
        found = self._resolved.get(key, _MISS)
        if found is not _MISS:
            return found  # type: ignore[return-value]
        found = self._match(host, port)
        if len(self._resolved) >= _RESOLVE_CACHE_SIZE:
            # Drop the oldest answer (dicts keep insertion order): cheap, and enough for a bound.
            del self._resolved[next(iter(self._resolved))]
        self._resolved[key] = found
        return found

    def _match(self, host: str, port: int) -> Recipient | None:
        try:
            name = normalise_host_cached(host)
        except ValueError:
            return None
        entry = self._exact.get(name)
        if entry is not None:
            found = _by_port(entry, port)
            if found is not None:
                return found
        if not self._wildcard or is_ip_literal(name):
            return None  # "*.0.0.1" is not a set of addresses: IP literals match exactly only
        # Walk the suffixes from the longest: at most one dict lookup per label.
        suffix = name
        while "." in suffix:
            suffix = suffix.split(".", 1)[1]
            entry = self._wildcard.get(suffix)
            if entry is None:
                continue
            found = _by_port(entry, port)
            if found is not None and _within_one_owner(name, suffix):
                return found
        return None


def _pattern_key(pattern: str) -> tuple[bool, str, int | None] | None:
    """(wildcard, name, port) of a host pattern; None when the index would reject it."""
    try:
        parsed = parse_host_pattern(pattern)
    except BadAuthority:
        return None
    if parsed.wildcard and is_public_suffix(parsed.name):
        return None
    return (parsed.wildcard, parsed.name, parsed.port)


def _by_port(entry: _Entry, port: int) -> Recipient | None:
    found = entry.get(port)
    return found if found is not None else entry.get(None)


def _within_one_owner(name: str, suffix: str) -> bool:
    """False when a public suffix lies between the wildcard suffix and the host."""
    public = _public_suffix(name)
    return len(public) < len(suffix)


# More changed recipients than this and a fresh index is built instead of an updated one.
_UPDATE_LIMIT = 1000


async def updated_index(
    index: RecipientIndex, before: Snapshot, after: Snapshot
) -> RecipientIndex | None:
    """`index` (of `before`) updated to `after`, or None when building afresh is needed.

    Recipients are compared by identity: a snapshot made by applying a delta keeps the objects
    of the recipients it did not change, so a one-recipient change touches one recipient here.
    The walks run in slices (`sharewall.slices`) and stop once more than `_UPDATE_LIMIT`
    recipients differ: after a file reload every recipient is a new object, and walking all
    10,000 at once (each a cache miss on a big heap) held the loop ~10-13 ms only to find that
    the index must be built afresh.
    """
    old, new = before.recipients, after.recipients
    if len(old) == len(new):
        # The usual change (recipients edited in place, a delta keeps the order): pairwise.
        pairs: list[tuple[Recipient, Recipient]] = []
        async with contextlib.aclosing(sliced(zip(old, new, strict=True))) as walk:
            async for a, b in walk:
                if a is not b:
                    pairs.append((a, b))
                    if len(pairs) > _UPDATE_LIMIT:
                        return None
        if all(a.id == b.id for a, b in pairs):
            return index.updated([a for a, _ in pairs], [b for _, b in pairs])
    # A recipient object is immutable and carries its id: one in both snapshots is unchanged,
    # one only in `after` is added or changed, one only in `before` is removed (or the old
    # version of a changed one). Only the tuples are read: `id()` does not touch a recipient.
    if abs(len(old) - len(new)) > _UPDATE_LIMIT:
        return None
    held: set[int] = set()
    await each_in_slices(old, lambda r: held.add(id(r)))
    added: list[Recipient] = []
    async with contextlib.aclosing(sliced(new)) as walk:
        async for recipient in walk:
            if id(recipient) not in held:
                added.append(recipient)
                if len(added) > _UPDATE_LIMIT:
                    return None
    if len(old) - (len(new) - len(added)) + len(added) > _UPDATE_LIMIT:
        return None
    kept: set[int] = set()
    await each_in_slices(new, lambda r: kept.add(id(r)))
    removed: list[Recipient] = []
    await each_in_slices(old, lambda r: None if id(r) in kept else removed.append(r))
    return index.updated(removed, added)
