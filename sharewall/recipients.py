"""Recipient resolution: which registered recipient a (host, port) belongs to, for one snapshot."""

from __future__ import annotations

import functools

import structlog
from publicsuffixlist import PublicSuffixList

from sharewall.hosts import (
    BadAuthority,
    is_ip_literal,
    normalise_host_cached,
    parse_host_pattern,
)
from sharewall.snapshot import Recipient, Snapshot

log = structlog.get_logger("sharewall.recipients")

# The Public Suffix List bundled with publicsuffixlist, read offline. Private suffixes (github.io,
# s3.amazonaws.com) count too: a wildcard over them spans other people's names. (tldextract did
# the same at ~12 MB of the sidecar's memory, importing `requests` to fetch lists it never did.)
_psl = PublicSuffixList(accept_unknown=False)


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

    def __init__(self, snapshot: Snapshot) -> None:
        self._exact: dict[str, _Entry] = {}
        self._wildcard: dict[str, _Entry] = {}
        self._resolved: dict[tuple[str, int], Recipient | None] = {}
        for recipient in snapshot.recipients:
            for pattern in recipient.hosts:
                self._add(recipient, pattern)

    def _add(self, recipient: Recipient, pattern: str) -> None:
        try:
            parsed = parse_host_pattern(pattern)
        except BadAuthority as exc:
            log.warning(
                "recipients.pattern_rejected",
                recipient_id=recipient.id,
                pattern=pattern,
                why=str(exc),
            )
            return
        name, wildcard, port = parsed.name, parsed.wildcard, parsed.port
        if wildcard and is_public_suffix(name):
            log.warning(
                "recipients.pattern_rejected",
                recipient_id=recipient.id,
                pattern=pattern,
                why="wildcard over a public suffix",
            )
            return
        table = self._wildcard if wildcard else self._exact
        entry = table.setdefault(name, {})
        holder = entry.get(port)
        if holder is not None and holder.id != recipient.id:
            # First registration wins so that a later, conflicting claim cannot take a host over.
            log.warning(
                "recipients.host_conflict",
                pattern=pattern,
                recipient_id=recipient.id,
                kept_recipient_id=holder.id,
            )
            return
        entry[port] = recipient

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


def _by_port(entry: _Entry, port: int) -> Recipient | None:
    found = entry.get(port)
    return found if found is not None else entry.get(None)


def _within_one_owner(name: str, suffix: str) -> bool:
    """False when a public suffix lies between the wildcard suffix and the host."""
    public = _public_suffix(name)
    return len(public) < len(suffix)
