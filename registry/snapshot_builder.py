"""Build the enforcement snapshot from the database: every recipient, its hosts, its approved grants.

A build that holds the previous build's parts (`PartCache`) reads the rows of the recipients
whose stamp changed, not all of them. The stamp is `(version, created_at)`: every write that
changes what the snapshot holds of a recipient (its columns, hosts, grants, status, an approved
pending change) increases `recipient.version` in the same transaction (the API's ETag depends on
it too), and `created_at` tells a recipient deleted and created again at version 1 apart. The
stamps are read from the database on every build, so writes made by other registry processes
are seen like this process's own.
"""

from __future__ import annotations

import contextlib
import gc
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from registry.changes import LIVE_STATUSES
from registry.models import (
    Grant,
    Recipient,
    RecipientHost,
    RegistryState,
    Workload,
    as_utc,
    utcnow,
)
from sharewall.snapshot import Snapshot
from sharewall.snapshot_delta import EncodedSnapshot, canonical_json

log = structlog.get_logger("sharewall.snapshot")


# Per recipient: (version, created_at) as stored; changes whenever its snapshot content does.
Stamp = tuple[int, Any]
# Per recipient: its stamp, its rows (recipient, hosts, grants) and the canonical JSON of them.
PartCache = dict[str, tuple[Stamp, Any, bytes]]

# Above this many recipients with a new stamp, the build reads every row (one query per table
# beats thousands of `IN` lists); SQLite binds at most 32,766 variables per statement.
INCREMENTAL_MAX = 2_000
_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class SnapshotRows:
    """The rows a snapshot is made of, fetched in one go (assembled off the event loop).

    `recipients` are rows of (version, created_at, id, name, …); with `present` set, they are
    only the recipients whose stamp is not the held one, and `present` holds every recipient's
    stamp (the others keep their held parts).
    """

    version: int
    generated_at: Any
    recipients: Sequence[Any]
    hosts: Sequence[Any]
    grants: Sequence[Any]
    workloads: Sequence[Any] = ()
    present: Mapping[str, Stamp] | None = None


def _json_text(column: sa.ColumnElement) -> sa.ColumnElement:
    """A JSON column read as its text: orjson decodes 60,000 of them ~10x faster than json."""
    return sa.type_coerce(column, sa.Text)


def _loads(value: str | bytes | list | None) -> list:
    # Drivers hand back text (SQLite, asyncpg's json) or, for some types, decoded values.
    if value is None:
        return []
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def read_version(session: AsyncSession) -> int:
    """The committed snapshot version (`registry_state.version`, 0 before any change)."""
    conn = await session.connection()
    result = await conn.execute(sa.select(RegistryState.version).where(RegistryState.id == 1))
    return int(result.scalar_one_or_none() or 0)


async def fetch_snapshot_rows(session: AsyncSession, held: PartCache | None = None) -> SnapshotRows:
    """Read the version first, then the content: the content is never older than its label.

    (Under READ COMMITTED each statement sees the latest commits; a change landing between the
    statements gives content newer than the version, which the next poll relabels. The reverse
    order could label old content with a new version, and the proxy would keep it.) With
    `held` (the previous build's parts), only recipients whose stamp differs are read whole:
    a stamp is read before its recipient's rows, so a part is never kept under a newer stamp
    than its content.
    """
    # Core statements on the session's connection (sqlmodel's session.execute warns on them).
    conn = await session.connection()
    state = (
        await conn.execute(
            sa.select(RegistryState.version, RegistryState.updated_at).where(RegistryState.id == 1)
        )
    ).first()
    version, generated_at = (int(state[0]), as_utc(state[1])) if state else (0, utcnow())
    r = Recipient.__table__.c
    present: dict[str, Stamp] | None = None
    changed: list[str] | None = None
    if held:
        stamps = (await conn.execute(sa.select(r.id, r.version, r.created_at))).all()
        present = {rid: (stamp_version, created_at) for rid, stamp_version, created_at in stamps}
        changed = [
            rid
            for rid, stamp in present.items()
            if (entry := held.get(rid)) is None or entry[0] != stamp
        ]
        if len(changed) > INCREMENTAL_MAX:
            present = changed = None
    if changed is None:
        recipients, hosts, grants = await _content_rows(conn, None)
    else:
        recipients, hosts, grants = [], [], []
        for start in range(0, len(changed), _IDS_PER_QUERY):
            part = await _content_rows(conn, changed[start : start + _IDS_PER_QUERY])
            recipients += part[0]
            hosts += part[1]
            grants += part[2]
    # Live workloads only (approved, suspended), at their live values: a proposal never
    # switches source binding on, and a staged edit waits in `workload.pending`. They are
    # few: read whole on every build.
    w = Workload.__table__.c
    workloads = (
        await conn.execute(
            sa.select(
                w.namespace, w.name, w.status, _json_text(w.purposes), _json_text(w.recipients)
            )
            .where(w.status.in_(LIVE_STATUSES))
            .order_by(w.namespace, w.name)
        )
    ).all()
    return SnapshotRows(version, generated_at, recipients, hosts, grants, workloads, present)


async def _content_rows(
    conn: AsyncConnection, ids: Sequence[str] | None
) -> tuple[Sequence[Any], Sequence[Any], Sequence[Any]]:
    """(recipients with their stamps, live hosts, approved grants) of `ids`, or of all."""
    r, h, g = Recipient.__table__.c, RecipientHost.__table__.c, Grant.__table__.c
    recipients_q = sa.select(
        r.version,
        r.created_at,
        r.id,
        r.name,
        r.kind,
        r.status,
        _json_text(r.regions),
        r.tls_origination,
        r.inspect_tls,
        r.owner_team,
        r.contract_ref,
    )
    # A host staged for addition to a live recipient is not live until approved.
    hosts_q = sa.select(h.recipient_id, h.pattern).where(
        sa.or_(h.change.is_(None), h.change != "add")
    )
    # Only approved grants reach enforcement, with their live values (a staged edit waits in
    # `grant.pending`); a proposed or revoked grant grants nothing.
    grants_q = sa.select(
        g.recipient_id, g.purpose, _json_text(g.categories), g.legal_basis, g.expires
    ).where(g.status == "approved")
    if ids is not None:
        recipients_q = recipients_q.where(r.id.in_(ids))
        hosts_q = hosts_q.where(h.recipient_id.in_(ids))
        grants_q = grants_q.where(g.recipient_id.in_(ids))
    # The recipient rows (and their stamps) first: hosts and grants are never older.
    recipients = (await conn.execute(recipients_q)).all()
    hosts = (await conn.execute(hosts_q.order_by(h.recipient_id, h.pattern))).all()
    grants = (await conn.execute(grants_q.order_by(g.recipient_id, g.purpose, g.id))).all()
    return recipients, hosts, grants


def snapshot_document(rows: SnapshotRows) -> dict[str, Any]:
    """The snapshot's JSON form (`Snapshot.to_data()`) built straight from rows.

    Plain dicts, no pydantic objects: the rows were validated against the snapshot schema when
    they were written, and building 60,000 model objects on every change would cost seconds
    and delay the change reaching the proxies (which validate what they receive).
    """
    header, encoded, _ = encoded_snapshot(rows)
    return orjson.loads(encoded.body(header["version"], header["revision"], header["generated_at"]))


def encoded_snapshot(
    rows: SnapshotRows, reuse: PartCache | None = None
) -> tuple[dict[str, Any], EncodedSnapshot, PartCache]:
    """(version/revision/generated_at, the canonical parts, the cache for the next build).

    A recipient whose rows are those of `reuse` (the previous build's cache) keeps its JSON:
    a change to one recipient of 10,000 serialises one. With `rows.present`, the recipients
    not among `rows.recipients` keep their held parts.
    """
    with _gc_paused():
        return _encode(rows, reuse or {})


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # 60,000 fresh dicts trigger repeated full collections over the whole heap: pausing the
    # collector for the build halves its time (measured in bench/bench_registry.py).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _recipient_document(row: Any, hosts: list[str], grants: list[Any]) -> dict[str, Any]:
    rid, name, kind, status, regions, tls_origination, inspect_tls, owner_team, contract_ref = row
    return {
        "id": rid,
        "name": name,
        "kind": kind,
        "status": status,
        "regions": _loads(regions),
        "hosts": hosts,
        "tls_origination": bool(tls_origination),
        "inspect_tls": bool(inspect_tls),
        "grants": [
            {
                "purpose": purpose,
                "categories": list(dict.fromkeys(_loads(categories))),
                "legal_basis": legal_basis,
                "expires": expires.isoformat() if expires is not None else None,
            }
            for purpose, categories, legal_basis, expires in grants
        ],
        "owner_team": owner_team,
        "contract_ref": contract_ref,
        "notes": None,
    }


def _recipients_of(rows: SnapshotRows) -> Iterator[tuple[str, Stamp, Any, list, list]]:
    """(id, stamp, content key, hosts, grants) of each recipient row read."""
    hosts_of: dict[str, list[str]] = defaultdict(list)
    for recipient_id, pattern in rows.hosts:
        hosts_of[recipient_id].append(pattern)
    grants_of: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for recipient_id, *grant in rows.grants:
        grants_of[recipient_id].append(tuple(grant))
    for row in rows.recipients:
        stamp_version, created_at, *columns = row
        rid = columns[0]
        hosts, grants = hosts_of.get(rid, []), grants_of.get(rid, [])
        key = (tuple(columns), tuple(hosts), tuple(grants))
        yield rid, (stamp_version, created_at), key, hosts, grants


def unversioned_changes(rows: SnapshotRows, held: PartCache) -> set[str]:
    """Recipients whose content in `rows` (a full read) differs from `held` under the same stamp.

    Each is a write that did not bump the recipient's version (its ETag is stale too): an
    incremental build would keep serving what it held.
    """
    with _gc_paused():
        return {
            rid
            for rid, stamp, key, _, _ in _recipients_of(rows)
            if (entry := held.get(rid)) is not None and entry[0] == stamp and entry[1] != key
        }


def _encode(
    rows: SnapshotRows, reuse: PartCache
) -> tuple[dict[str, Any], EncodedSnapshot, PartCache]:
    fresh: dict[str, tuple[Stamp, Any, bytes]] = {}
    for rid, stamp, key, hosts, grants in _recipients_of(rows):
        held = reuse.get(rid)
        if held is not None and held[1] == key:
            part = held[2]
        else:
            if held is not None and held[0] == stamp:
                # Content changed under the same stamp: a write that did not bump the version
                # (the ETag is stale too). Served right here; an incremental build would not.
                log.warning("snapshot.unversioned_change", recipient=rid)
            part = canonical_json(_recipient_document(key[0], hosts, grants))
        fresh[rid] = (stamp, key, part)
    # Ordered by id in Python, not by the database's collation: a follower merging a delta
    # orders recipients the same way, and the order decides who keeps a contested host.
    if rows.present is None:
        cache = dict(sorted(fresh.items()))
    else:
        # The held cache is in id order: keep it, and sort only when a recipient is new.
        present, cache = rows.present, {}
        for rid, held in reuse.items():
            entry = fresh.get(rid)
            if entry is None and present.get(rid) == held[0]:
                entry = held
            if entry is not None:  # None: gone, or deleted between the stamps and the rows
                cache[rid] = entry
        added = [(rid, entry) for rid, entry in fresh.items() if rid not in reuse]
        if added:
            cache.update(added)
            cache = dict(sorted(cache.items()))
    parts = {rid: entry[2] for rid, entry in cache.items()}
    workloads = [
        {
            "namespace": namespace,
            "name": name,
            "status": status,
            "purposes": _loads(purposes),
            "recipients": None if targets is None else _loads(targets) or None,
        }
        for namespace, name, status, purposes, targets in rows.workloads
    ]
    # The body carries `workloads` only when there are any: a proxy that predates workloads
    # refuses unknown snapshot keys, so a registry that declares none keeps serving the
    # document such proxies accept.
    encoded = EncodedSnapshot(parts, tuple(canonical_json(w) for w in workloads))
    header = {
        "version": rows.version,
        "revision": encoded.revision,
        "generated_at": rows.generated_at.isoformat().replace("+00:00", "Z"),
    }
    return header, encoded, cache


def assemble_snapshot(rows: SnapshotRows) -> Snapshot:
    """The validated `Snapshot` of fetched rows (CPU only)."""
    return Snapshot.from_data(snapshot_document(rows))


async def build_snapshot(session: AsyncSession) -> Snapshot:
    """The snapshot of the registry as committed now (version = `registry_state.version`)."""
    return assemble_snapshot(await fetch_snapshot_rows(session))
