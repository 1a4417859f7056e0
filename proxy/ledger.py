"""The ledger sink: allowed calls counted per minute and key, handed to the shipper once a minute is over."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from proxy import decision_log as f
from sharewall.decision_record import FACT_FIELDS

# (minute epoch, source_workload, source_namespace, recipient_id, purpose, category)
LedgerKey = tuple[int, str, str, str, str, str]
# (minute, source_workload, source_namespace, host, port, recipient_id, purpose, categories,
#  scheme, inspected, tls_upstream, complete, verdict, reason_codes): all the policy decided on.
FactKey = tuple[
    int, str, str, str, int, str, str, tuple[str, ...], str, bool, bool, bool, str, tuple[str, ...]
]
FACT = "fact"


def minute_iso(minute: int) -> str:
    """The ISO UTC time of the start of a minute given as seconds-since-epoch // 60."""
    return datetime.fromtimestamp(minute * 60, UTC).isoformat().replace("+00:00", "Z")


class Ledger:
    """Counts allowed (forwarded) calls per (minute, source, recipient, purpose, category).

    `record` is a decision sink (`DecisionLog.sinks`); a call with several categories counts once
    per category, a call without personal data once under category `""`. Rows are final once
    their minute is over, so the registry can key them and replace on a re-send.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[LedgerKey, int] = {}
        self._facts: dict[FactKey, int] = {}

    def record(self, rec: dict[str, Any]) -> None:
        """Count one decision record: its policy facts, and the call if it went upstream."""
        minute = int(self._clock() // 60)
        if rec.get(f.TLS_UPSTREAM) is not None and rec.get(f.FAULT) is None:
            self._count_fact(minute, rec)
        if rec.get(f.ACTION) != "allow":
            return
        base = (
            rec.get(f.SOURCE_WORKLOAD) or "",
            rec.get(f.SOURCE_NAMESPACE) or "",
            rec.get(f.RECIPIENT_ID) or "",
            rec.get(f.PURPOSE) or "",
        )
        for category in rec.get(f.CATEGORIES) or ("",):
            key = (minute, *base, category)
            self._counts[key] = self._counts.get(key, 0) + 1

    def _count_fact(self, minute: int, rec: dict[str, Any]) -> None:
        # What the policy decided on, so that the registry can replay it against another
        # registry (`POST /v1/impact`); one row per distinct fact and minute, with a count.
        denied = rec.get(f.ACTION) == "deny" or bool(rec.get(f.WOULD_BLOCK))
        key = (
            minute,
            rec.get(f.SOURCE_WORKLOAD) or "",
            rec.get(f.SOURCE_NAMESPACE) or "",
            rec.get(f.HOST) or "",
            int(rec.get(f.PORT) or 0),
            rec.get(f.RECIPIENT_ID) or "",
            rec.get(f.PURPOSE) or "",
            tuple(rec.get(f.CATEGORIES) or ()),
            rec.get(f.SCHEME) or "",
            bool(rec.get(f.INSPECTED)),
            bool(rec.get(f.TLS_UPSTREAM)),
            bool(rec.get(f.COMPLETE)),
            "deny" if denied else "allow",
            tuple(rec.get(f.REASON_CODES) or ()),
        )
        self._facts[key] = self._facts.get(key, 0) + 1

    def take_complete(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Remove and return the rows of every minute that is over (all rows with `everything`).

        Count rows first, then fact rows (`"kind": "fact"`); both ship in the batch's `ledger`.
        """
        current = int(self._clock() // 60)
        done = [k for k in self._counts if everything or k[0] < current]
        rows = [_row(k, self._counts.pop(k)) for k in done]
        facts = [k for k in self._facts if everything or k[0] < current]
        return rows + [_fact_row(k, self._facts.pop(k)) for k in facts]

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Add rows saved by a previous run back into the counts (an unfinished minute goes on)."""
        for row in rows:
            try:
                minute = (
                    int(datetime.fromisoformat(row["minute"].replace("Z", "+00:00")).timestamp())
                    // 60
                )
                if row.get("kind") == FACT:
                    fact = _fact_key(minute, row)
                    self._facts[fact] = self._facts.get(fact, 0) + int(row["count"])
                    continue
                key = (
                    minute,
                    row["source_workload"],
                    row["source_namespace"],
                    row["recipient_id"],
                    row["purpose"],
                    row["category"],
                )
                self._counts[key] = self._counts.get(key, 0) + int(row["count"])
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a damaged row cannot be counted; the rest still are

    def __len__(self) -> int:
        return len(self._counts) + len(self._facts)


def _row(key: LedgerKey, count: int) -> dict[str, Any]:
    minute, workload, namespace, recipient_id, purpose, category = key
    return {
        "minute": minute_iso(minute),
        "source_workload": workload,
        "source_namespace": namespace,
        "recipient_id": recipient_id,
        "purpose": purpose,
        "category": category,
        "count": count,
    }


def _fact_row(key: FactKey, count: int) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": FACT, "minute": minute_iso(key[0])}
    row.update(zip(FACT_FIELDS, key[1:], strict=True))
    row["categories"] = list(row["categories"])
    row["reason_codes"] = list(row["reason_codes"])
    row["count"] = count
    return row


def _fact_key(minute: int, row: dict[str, Any]) -> FactKey:
    values = [row[name] for name in FACT_FIELDS]
    values[6] = tuple(values[6])
    values[12] = tuple(values[12])
    return (minute, *values)  # type: ignore[return-value]
