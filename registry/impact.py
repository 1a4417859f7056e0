"""The impact of a registry change: recorded decision facts replayed through the policy.

Proxies ship, per minute, how many calls they decided on each distinct set of policy facts
(counted per hour in `decision_fact`: source, host, recipient, purpose, category set, scheme, inspected,
tls_upstream, inspection complete). The policy depends on nothing else but the snapshot and
the date, so replaying a window is: sum the counts per distinct fact (one GROUP BY), decide
each distinct fact once with the live snapshot and once with the candidate, and count the
calls whose outcome flips. The recipient is resolved again from the host under each snapshot,
as the proxy would: a candidate that registers a host changes who the call goes to.

Only facts the change can affect are decided: the policy reads the registry through the
call's recipient entry and the calling source's workload (and whether any workload exists,
which switches source binding on), so a fact whose recipient resolves alike and whose
recipient entry and workload are equal in both snapshots decides alike and cannot flip. A
change to one recipient replays that recipient's facts, not the whole window's.
"""

from __future__ import annotations

import asyncio
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry.models import DecisionFact
from sharewall.decision_record import FACT_KEY_FIELDS
from sharewall.policy import PolicyEvaluator
from sharewall.recipients import RecipientIndex
from sharewall.registry_file import RegistryFileError, entry_as_written, parse_registry_document
from sharewall.snapshot import Recipient, Snapshot, Workload

MAX_DAYS = 90
_FACTS = DecisionFact.__table__


@dataclass(frozen=True)
class Fact:
    """One distinct set of policy facts and how many recorded calls had it."""

    source_workload: str
    source_namespace: str
    host: str
    port: int
    recipient_id: str
    purpose: str
    categories: tuple[str, ...]
    scheme: str
    inspected: bool
    tls_upstream: bool
    complete: bool
    count: int


@dataclass(frozen=True)
class Window:
    """The replayed time range [start, end)."""

    start: datetime
    end: datetime

    @classmethod
    def last_days(cls, days: int, now: datetime | None = None) -> Window:
        end = now or datetime.now(UTC)
        return cls(end - timedelta(days=days), end)


async def load_facts(conn: AsyncConnection, window: Window) -> list[Fact]:
    """The distinct facts of a window with their summed counts (one grouped query).

    The rows are grouped on `fact_key` (one hash column: a third of the cost of grouping on
    the eleven fact columns) and one row of each group supplies the columns. The key also
    covers the recorded verdict and reasons, so groups of one fact are merged here.
    """
    grouped = (
        sa.select(
            sa.func.sum(_FACTS.c.count).label("count"),
            sa.func.min(_FACTS.c.id).label("first_id"),
        )
        .where(
            _FACTS.c.hour >= window.start.replace(minute=0, second=0, microsecond=0),
            _FACTS.c.hour < window.end,
        )
        .group_by(_FACTS.c.fact_key)
        .subquery()
    )
    stmt = sa.select(*(_FACTS.c[name] for name in FACT_KEY_FIELDS), grouped.c.count).join_from(
        grouped, _FACTS, _FACTS.c.id == grouped.c.first_id
    )
    counts: Counter[tuple[Any, ...]] = Counter()
    for row in (await conn.execute(stmt)).all():
        counts[tuple(row[:-1])] += int(row[-1])
    facts = []
    for values, count in counts.items():
        fields = dict(zip(FACT_KEY_FIELDS, values, strict=True))
        fields["categories"] = tuple(c for c in fields["categories"].split(",") if c)
        facts.append(Fact(**fields, count=count))
    return facts


def candidate_snapshot(live: Snapshot, document: Any, *, source: str = "candidate") -> Snapshot:
    """The registry a change would leave: a whole registry document, or a partial change.

    A document with `recipients` is a whole registry (what `registry apply` would make of it).
    A single recipient mapping (with `id`), or `{"change": {"recipients": [...], "workloads":
    [...]}}`, is merged into the live registry: those recipients and workloads replace the
    live ones of the same id, the rest stays.
    """
    if isinstance(document, dict) and "id" in document and "recipients" not in document:
        document = {"change": {"recipients": [document]}}
    if isinstance(document, dict) and set(document) == {"change"}:
        change = document["change"]
        if not isinstance(change, dict):
            raise RegistryFileError(f"{source}: 'change' must be a mapping")
        recipients = change.get("recipients") or []
        workloads = change.get("workloads")
        named = _live_recipients_named(live, recipients, workloads)
        merged = parse_registry_document(
            {"recipients": [*recipients, *named], "workloads": workloads}, source=source
        )
        return merge(live, merged.recipients, merged.workloads)
    return parse_registry_document(document, source=source)


def _live_recipients_named(live: Snapshot, recipients: Any, workloads: Any) -> list[dict[str, Any]]:
    """Live recipients that a change's workloads name and the change does not carry.

    A workload may name any registered recipient, so they join the change's document for its
    validation (and are merged back unchanged).
    """
    if not isinstance(recipients, list) or not isinstance(workloads, list):
        return []
    carried = {r.get("id") for r in recipients if isinstance(r, dict)}
    named = {
        rid
        for w in workloads
        if isinstance(w, dict) and isinstance(w.get("recipients"), list)
        for rid in w["recipients"]
        if isinstance(rid, str) and rid not in carried
    }
    return [entry_as_written(r.to_data()) for r in live.recipients if r.id in named]


def merge(
    live: Snapshot, recipients: Iterable[Recipient], workloads: Iterable[Workload] = ()
) -> Snapshot:
    """`live` with `recipients` and `workloads` replacing those of the same id (or added)."""
    by_id = {r.id: r for r in live.recipients}
    by_id.update({r.id: r for r in recipients})
    by_key = {w.key: w for w in live.workloads}
    by_key.update({w.key: w for w in workloads})
    return Snapshot(
        version=live.version, recipients=tuple(by_id.values()), workloads=tuple(by_key.values())
    ).with_revision()


def _canonical(value: Any) -> Any:
    """`value` with every list sorted (the policy reads the registry's lists as sets: hosts,
    regions, grants, categories, purposes), so one registry read from the database and from a
    file compares equal whatever order each wrote its grants in."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
    return value


class _Difference:
    """Which facts a change can affect: those whose policy data differs between snapshots."""

    def __init__(self, live: Snapshot, candidate: Snapshot) -> None:
        before = _canonical(live.policy_data())
        after = _canonical(candidate.policy_data())
        self._recipients = (before["recipients"], after["recipients"])
        self._workloads = (before["workloads"], after["workloads"])
        # Source binding is on when any workload is declared, for every call.
        self._binding_differs = bool(before["workloads"]) != bool(after["workloads"])

    def may_flip(
        self, fact: Fact, recipient_before: str | None, recipient_after: str | None
    ) -> bool:
        """False when the policy reads the same data for `fact` under both snapshots."""
        if recipient_before != recipient_after or self._binding_differs:
            return True
        live, candidate = self._recipients
        if live.get(recipient_before or "") != candidate.get(recipient_before or ""):
            return True
        ns, name = fact.source_namespace or None, fact.source_workload or None
        live_w, candidate_w = self._workloads
        return live_w.get(ns, {}).get(name) != candidate_w.get(ns, {}).get(name)


class _Decider:
    """Decides facts under one snapshot, each distinct policy input once."""

    def __init__(self, snapshot: Snapshot, day: str) -> None:
        self._index = RecipientIndex(snapshot)
        self._evaluator = PolicyEvaluator(snapshot)
        self._day = day
        self._memo: dict[tuple[Any, ...], tuple[str, list[dict[str, Any]]]] = {}

    def recipient_of(self, fact: Fact) -> str | None:
        if fact.host:
            found = self._index.resolve(fact.host, fact.port)
            return found.id if found is not None else None
        return fact.recipient_id or None  # a fact without a host (OPA logs): as recorded

    def decide(
        self, fact: Fact, recipient_id: str | None
    ) -> tuple[str | None, str, list[dict[str, Any]]]:
        key = (
            recipient_id,
            fact.purpose,
            fact.categories,
            fact.source_workload,
            fact.source_namespace,
            fact.scheme,
            fact.inspected,
            fact.tls_upstream,
            fact.complete,
        )
        found = self._memo.get(key)
        if found is None:
            doc = self._evaluator.decide(policy_input(fact, recipient_id, self._day))
            found = ("allow" if doc.get("allow") is True else "deny", doc["reasons"])
            self._memo[key] = found
        return recipient_id, *found

    @property
    def evaluations(self) -> int:
        return len(self._memo)


def policy_input(fact: Fact, recipient_id: str | None, day: str) -> dict[str, Any]:
    """The policy input (DESIGN.md) of a recorded fact, as the proxy built it for the call."""
    return {
        "request": {
            "id": "impact",
            "method": "",
            "scheme": fact.scheme,
            "host": fact.host,
            "port": fact.port,
            "path": "",
            "inspected": fact.inspected,
            "tls_upstream": fact.tls_upstream,
        },
        "source": {
            "workload": fact.source_workload or None,
            "namespace": fact.source_namespace or None,
        },
        "purpose": fact.purpose or None,
        "recipient_id": recipient_id,
        "categories": list(fact.categories),
        "findings": [],
        "inspection": {"complete": fact.complete, "problems": []},
        "date": day,
    }


@dataclass(frozen=True)
class Impact:
    """What replaying a window with a candidate registry found."""

    window: Window
    replayed: int
    distinct: int
    evaluations: int
    flips: list[dict[str, Any]]
    totals: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {"from": self.window.start.isoformat(), "to": self.window.end.isoformat()},
            "replayed": self.replayed,
            "distinct_facts": self.distinct,
            "evaluations": self.evaluations,
            "totals": self.totals,
            "flips": self.flips,
        }


def replay(
    facts: list[Fact],
    live: Snapshot,
    candidate: Snapshot,
    window: Window,
    day: str | None = None,
    *,
    only_affected: bool = True,
) -> Impact:
    """Decide the facts under both snapshots and group the calls that flip.

    Runs regorus on the calling thread (call it inside `asyncio.to_thread`). A flip is listed
    once per reason behind it: for allow→deny the candidate's reasons, for deny→allow the live
    reasons that go away; `count` is the number of calls. `only_affected=False` decides every
    fact, even those the change cannot affect (the reference the tests and the bench compare
    against).

    An error (a policy that fails to evaluate: `PolicyError`) leaves without the replay's
    regorus engines: the frames of its traceback, which hold them, are cleared here, so the
    engines are released on this thread. A regorus `Engine` is a pyo3 `unsendable` class:
    released on the thread the error travels to (the event loop's, from `asyncio.to_thread`),
    or by the cyclic GC on whichever thread it runs, it is leaked with "Engine is unsendable,
    but is being dropped on another thread" on stderr.
    """
    try:
        return _replay(facts, live, candidate, window, day, only_affected=only_affected)
    except Exception as exc:
        seen: set[int] = set()
        error: BaseException | None = exc
        while error is not None and id(error) not in seen:  # the error and what it chains
            seen.add(id(error))
            traceback.clear_frames(error.__traceback__)
            error = error.__cause__ or error.__context__
        raise


def _replay(
    facts: list[Fact],
    live: Snapshot,
    candidate: Snapshot,
    window: Window,
    day: str | None,
    *,
    only_affected: bool,
) -> Impact:
    day = day or datetime.now(UTC).date().isoformat()
    before, after = _Decider(live, day), _Decider(candidate, day)
    difference = _Difference(live, candidate) if only_affected else None
    groups: Counter[tuple[Any, ...]] = Counter()
    totals = {"allow_to_deny": 0, "deny_to_allow": 0}
    for fact in facts:
        rid_before, rid_after = before.recipient_of(fact), after.recipient_of(fact)
        if difference is not None and not difference.may_flip(fact, rid_before, rid_after):
            continue
        rid_before, action_before, reasons_before = before.decide(fact, rid_before)
        rid_after, action_after, reasons_after = after.decide(fact, rid_after)
        if action_before == action_after:
            continue
        totals[f"{action_before}_to_{action_after}"] += fact.count
        reasons = reasons_after if action_after == "deny" else reasons_before
        recipient_id = rid_after or rid_before or fact.recipient_id or None
        for reason in reasons:
            key = (
                action_before,
                action_after,
                fact.source_workload or None,
                fact.source_namespace or None,
                recipient_id,
                fact.purpose or None,
                reason.get("category"),
                reason["code"],
            )
            groups[key] += fact.count
    flips = [
        {
            "from": k[0],
            "to": k[1],
            "source": k[2],
            "namespace": k[3],
            "recipient_id": k[4],
            "purpose": k[5],
            "category": k[6],
            "reason": k[7],
            "count": n,
        }
        for k, n in sorted(groups.items(), key=lambda kv: (-kv[1], [str(x) for x in kv[0]]))
    ]
    return Impact(
        window=window,
        replayed=sum(f.count for f in facts),
        distinct=len(facts),
        evaluations=before.evaluations + after.evaluations,
        flips=flips,
        totals=totals,
    )


async def replay_window(
    engine: AsyncEngine, live: Snapshot, candidate: Snapshot, days: int
) -> Impact:
    """Load the last `days` of facts and replay them (regorus off the event loop)."""
    window = Window.last_days(days)
    async with engine.connect() as conn:
        facts = await load_facts(conn, window)
    return await asyncio.to_thread(replay, facts, live, candidate, window)


def render_impact(doc: dict[str, Any]) -> list[str]:
    """Readable lines of an impact document (`Impact.to_json()`), for the CLI."""
    window = doc["window"]
    totals = doc.get("totals", {})
    lines = [
        f"impact over {window['from'][:16]} .. {window['to'][:16]}: "
        f"{doc['replayed']} recorded calls replayed",
        f"  allow -> deny: {totals.get('allow_to_deny', 0)} calls; "
        f"deny -> allow: {totals.get('deny_to_allow', 0)} calls",
    ]
    if not doc["flips"]:
        lines.append("  no call would change")
        return lines
    header = ("FLIP", "COUNT", "SOURCE", "RECIPIENT", "PURPOSE", "CATEGORY", "REASON")
    rows = [
        (
            f"{f['from']}->{f['to']}",
            str(f["count"]),
            "/".join(x for x in (f.get("namespace"), f.get("source")) if x) or "-",
            f.get("recipient_id") or "-",
            f.get("purpose") or "-",
            f.get("category") or "-",
            f["reason"],
        )
        for f in doc["flips"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    return lines
