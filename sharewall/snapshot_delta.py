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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from sharewall.document_split import split_document
from sharewall.slices import collector_paused, consumed, each_in_slices
from sharewall.snapshot import Recipient, Snapshot, Workload

DELTA_MEDIA_TYPE = "application/vnd.sharewall.snapshot-delta+json"


class DeltaError(ValueError):
    """A delta that cannot be applied to the snapshot held: fetch the full snapshot."""


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """One recipient's (or workload's) JSON form as `content_revision` hashes it."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def revision_of_parts(recipients: Iterable[bytes], workloads: Iterable[bytes]) -> str:
    """`content_revision` of a snapshot from its canonical parts (same bytes, same hash)."""
    listed = b"[" + b",".join(recipients) + b"]"
    workload_list = list(workloads)
    if workload_list:
        listed = b'{"recipients":' + listed + b',"workloads":[' + b",".join(workload_list) + b"]}"
    return hashlib.sha256(listed).hexdigest()[:16]


@dataclass(frozen=True)
class EncodedSnapshot:
    """A snapshot's content as canonical JSON parts: recipient id → bytes (in order), workloads."""

    recipients: dict[str, bytes]
    workloads: tuple[bytes, ...] = ()

    @classmethod
    def of_documents(
        cls, recipients: Iterable[Mapping[str, Any]], workloads: Iterable[Mapping[str, Any]] = ()
    ) -> EncodedSnapshot:
        """The parts of a snapshot's JSON form (dicts as `model_dump(mode="json")` gives them)."""
        return cls(
            {r["id"]: canonical_json(r) for r in recipients},
            tuple(canonical_json(w) for w in workloads),
        )

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot) -> EncodedSnapshot:
        return cls.of_documents(
            (r.model_dump(mode="json") for r in snapshot.recipients),
            (w.model_dump(mode="json") for w in snapshot.workloads),
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
        """A full snapshot's JSON, validated as `Snapshot.model_validate_json` would, without
        holding the event loop: decoded in a child process (`sharewall.document_split`), each
        recipient validated and serialised on the loop in slices (`sharewall.slices`).

        Raises `ValueError` (a pydantic `ValidationError` among them) when it is not valid.
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
        header = Snapshot.model_validate(
            {k: v for k, v in doc.items() if k not in ("recipients", "workloads")}
        )
        by_id: dict[str, Recipient] = {}
        parts: dict[str, bytes] = {}

        def take(item: Any) -> None:
            recipient = Recipient.model_validate(item)
            if recipient.id in by_id:
                raise ValueError(f"duplicate recipient id {recipient.id!r}")
            by_id[recipient.id] = recipient
            parts[recipient.id] = canonical_json(recipient.model_dump(mode="json"))

        await each_in_slices(consumed(recipients), take)
        taken = tuple(Workload.model_validate(w) for w in workloads)
        if len({w.key for w in taken}) != len(taken):
            raise ValueError("duplicate workload")
        encoded = EncodedSnapshot(
            parts, tuple(canonical_json(w.model_dump(mode="json")) for w in taken)
        )
        snapshot = header.model_copy(
            update={"recipients": tuple(by_id.values()), "workloads": taken}
        )
        return cls(snapshot, encoded, by_id)

    async def content_revision(self) -> str:
        """The hash of the content held (joining and hashing ~4 MB lets the loop run)."""
        return await asyncio.to_thread(lambda: self.encoded.revision)

    def body(self) -> bytes:
        s = self.snapshot
        return self.encoded.body(s.version, s.revision, generated_at_text(s.generated_at))

    def apply(self, delta: Any) -> HeldSnapshot:
        """The snapshot after `delta` (validated as a full snapshot would be); `DeltaError` if not."""
        merged = self.merge(delta)
        merged.check(merged.encoded.revision)
        return merged

    async def apply_async(self, delta: Any) -> HeldSnapshot:
        """`apply` with the hash (~4 MB at 10,000 recipients) in a worker thread: hashlib lets
        the loop run meanwhile, and the merge itself is a few dict copies (on the loop)."""
        merged = self.merge(delta)
        merged.check(await asyncio.to_thread(lambda: merged.encoded.revision))
        return merged

    def check(self, revision: str) -> None:
        """`DeltaError` unless `revision` (of the content held) is the snapshot's own."""
        if revision != self.snapshot.revision:
            raise DeltaError("the merged snapshot does not hash to the registry's revision")

    def merge(self, delta: Any) -> HeldSnapshot:
        """The snapshot after `delta`, every entry validated but the whole not yet hashed."""
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
        by_id = dict(self.by_id)
        parts = dict(self.encoded.recipients)
        try:
            for rid in removed:
                if by_id.pop(rid, None) is None:
                    raise DeltaError(f"removed recipient {rid!r} is not held")
                del parts[rid]
            seen: set[str] = set()
            for item in upserts:
                recipient = Recipient.model_validate(item)
                if recipient.id in seen:
                    raise DeltaError(f"duplicate recipient id {recipient.id!r}")
                seen.add(recipient.id)
                by_id[recipient.id] = recipient
                parts[recipient.id] = canonical_json(recipient.model_dump(mode="json"))
            workloads, workload_parts = base.workloads, self.encoded.workloads
            if "workloads" in delta:
                workloads = tuple(Workload.model_validate(w) for w in delta["workloads"] or ())
                if len({w.key for w in workloads}) != len(workloads):
                    raise DeltaError("duplicate workload")
                workload_parts = tuple(canonical_json(w.model_dump(mode="json")) for w in workloads)
            header = Snapshot.model_validate(
                {k: delta.get(k) for k in ("version", "revision", "generated_at")}
            )
        except (ValidationError, TypeError) as exc:
            raise DeltaError(f"invalid delta: {exc}") from None
        if removed or len(by_id) != len(self.by_id):
            # Ids came or went: order by id, as the registry does.
            order = sorted(by_id)
            by_id = {rid: by_id[rid] for rid in order}
            parts = {rid: parts[rid] for rid in order}
        # (Otherwise every id kept its place: a dict keeps a replaced key where it was.)
        encoded = EncodedSnapshot(parts, workload_parts)
        snapshot = header.model_copy(
            update={"recipients": tuple(by_id.values()), "workloads": workloads}
        )
        return HeldSnapshot(snapshot, encoded, by_id)


def generated_at_text(value: datetime) -> str:
    """A snapshot's `generated_at` as the registry writes it (ISO 8601, `Z`)."""
    return value.isoformat().replace("+00:00", "Z")
