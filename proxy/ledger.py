"""The ledger sink: allowed calls counted per minute and key, handed to the shipper once a minute is over."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from proxy import decision_log as f

# (minute epoch, source_workload, source_namespace, recipient_id, purpose, category)
LedgerKey = tuple[int, str, str, str, str, str]


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

    def record(self, rec: dict[str, Any]) -> None:
        """Count one decision record if its call went upstream (allowed, or would-block in report mode)."""
        if rec.get(f.ACTION) != "allow":
            return
        minute = int(self._clock() // 60)
        base = (
            rec.get(f.SOURCE_WORKLOAD) or "",
            rec.get(f.SOURCE_NAMESPACE) or "",
            rec.get(f.RECIPIENT_ID) or "",
            rec.get(f.PURPOSE) or "",
        )
        for category in rec.get(f.CATEGORIES) or ("",):
            key = (minute, *base, category)
            self._counts[key] = self._counts.get(key, 0) + 1

    def take_complete(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Remove and return the rows of every minute that is over (all rows with `everything`)."""
        current = int(self._clock() // 60)
        done = [k for k in self._counts if everything or k[0] < current]
        return [_row(k, self._counts.pop(k)) for k in done]

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Add rows saved by a previous run back into the counts (an unfinished minute goes on)."""
        for row in rows:
            try:
                minute = (
                    int(datetime.fromisoformat(row["minute"].replace("Z", "+00:00")).timestamp())
                    // 60
                )
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
        return len(self._counts)


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
