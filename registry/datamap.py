"""The data map: recipient x purpose x category, declared (grants) against observed (calls).

Declared is what the registry grants; observed is the ledger (allowed calls) and the blocked
flows (attempts) of the last `days`. So "granted but never used" (data-minimisation
candidates) and "attempted but not granted" stand out. Exported as JSON, as a
record-of-processing CSV, and as a Fides manifest of fideslang `System` documents.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.models import (
    Approval,
    BlockedFlow,
    FlowCategory,
    Grant,
    LedgerEntry,
    Recipient,
    as_utc,
    utcnow,
)
from sharewall.taxonomy import load_taxonomy

DEFAULT_DAYS = 30
FIDES_ORGANIZATION = "default_organization"
FIDES_DATA_SUBJECT = "customer"

CSV_COLUMNS = (
    "recipient_id",
    "recipient_name",
    "kind",
    "status",
    "regions",
    "purpose",
    "categories",
    "legal_basis",
    "grant_status",
    "approved_by",
    "approved_at",
    "expires",
    "observed_calls_30d",
)


@dataclass
class GrantEntry:
    """One grant of a recipient, with who approved it and when."""

    purpose: str
    categories: list[str]
    legal_basis: str | None
    expires: date | None
    status: str
    approved_by: str | None
    approved_at: datetime | None


@dataclass
class RecipientEntry:
    """A recipient, its grants and the calls it received over the window."""

    id: str
    name: str
    kind: str
    status: str
    regions: list[str]
    grants: list[GrantEntry] = field(default_factory=list)
    observed: int = 0
    blocked: int = 0


@dataclass
class Cell:
    """One (recipient, purpose, category): granted or not, calls and blocked attempts."""

    recipient_id: str
    purpose: str
    category: str
    granted: bool
    observed: int = 0
    blocked: int = 0

    @property
    def granted_unused(self) -> bool:
        return self.granted and self.observed == 0

    @property
    def attempted_not_granted(self) -> bool:
        return not self.granted and self.blocked > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient_id": self.recipient_id,
            "purpose": self.purpose,
            "category": self.category,
            "granted": self.granted,
            "observed": self.observed,
            "blocked": self.blocked,
            "granted_unused": self.granted_unused,
            "attempted_not_granted": self.attempted_not_granted,
        }


@dataclass
class DataMap:
    """Recipients with their grants, and the recipient x purpose x category cells."""

    since: datetime
    until: datetime
    recipients: list[RecipientEntry]
    cells: list[Cell]

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {"from": self.since.isoformat(), "to": self.until.isoformat()},
            "recipients": [
                {
                    "id": r.id,
                    "name": r.name,
                    "kind": r.kind,
                    "status": r.status,
                    "regions": r.regions,
                    "observed": r.observed,
                    "blocked": r.blocked,
                    "grants": [
                        {
                            "purpose": g.purpose,
                            "categories": g.categories,
                            "legal_basis": g.legal_basis,
                            "expires": g.expires.isoformat() if g.expires else None,
                            "status": g.status,
                            "approved_by": g.approved_by,
                            "approved_at": g.approved_at.isoformat() if g.approved_at else None,
                        }
                        for g in r.grants
                    ],
                }
                for r in self.recipients
            ],
            "cells": [c.to_json() for c in self.cells],
        }


async def build_datamap(
    conn: AsyncConnection, *, days: int = DEFAULT_DAYS, now: datetime | None = None
) -> DataMap:
    """Read the registry, the ledger and the blocked flows of the last `days` into a data map."""
    until = now or utcnow()
    since = until - timedelta(days=days)
    recipients: dict[str, RecipientEntry] = {}
    r = Recipient.__table__
    for row in (await conn.execute(sa.select(r).order_by(r.c.id))).all():
        recipients[row.id] = RecipientEntry(
            row.id, row.name, row.kind, row.status, list(row.regions or ())
        )
    approved_at = await _approval_times(conn)
    g = Grant.__table__
    grants = (
        await conn.execute(sa.select(g).where(g.c.status != "revoked").order_by(g.c.id))
    ).all()
    for row in grants:
        entry = recipients.get(row.recipient_id)
        if entry is None:
            continue
        entry.grants.append(
            GrantEntry(
                purpose=row.purpose,
                categories=list(row.categories or ()),
                legal_basis=row.legal_basis,
                expires=row.expires,
                status=row.status,
                approved_by=row.approved_by,
                approved_at=(
                    approved_at.get(("grant", str(row.id)))
                    or approved_at.get(("recipient", row.recipient_id))
                )
                if row.status == "approved"
                else None,
            )
        )
    cells: dict[tuple[str, str, str], Cell] = {}
    for entry in recipients.values():
        for grant in entry.grants:
            if grant.status != "approved":
                continue
            for category in grant.categories:
                cells[(entry.id, grant.purpose, category)] = Cell(
                    entry.id, grant.purpose, category, granted=True
                )
    for (rid, purpose, category), count in (await _observed(conn, since, until)).items():
        if rid in recipients:
            recipients[rid].observed += count if category else 0
        if not category:
            continue
        cell = cells.setdefault((rid, purpose, category), Cell(rid, purpose, category, False))
        cell.observed += count
    for (rid, purpose, category), count in (await _attempted(conn, since, until)).items():
        if rid in recipients:
            recipients[rid].blocked += count
        cell = cells.setdefault((rid, purpose, category), Cell(rid, purpose, category, False))
        cell.blocked += count
    ordered = sorted(cells.values(), key=lambda c: (c.recipient_id, c.purpose, c.category))
    return DataMap(since, until, list(recipients.values()), ordered)


async def _approval_times(conn: AsyncConnection) -> dict[tuple[str, str], datetime]:
    """The last approval time per (entity type, id): grants and recipients."""
    a = Approval.__table__
    stmt = (
        sa.select(a.c.entity_type, a.c.entity_id, sa.func.max(a.c.time))
        .where(a.c.action.in_(("approve", "approved")))
        .group_by(a.c.entity_type, a.c.entity_id)
    )
    return {(kind, eid): as_utc(t) for kind, eid, t in (await conn.execute(stmt)).all()}


async def _observed(
    conn: AsyncConnection, since: datetime, until: datetime
) -> dict[tuple[str, str, str], int]:
    ledger = LedgerEntry.__table__
    stmt = (
        sa.select(
            ledger.c.recipient_id, ledger.c.purpose, ledger.c.category, sa.func.sum(ledger.c.count)
        )
        .where(ledger.c.minute >= since, ledger.c.minute < until, ledger.c.recipient_id != "")
        .group_by(ledger.c.recipient_id, ledger.c.purpose, ledger.c.category)
    )
    return {(r, p, c): int(n) for r, p, c, n in (await conn.execute(stmt)).all()}


async def _attempted(
    conn: AsyncConnection, since: datetime, until: datetime
) -> dict[tuple[str, str, str], int]:
    flow, cat = BlockedFlow.__table__, FlowCategory.__table__
    stmt = (
        sa.select(flow.c.recipient_id, flow.c.purpose, cat.c.category, sa.func.count())
        .join(
            cat, sa.and_(cat.c.token_id == flow.c.token_id, cat.c.decision_id == flow.c.decision_id)
        )
        .where(
            cat.c.time >= since,
            cat.c.time < until,
            flow.c.recipient_id.is_not(None),
            flow.c.purpose.is_not(None),
        )
        .group_by(flow.c.recipient_id, flow.c.purpose, cat.c.category)
    )
    return {(r, p, c): int(n) for r, p, c, n in (await conn.execute(stmt)).all()}


def to_csv(datamap: DataMap) -> str:
    """The record-of-processing CSV: one row per grant (a recipient without grants: one row)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    observed: dict[tuple[str, str], int] = defaultdict(int)
    for cell in datamap.cells:
        observed[(cell.recipient_id, cell.purpose)] += cell.observed
    for r in datamap.recipients:
        base = [r.id, r.name, r.kind, r.status, " ".join(r.regions)]
        if not r.grants:
            writer.writerow([*base, "", "", "", "", "", "", "", 0])
        for g in r.grants:
            writer.writerow(
                [
                    *base,
                    g.purpose,
                    " ".join(g.categories),
                    g.legal_basis or "",
                    g.status,
                    g.approved_by or "",
                    g.approved_at.isoformat() if g.approved_at else "",
                    g.expires.isoformat() if g.expires else "",
                    observed.get((r.id, g.purpose), 0),
                ]
            )
    return out.getvalue()


def to_fides(datamap: DataMap) -> dict[str, Any]:
    """A Fides manifest `{"system": [...]}`: one fideslang `System` per recipient.

    Privacy declarations come from the approved grants: data categories through the taxonomy's
    `fides` keys, the data use from the purpose, the legal basis by its Fides name, the
    recipient itself as the third party the data is shared with.
    """
    taxonomy = load_taxonomy()
    home = taxonomy.home_regions
    systems = []
    for r in datamap.recipients:
        declarations = []
        for g in r.grants:
            if g.status != "approved":
                continue
            fides_categories = sorted({taxonomy.fides_key(c) for c in g.categories})
            declaration: dict[str, Any] = {
                "name": f"{g.purpose} to {r.id}",
                "data_categories": fides_categories,
                "data_use": taxonomy.fides_data_use(g.purpose),
                "data_subjects": [FIDES_DATA_SUBJECT],
                "data_shared_with_third_parties": True,
                "third_parties": r.name,
                "shared_categories": fides_categories,
            }
            if g.legal_basis:
                declaration["legal_basis_for_processing"] = taxonomy.fides_legal_bases[
                    g.legal_basis
                ]
            declarations.append(declaration)
        systems.append(
            {
                "fides_key": r.id,
                "organization_fides_key": FIDES_ORGANIZATION,
                "name": r.name,
                "description": f"Third party ({r.kind}), registry status {r.status}",
                "system_type": "Service",
                "tags": [r.kind, r.status],
                "processes_personal_data": bool(declarations),
                "does_international_transfers": any(x not in home for x in r.regions)
                or not r.regions,
                "privacy_declarations": declarations,
            }
        )
    return {"system": systems}
