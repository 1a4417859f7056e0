"""Snapshot deltas: what changed between two versions of the registry snapshot, and applying it.

A follower that holds version N asks the registry for a delta (`DELTA_MEDIA_TYPE`); the
registry answers with the recipients that differ since N (whole, as in the snapshot), the ids
removed, and the workloads when they changed. The follower validates only those (the same
`Recipient`/`Workload` models as a full snapshot), merges them into what it holds (recipients
ordered by id, as the registry orders them) and checks that the result hashes to the registry's
`revision` before using it. Anything that does not check out (another base, a hash mismatch, a
malformed delta) is a `DeltaError`, and the follower fetches the full snapshot instead.

The hash is `content_revision`, computed here from each recipient's canonical JSON kept per id
(`EncodedSnapshot`), so neither side re-serialises 10,000 unchanged recipients per change.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from sharewall.document_split import split_document
from sharewall.slices import collector_paused, consumed, each_in_slices
from sharewall.snapshot import Recipient, SchemaError, Snapshot, Workload

DELTA_MEDIA_TYPE = "application/vnd.sharewall.snapshot-delta+json"


class DeltaError(ValueError):
    """A delta that cannot be applied to the snapshot held: fetch the full snapshot."""


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """One recipient's (or workload's) JSON form as `content_revision` hashes it."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def revision_of_parts(
    recipients: Iterable[bytes], workloads: Iterable[bytes], *, chunk: int = 256
) -> str:
    """`content_revision` of a snapshot from its canonical parts (same bytes, same hash).

    Hashed a few hundred parts at a time: in a worker thread each join holds the GIL briefly
    (joining all ~4 MB at once held it, so the event loop, 1-3 ms), and hashlib lets go of it
    while it hashes what was joined."""
    digest = hashlib.sha256()
    workload_list = list(workloads)
    digest.update(b'{"recipients":[' if workload_list else b"[")
    parts = iter(recipients)
    first = True
    while batch := list(itertools.islice(parts, chunk)):
        if not first:
            digest.update(b",")
        digest.update(b",".join(batch))
        first = False
    digest.update(b"]")
    if workload_list:
        digest.update(b',"workloads":[' + b",".join(workload_list) + b"]}")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EncodedSnapshot:
    """A snapshot's content as canonical JSON parts: recipient id → bytes (in order), workloads."""

    recipients: dict[str, bytes]
    workloads: tuple[bytes, ...] = ()

    @classmethod
    def of_documents(
        cls, recipients: Iterable[Mapping[str, Any]], workloads: Iterable[Mapping[str, Any]] = ()
    ) -> EncodedSnapshot:
        """The parts of a snapshot's JSON form (dicts as `to_data()` gives them)."""
        return cls(
            {r["id"]: canonical_json(r) for r in recipients},
            tuple(canonical_json(w) for w in workloads),
        )

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot) -> EncodedSnapshot:
        return cls.of_documents(
            (r.to_data() for r in snapshot.recipients),
            (w.to_data() for w in snapshot.workloads),
        )

    @property
    def revision(self) -> str:
        return revision_of_parts(self.recipients.values(), self.workloads)

    def body(self, version: int, revision: str, generated_at: str) -> bytes:
        """The full snapshot JSON (what `GET /v1/snapshot` serves and the follower caches)."""
        head = orjson.dumps(
            {"version": version, "revision": revision, "generated_at": generated_at}
        )
        out = head[:-1] + b',"recipients":[' + b",".join(self.recipients.values()) + b"]"
        if self.workloads:
            out += b',"workloads":[' + b",".join(self.workloads) + b"]"
        return out + b"}"

    def body_chunks(
        self, version: int, revision: str, generated_at: str, chunk: int = 256
    ) -> Iterator[bytes]:
        """`body`'s bytes in pieces of a few hundred recipients, for writing from a worker
        thread: joining the ~4 MB at once holds the GIL (the event loop) ~5 ms."""
        values = list(self.recipients.values())
        head = orjson.dumps(
            {"version": version, "revision": revision, "generated_at": generated_at}
        )
        yield head[:-1] + b',"recipients":['
        for start in range(0, len(values), chunk):
            yield (b"," if start else b"") + b",".join(values[start : start + chunk])
        yield b"]"
        if self.workloads:
            yield b',"workloads":[' + b",".join(self.workloads) + b"]"
        yield b"}"


def fingerprint(encoded: EncodedSnapshot) -> dict[str, int]:
    """Recipient id → hash of its part: enough to tell later which recipients changed."""
    return {rid: hash(part) for rid, part in encoded.recipients.items()}


def encode_delta(
    *,
    version: int,
    revision: str,
    generated_at: str,
    base_version: int,
    base_revision: str,
    base: Mapping[str, int],
    base_workloads: int,
    current: EncodedSnapshot,
) -> tuple[bytes, int]:
    """The delta from a base (its `fingerprint` and workloads hash) to `current`; (body, changes)."""
    upserts = [part for rid, part in current.recipients.items() if base.get(rid) != hash(part)]
    removed = [rid for rid in base if rid not in current.recipients]
    head = {
        "version": version,
        "revision": revision,
        "generated_at": generated_at,
        "base_version": base_version,
        "base_revision": base_revision,
        "removed": removed,
    }
    out = orjson.dumps(head)[:-1] + b',"recipients":[' + b",".join(upserts) + b"]"
    if hash(current.workloads) != base_workloads:
        out += b',"workloads":[' + b",".join(current.workloads) + b"]"
    return out + b"}", len(upserts) + len(removed)


@dataclass(frozen=True)
class HeldSnapshot:
    """A validated snapshot with what applying a delta to it needs (recipients by id, parts)."""

    snapshot: Snapshot
    encoded: EncodedSnapshot
    by_id: dict[str, Recipient]

    @classmethod
    def of(cls, snapshot: Snapshot) -> HeldSnapshot:
        """Wrap a (fully validated) snapshot; O(recipients): serialises each once."""
        return cls(
            snapshot,
            EncodedSnapshot.of_snapshot(snapshot),
            {r.id: r for r in snapshot.recipients},
        )

    @classmethod
    async def load(cls, body: bytes) -> HeldSnapshot:
        """A full snapshot's JSON, validated as `Snapshot.from_json` would, without
        holding the event loop: decoded in a child process (`sharewall.document_split`), each
        recipient validated and serialised on the loop in slices (`sharewall.slices`).

        Raises `ValueError` (a `SchemaError` among them) when it is not valid.
        """
        with collector_paused():
            return await cls._load(body)

    @classmethod
    async def _load(cls, body: bytes) -> HeldSnapshot:
        try:
            doc = await split_document("json", body)
        except OSError:  # no child process here: decode in process
            doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("a snapshot is an object")
        recipients, workloads = doc.get("recipients", []), doc.get("workloads", [])
        if not isinstance(recipients, list) or not isinstance(workloads, list):
            raise ValueError("a snapshot lists its recipients and workloads")
        header = Snapshot.from_data(
            {k: v for k, v in doc.items() if k not in ("recipients", "workloads")}
        )
        by_id: dict[str, Recipient] = {}
        parts: dict[str, bytes] = {}

        def take(item: Any) -> None:
            recipient = Recipient.from_data(item)
            if recipient.id in by_id:
                raise ValueError(f"duplicate recipient id {recipient.id!r}")
            by_id[recipient.id] = recipient
            parts[recipient.id] = canonical_json(recipient.to_data())

        await each_in_slices(consumed(recipients), take)
        taken = tuple(Workload.from_data(w) for w in workloads)
        if len({w.key for w in taken}) != len(taken):
            raise ValueError("duplicate workload")
        encoded = EncodedSnapshot(parts, tuple(canonical_json(w.to_data()) for w in taken))
        snapshot = header.replace(recipients=tuple(by_id.values()), workloads=taken)
        return cls(snapshot, encoded, by_id)

    async def content_revision(self) -> str:
        """The hash of the content held (joining and hashing ~4 MB lets the loop run)."""
        return await asyncio.to_thread(lambda: self.encoded.revision)

    def body(self) -> bytes:
        s = self.snapshot
        return self.encoded.body(s.version, s.revision, generated_at_text(s.generated_at))

    def body_chunks(self) -> Iterator[bytes]:
        """`body()` in pieces (see `EncodedSnapshot.body_chunks`)."""
        s = self.snapshot
        return self.encoded.body_chunks(s.version, s.revision, generated_at_text(s.generated_at))

    def apply(self, delta: Any) -> HeldSnapshot:
        """The snapshot after `delta` (validated as a full snapshot would be); `DeltaError` if not."""
        merged = self.merge(delta)
        merged.check(merged.encoded.revision)
        return merged

    async def apply_async(self, delta: Any) -> HeldSnapshot:
        """`apply` without holding the event loop: the merge of 10,000 entries in slices
        (`sharewall.slices`), the ~4 MB hash in a worker thread a chunk at a time (hashlib
        lets go of the GIL while it hashes, the joins in between are short)."""
        changes = self._changes(delta)
        merger = _Merger(self, changes)
        await each_in_slices(merger.order(), merger.take)
        merged = merger.result()
        merged.check(await asyncio.to_thread(lambda: merged.encoded.revision))
        return merged

    def check(self, revision: str) -> None:
        """`DeltaError` unless `revision` (of the content held) is the snapshot's own."""
        if revision != self.snapshot.revision:
            raise DeltaError("the merged snapshot does not hash to the registry's revision")

    def merge(self, delta: Any) -> HeldSnapshot:
        """The snapshot after `delta`, every entry validated but the whole not yet hashed."""
        merger = _Merger(self, self._changes(delta))
        for rid in merger.order():
            merger.take(rid)
        return merger.result()

    def _changes(self, delta: Any) -> _Changes:
        """What `delta` changes, every entry validated; `DeltaError` if it does not fit."""
        if not isinstance(delta, dict):
            raise DeltaError("a delta is an object")
        base = self.snapshot
        if delta.get("base_version") != base.version or delta.get("base_revision") != (
            base.revision
        ):
            raise DeltaError("the delta is for another base")
        removed, upserts = delta.get("removed"), delta.get("recipients")
        if not isinstance(removed, list) or not isinstance(upserts, list):
            raise DeltaError("a delta lists 'removed' and 'recipients'")
        gone: set[str] = set()
        changed: dict[str, tuple[Recipient, bytes]] = {}
        try:
            for rid in removed:
                if rid in gone or rid not in self.by_id:
                    raise DeltaError(f"removed recipient {rid!r} is not held")
                gone.add(rid)
            for item in upserts:
                recipient = Recipient.from_data(item)
                if recipient.id in changed:
                    raise DeltaError(f"duplicate recipient id {recipient.id!r}")
                part = canonical_json(recipient.to_data())
                changed[recipient.id] = (recipient, part)
            workloads, workload_parts = base.workloads, self.encoded.workloads
            if "workloads" in delta:
                workloads = tuple(Workload.from_data(w) for w in delta["workloads"] or ())
                if len({w.key for w in workloads}) != len(workloads):
                    raise DeltaError("duplicate workload")
                workload_parts = tuple(canonical_json(w.to_data()) for w in workloads)
            header = Snapshot.from_data(
                {k: delta.get(k) for k in ("version", "revision", "generated_at")}
            )
        except (SchemaError, TypeError) as exc:
            raise DeltaError(f"invalid delta: {exc}") from None
        return _Changes(header, gone, changed, workloads, workload_parts)


@dataclass(frozen=True)
class _Changes:
    """A delta's content, validated: the new header, ids removed, recipients (with their part)
    added or replaced, and the workloads after it."""

    header: Snapshot
    removed: set[str]
    upserts: dict[str, tuple[Recipient, bytes]]
    workloads: tuple[Workload, ...]
    workload_parts: tuple[bytes, ...]


class _Merger:
    """Builds the snapshot after a delta one recipient id at a time (`take` each of `order()`),
    so that the 10,000-entry copies can be done in slices. Unchanged recipients keep their
    objects and parts; the ids end ordered as the registry orders them (by id)."""

    def __init__(self, held: HeldSnapshot, changes: _Changes) -> None:
        self.held, self.changes = held, changes
        self.by_id: dict[str, Recipient] = {}
        self.parts: dict[str, bytes] = {}
        self.recipients: list[Recipient] = []
        self.sorted = True  # the ids came out ascending

    def order(self) -> Iterator[str]:
        """The ids after the delta: where nothing came or went, each id keeps its place (a
        replaced entry stays where it was); otherwise the held ids (ordered by id, as the
        registry serves them) merged with the new ones, sorted."""
        held, removed = self.held.by_id, self.changes.removed
        added = sorted(r for r in self.changes.upserts if r in removed or r not in held)
        if not added and not removed:
            yield from held
            return
        i, previous = 0, ""
        for rid in held:
            if rid < previous:
                self.sorted = False
            previous = rid
            while i < len(added) and added[i] < rid:
                yield added[i]
                i += 1
            if rid not in removed:
                yield rid
        yield from added[i:]

    def take(self, rid: str) -> None:
        change = self.changes.upserts.get(rid)
        if change is None:
            recipient, part = self.held.by_id[rid], self.held.encoded.recipients[rid]
        else:
            recipient, part = change
        self.by_id[rid], self.parts[rid] = recipient, part
        self.recipients.append(recipient)

    def result(self) -> HeldSnapshot:
        by_id, parts, recipients = self.by_id, self.parts, self.recipients
        if not self.sorted:  # a base not ordered by id (not the registry's): order it
            order = sorted(by_id)
            by_id = {rid: by_id[rid] for rid in order}
            parts = {rid: parts[rid] for rid in order}
            recipients = list(by_id.values())
        changes = self.changes
        encoded = EncodedSnapshot(parts, changes.workload_parts)
        snapshot = changes.header.replace(recipients=tuple(recipients), workloads=changes.workloads)
        return HeldSnapshot(snapshot, encoded, by_id)


def generated_at_text(value: datetime) -> str:
    """A snapshot's `generated_at` as the registry writes it (ISO 8601, `Z`)."""
    return value.isoformat().replace("+00:00", "Z")
