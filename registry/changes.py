"""Live and proposed states of a recipient, and the diff between them.

A recipient that has been approved (status `approved` or `suspended`) is *live*: its columns,
its host rows and its approved grant rows are what the snapshot serves. An engineer's edit
of a live recipient does not touch those; it is staged beside them until a reviewer approves:

- `recipient.pending`: the proposed values of the fields that differ from the live ones;
- `recipient_host.change`: `add` (a proposed host) or `remove` (a live host proposed away);
- `grant.change` / `grant.pending`: `update` (proposed values) or `remove` on an approved
  grant; a proposed addition is a grant with status `proposed`.

A recipient that is not live (`proposed`, `revoked`) is edited in place: all of it awaits
approval. A state is a plain dict in the registry-file shape (grants carry their ids), so the
diff, the console and `registry apply` all read the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from registry.models import Grant, Recipient, RecipientHost

LIVE_STATUSES = frozenset({"approved", "suspended"})
# Fields an engineer edits; the snapshot enforces all but the descriptive ones.
EDITABLE_FIELDS = (
    "name",
    "kind",
    "regions",
    "tls_origination",
    "inspect_tls",
    "owner_team",
    "contract_ref",
    "notes",
)
GRANT_VALUE_FIELDS = ("purpose", "categories", "legal_basis", "expires")


def is_live(recipient: Recipient) -> bool:
    """True when the recipient has an approved version the proxies enforce."""
    return recipient.status in LIVE_STATUSES


def grant_values(grant: Grant) -> dict[str, Any]:
    """A grant's live values, JSON-ready (expiry as ISO date)."""
    return {
        "purpose": grant.purpose,
        "categories": list(grant.categories),
        "legal_basis": grant.legal_basis,
        "expires": grant.expires.isoformat() if grant.expires else None,
    }


def values_json(values: dict[str, Any]) -> dict[str, Any]:
    """Grant values (from a validated schema.Grant) as stored in `grant.pending`."""
    expires = values.get("expires")
    return {
        "purpose": values["purpose"],
        "categories": list(values["categories"]),
        "legal_basis": values.get("legal_basis"),
        "expires": expires.isoformat() if isinstance(expires, date) else expires,
    }


def proposed_grant_values(grant: Grant) -> dict[str, Any]:
    """A grant's values once its pending change is approved."""
    if grant.change == "update" and grant.pending:
        return dict(grant.pending)
    return grant_values(grant)


def has_pending_change(
    recipient: Recipient, hosts: Iterable[RecipientHost], grants: Iterable[Grant]
) -> bool:
    """True when something awaits approval (a proposal, or a live recipient's staged edit)."""
    if recipient.status == "proposed":
        return True
    if not is_live(recipient):
        return False
    return bool(
        recipient.pending
        or any(h.change for h in hosts)
        or any(g.change or g.status == "proposed" for g in grants)
    )


def _fields(recipient: Recipient, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = {name: getattr(recipient, name) for name in EDITABLE_FIELDS}
    doc["regions"] = list(doc["regions"])
    if overrides:
        doc.update(overrides)
    return doc


def live_state(
    recipient: Recipient, hosts: Iterable[RecipientHost], grants: Iterable[Grant]
) -> dict[str, Any] | None:
    """What the proxies enforce for this recipient now, or None when it is not live."""
    if not is_live(recipient):
        return None
    return {
        "id": recipient.id,
        **_fields(recipient),
        "status": recipient.status,
        "hosts": sorted(h.pattern for h in hosts if h.change != "add"),
        "grants": [
            {"id": g.id, **grant_values(g)}
            for g in sorted(grants, key=lambda g: g.id or 0)
            if g.status == "approved"
        ],
    }


def proposed_state(
    recipient: Recipient, hosts: Iterable[RecipientHost], grants: Iterable[Grant]
) -> dict[str, Any]:
    """What approving the recipient's pending change would make live (status `approved`)."""
    live = is_live(recipient)
    return {
        "id": recipient.id,
        **_fields(recipient, recipient.pending if live else None),
        "status": "approved",
        "hosts": sorted(h.pattern for h in hosts if h.change != "remove"),
        "grants": [
            {"id": g.id, **proposed_grant_values(g)}
            for g in sorted(grants, key=lambda g: g.id or 0)
            if g.status == "proposed" or (g.status == "approved" and g.change != "remove")
        ],
    }


def registry_entry(state: dict[str, Any]) -> dict[str, Any]:
    """A state as a registry-file recipient (no grant ids), e.g. for `POST /v1/impact`."""
    return {
        **{k: v for k, v in state.items() if k != "grants"},
        "grants": [{k: v for k, v in g.items() if k != "id"} for g in state["grants"]],
    }


def diff_states(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Fields, hosts and grants that differ from `old` (None: everything is new) to `new`.

    Grants are matched by id: `changed` lists the values that differ, `added`/`removed` whole
    grants.
    """
    old = old or {"hosts": [], "grants": []}
    fields = {
        name: [old.get(name), new.get(name)]
        for name in (*EDITABLE_FIELDS, "status")
        if old.get(name) != new.get(name)
    }
    old_hosts, new_hosts = set(old["hosts"]), set(new["hosts"])
    old_grants = {g["id"]: g for g in old["grants"]}
    new_grants = {g["id"]: g for g in new["grants"]}
    changed = []
    for gid in sorted(old_grants.keys() & new_grants.keys()):
        was, now = old_grants[gid], new_grants[gid]
        differences = {
            k: [was.get(k), now.get(k)] for k in GRANT_VALUE_FIELDS if was.get(k) != now.get(k)
        }
        if differences:
            changed.append({"id": gid, "purpose": now["purpose"], "fields": differences})
    return {
        "fields": fields,
        "hosts": {
            "added": sorted(new_hosts - old_hosts),
            "removed": sorted(old_hosts - new_hosts),
        },
        "grants": {
            "added": [new_grants[g] for g in new_grants if g not in old_grants],
            "removed": [old_grants[g] for g in old_grants if g not in new_grants],
            "changed": changed,
        },
    }


def is_empty_diff(diff: dict[str, Any]) -> bool:
    """True when a `diff_states` result changes nothing."""
    return not (
        diff["fields"]
        or diff["hosts"]["added"]
        or diff["hosts"]["removed"]
        or any(diff["grants"].values())
    )
