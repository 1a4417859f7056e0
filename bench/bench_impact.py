"""The impact replay (`POST /v1/impact`) over 1,000,000 recorded calls, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_impact.py [--calls 1000000] [--days 7] [--facts 400]
        [--runs 5] [--db sqlite,postgresql] [--budget 110]

1. Records `--calls` calls over `--days` through the proxy's own ledger (`proxy.ledger.Ledger`,
   a clock stepping through the week), drawn from `--facts` distinct policy facts (sources,
   recipients, purposes, category sets, flags), and ingests the shipped rows with the
   registry's ingest (`registry.ingest.store_facts`) into a migrated database: SQLite, and a
   throwaway PostgreSQL database on 127.0.0.1:5432 when one answers.
2. For two candidates (a typical change: one recipient loses a category and another is
   suspended; the worst case: declaring a workload switches source binding on, so every fact
   may flip), interleaves in each of `--runs` rounds:
   - before: the facts query grouped on the eleven fact columns and every distinct fact
     decided under both snapshots (the replay as it was);
   - now: `registry.impact.load_facts` (grouped on `fact_key`) and `replay` deciding only
     the facts the change can affect;
   and prints the medians (wall and process CPU: the CPU is less sensitive to other load) and
   the ratios, checking that both give the same flips.
3. Times `POST /v1/impact` through the real app (the typical candidate): the figure for
   1,000,000 recorded calls. Baseline: one regorus evaluation per recorded call, measured on a
   sample and extrapolated (what a replay per call would cost).

Bounded: the rounds stop once `--budget` seconds have passed since the start (the set-up is
~30 s per database on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.ledger import Ledger  # noqa: E402
from registry import db  # noqa: E402
from registry.api.app import create_app  # noqa: E402
from registry.apply import apply_registry  # noqa: E402
from registry.audit import Actor  # noqa: E402
from registry.impact import (  # noqa: E402
    Fact,
    Window,
    candidate_snapshot,
    load_facts,
    policy_input,
    replay,
)
from registry.ingest import FactIn, fact_row, store_facts  # noqa: E402
from registry.models import DecisionFact  # noqa: E402
from registry.settings import Settings  # noqa: E402
from registry.tokens import create_token  # noqa: E402
from sharewall.decision_record import FACT_KEY_FIELDS  # noqa: E402
from sharewall.logs import configure_logging  # noqa: E402
from sharewall.policy import PolicyEvaluator  # noqa: E402
from sharewall.registry_file import dump_registry_document, parse_registry_document  # noqa: E402
from sharewall.snapshot import Snapshot  # noqa: E402

RECIPIENTS = 30
CATEGORY_SETS = [
    [],
    ["contact.phone_number"],
    ["contact.phone_number", "comms.content"],
    ["contact.email"],
    ["contact.email", "contact.name"],
    ["contact.phone_number", "mobile.carrier"],
    ["location.country"],
    ["contact.phone_number", "contact.email", "contact.name"],
]
PURPOSES = ["service_delivery", "customer_support", "billing", "fraud_prevention", "marketing"]
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"


def registry_document() -> dict:
    recipients = []
    for i in range(RECIPIENTS):
        recipients.append(
            {
                "id": f"vendor-{i}",
                "name": f"Vendor {i}",
                "kind": "vendor" if i % 5 else "ott_provider",
                "status": "approved",
                "regions": ["SG"] if i % 3 else ["US"],
                "hosts": [f"api.vendor-{i}.example"],
                "grants": [
                    {
                        "purpose": p,
                        "categories": ["contact.phone_number", "comms.content", "contact.email"],
                        "legal_basis": "contract",
                    }
                    for p in PURPOSES[: 1 + i % 4]
                ],
            }
        )
    return {"recipients": recipients}


def candidate_document(live: dict) -> dict:
    """The typical change: one recipient narrowed to one category, another suspended."""
    doc = {"recipients": [dict(r) for r in live["recipients"]]}
    doc["recipients"][0] = {
        **doc["recipients"][0],
        "grants": [
            {
                "purpose": "service_delivery",
                "categories": ["contact.phone_number"],
                "legal_basis": "contract",
            }
        ],
    }
    doc["recipients"][1] = {**doc["recipients"][1], "status": "suspended"}
    return doc


def binding_document(live: dict) -> dict:
    """The worst case: a first workload switches source binding on for every call."""
    workload = {
        "namespace": "ns-0",
        "name": "app-0",
        "status": "approved",
        "purposes": ["service_delivery"],
    }
    return {**live, "workloads": [workload]}


def distinct_facts(n: int, rng: random.Random) -> list[dict]:
    facts = {}
    while len(facts) < n:
        i = rng.randrange(RECIPIENTS)
        https = rng.random() < 0.9
        fact = {
            "source_workload": f"app-{rng.randrange(20)}",
            "source_namespace": f"ns-{rng.randrange(5)}",
            "host": f"api.vendor-{i}.example",
            "port": 443 if https else 80,
            "recipient_id": f"vendor-{i}",
            "purpose": rng.choice(PURPOSES),
            "categories": rng.choice(CATEGORY_SETS),
            "scheme": "https" if https else "http",
            "inspected": True,
            "tls_upstream": https,
            "complete": rng.random() < 0.99,
        }
        facts[repr(sorted(fact.items()))] = fact
    return list(facts.values())


def record_calls(calls: int, days: int, facts: list[dict], rng: random.Random) -> list[dict]:
    """Feed `calls` decision records through the proxy's ledger; return the rows it ships."""
    start = datetime.now(UTC) - timedelta(days=days)
    t = start.timestamp()
    step = days * 86400 / calls
    clock = [t]
    ledger = Ledger(lambda: clock[0])
    weights = [1 / (k + 1) for k in range(len(facts))]  # a few facts carry most calls
    picks = rng.choices(facts, weights=weights, k=calls)
    rows: list[dict] = []
    last_minute = int(t // 60)
    for n, fact in enumerate(picks):
        clock[0] = t + n * step
        record = {
            **fact,
            "action": "allow",
            "would_block": False,
            "reason_codes": [],
            "fault": None,
        }
        ledger.record(record)
        minute = int(clock[0] // 60)
        if minute != last_minute:  # the shipper takes finished minutes, as in the proxy
            rows.extend(r for r in ledger.take_complete() if r.get("kind") == "fact")
            last_minute = minute
    rows.extend(r for r in ledger.take_complete(everything=True) if r.get("kind") == "fact")
    return rows


def by_hour(rows: list[dict]) -> list[dict]:
    """The shipped rows summed per (hour, fact), each as one row of the hour's first minute.

    What the registry stores per hour is the same either way; its ingest journals each
    (proxy, minute, fact) row to skip re-sends, so handing it one row per hour instead of one
    per minute keeps the set-up short without another path into the table.
    """
    hours: dict[tuple[Any, ...], dict] = {}
    for row in rows:
        hour = datetime.fromisoformat(row["minute"]).replace(minute=0).isoformat()
        key = (hour, *(repr(v) for k, v in sorted(row.items()) if k not in ("minute", "count")))
        held = hours.get(key)
        if held is None:
            hours[key] = {**row, "minute": hour}
        else:
            held["count"] += row["count"]
    return list(hours.values())


async def load_facts_by_columns(conn: Any, window: Window) -> list[Fact]:
    """The facts query as it was before `fact_key` grouping: GROUP BY the eleven columns."""
    table = DecisionFact.__table__
    columns = [table.c[name] for name in FACT_KEY_FIELDS]
    stmt = (
        sa.select(*columns, sa.func.sum(table.c.count).label("count"))
        .where(
            table.c.hour >= window.start.replace(minute=0, second=0, microsecond=0),
            table.c.hour < window.end,
        )
        .group_by(*columns)
    )
    facts = []
    for row in (await conn.execute(stmt)).all():
        values = dict(row._mapping)
        values["categories"] = tuple(c for c in values["categories"].split(",") if c)
        values["count"] = int(values["count"])
        facts.append(Fact(**values))
    return facts


@contextlib.asynccontextmanager
async def database(kind: str, tmp: Path) -> AsyncIterator[str]:
    """A migrated database URL: a SQLite file, or a throwaway PostgreSQL database."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'registry.sqlite'}"
        await db.run_migrations(url)
        yield url
        return
    import asyncpg

    name = f"bench_impact_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"{PG}/{name}"
            await db.run_migrations(url)
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def postgres_answers() -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 5432), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def cpu() -> float:
    """CPU time of the whole process (the database driver's threads included)."""
    return time.process_time()


async def measure(
    engine: Any,
    window: Window,
    live: Snapshot,
    candidate: Snapshot,
    day: str,
    runs: int,
    stop: float,
) -> dict[str, list[tuple[float, float]]]:
    """Interleaved rounds of (query, replay) as before and now: (wall, cpu) per round."""
    out: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("query before", "query now", "replay before", "replay now")
    }
    reference = None
    for _ in range(runs):
        if time.monotonic() > stop and out["replay now"]:
            break
        for label, query, only_affected in (
            ("before", load_facts_by_columns, False),
            ("now", load_facts, True),
        ):
            async with engine.connect() as conn:
                w0, c0 = time.perf_counter(), cpu()
                facts = await query(conn, window)
                out[f"query {label}"].append((time.perf_counter() - w0, cpu() - c0))
            w0, c0 = time.perf_counter(), cpu()
            impact = replay(facts, live, candidate, window, day, only_affected=only_affected)
            out[f"replay {label}"].append((time.perf_counter() - w0, cpu() - c0))
            result = (impact.flips, impact.totals, impact.replayed)
            if reference is None:
                reference = result
            assert result == reference, "the replay now disagrees with the replay before"
            out[f"evaluations {label}"] = [(impact.evaluations, 0.0)]
    return out


def median(values: list[tuple[float, float]], i: int) -> float:
    return statistics.median(v[i] for v in values)


def report(name: str, rounds: dict[str, list[tuple[float, float]]]) -> None:
    before = {k: rounds[f"{k} before"] for k in ("query", "replay")}
    now = {k: rounds[f"{k} now"] for k in ("query", "replay")}
    n = len(now["replay"])
    print(f"  {name} ({n} interleaved rounds, medians; wall / process CPU):")
    for part in ("query", "replay"):
        b_w, b_c = median(before[part], 0), median(before[part], 1)
        n_w, n_c = median(now[part], 0), median(now[part], 1)
        extra = ""
        if part == "replay":
            extra = (
                f"  [{int(rounds['evaluations before'][0][0])} -> "
                f"{int(rounds['evaluations now'][0][0])} evaluations]"
            )
        print(
            f"    {part:6} before {b_w * 1000:6.0f} / {b_c * 1000:6.0f} ms   now "
            f"{n_w * 1000:6.0f} / {n_c * 1000:6.0f} ms   ratio {b_w / max(n_w, 1e-6):5.1f}x wall, "
            f"{b_c / max(n_c, 1e-6):5.1f}x CPU{extra}"
        )
    b_w = sum(median(before[p], 0) for p in before)
    b_c = sum(median(before[p], 1) for p in before)
    n_w = sum(median(now[p], 0) for p in now)
    n_c = sum(median(now[p], 1) for p in now)
    print(
        f"    total  before {b_w * 1000:6.0f} / {b_c * 1000:6.0f} ms   now "
        f"{n_w * 1000:6.0f} / {n_c * 1000:6.0f} ms   ratio {b_w / max(n_w, 1e-6):5.1f}x wall, "
        f"{b_c / max(n_c, 1e-6):5.1f}x CPU"
    )


async def bench_database(
    kind: str,
    rows: list[dict],
    args: argparse.Namespace,
    stop: float,
    stored_rows: list[dict] | None,
) -> tuple[list[dict], float, list[dict]]:
    """Set up `kind`, print its rounds and `POST /v1/impact`.

    The shipped `rows` go through the registry's ingest; or, when `stored_rows` (the hourly
    table of a database set up before) is given, those are copied in (the ingest is not what
    this bench measures, and copying keeps the run bounded). Returns the window's facts, the
    POST median and the hourly table.
    """
    live_doc = registry_document()
    with tempfile.TemporaryDirectory() as tmp:
        async with database(kind, Path(tmp)) as url:
            engine = db.create_engine(url)
            try:
                async with db.create_sessionmaker(engine)() as session, session.begin():
                    await db.begin_write(session)
                    await apply_registry(
                        session,
                        parse_registry_document(live_doc),
                        Actor("bench", "admin"),
                        bootstrap=True,
                    )
                    _, secret = await create_token(session, name="bench", role="security")
                t0 = time.perf_counter()
                table = DecisionFact.__table__
                async with engine.begin() as conn:
                    if stored_rows is None:
                        stored = [
                            fact_row(FactIn.model_validate(r), "bench-proxy", 1)
                            for r in by_hour(rows)
                        ]
                        for i in range(0, len(stored), 5000):
                            await store_facts(conn, stored[i : i + 5000])
                        how = "ingested by registry.ingest"
                    else:
                        for i in range(0, len(stored_rows), 5000):
                            await conn.execute(sa.insert(table), stored_rows[i : i + 5000])
                        how = "copied from the first database"
                t_ingest = time.perf_counter() - t0
                async with engine.connect() as conn:
                    fact_rows = (
                        await conn.execute(
                            sa.text("SELECT count(*), sum(count) FROM decision_fact")
                        )
                    ).one()
                print(
                    f"{kind}: {fact_rows[0]:,} (hour, fact) rows ({int(fact_rows[1]):,} calls) "
                    f"{how} in {t_ingest:.1f} s"
                )
                window = Window.last_days(args.days + 1)
                day = datetime.now(UTC).date().isoformat()
                live = Snapshot.from_data(
                    {**dump_registry_document(parse_registry_document(live_doc)), "version": 1}
                )
                for name, make in (
                    ("typical change: one recipient narrowed, one suspended", candidate_document),
                    ("worst case: a first workload switches source binding on", binding_document),
                ):
                    candidate = candidate_snapshot(live, make(live_doc))
                    rounds = await measure(engine, window, live, candidate, day, args.runs, stop)
                    report(name, rounds)
                server = TestServer(create_app(Settings(db_url=url)), host="127.0.0.1", port=0)
                async with TestClient(server) as client:
                    body = {"registry": candidate_document(live_doc), "days": args.days + 1}
                    headers = {"Authorization": f"Bearer {secret}"}
                    times, cpus, doc = [], [], {}
                    for _ in range(args.runs):
                        t0, c0 = time.perf_counter(), cpu()
                        resp = await client.post("/v1/impact", json=body, headers=headers)
                        doc = await resp.json()
                        times.append(time.perf_counter() - t0)
                        cpus.append(cpu() - c0)
                        assert resp.status == 200, doc
                print(
                    f"  POST /v1/impact (typical change): median {statistics.median(times) * 1000:.0f}"
                    f" ms wall, {statistics.median(cpus) * 1000:.0f} ms CPU, min "
                    f"{min(times) * 1000:.0f} ms over {args.runs} runs; replayed "
                    f"{doc['replayed']:,} calls, {doc['distinct_facts']} distinct facts, "
                    f"{doc['evaluations']} policy evaluations, "
                    f"{doc['totals']['allow_to_deny']:,} allow->deny, "
                    f"{doc['totals']['deny_to_allow']:,} deny->allow"
                )
                async with engine.connect() as conn:
                    facts = [f.__dict__ for f in await load_facts(conn, window)]
                    hourly = [
                        dict(r._mapping)
                        for r in (await conn.execute(sa.select(table).order_by(table.c.id))).all()
                    ]
                return facts, statistics.median(times), hourly
            finally:
                await engine.dispose()


def per_call_baseline(facts: list[dict], calls: int, post_median: float) -> None:
    """What replaying each recorded call would cost: regorus per call, on a sample."""
    live = Snapshot.from_data(
        {**dump_registry_document(parse_registry_document(registry_document())), "version": 1}
    )
    evaluator = PolicyEvaluator(live)
    sample = 2000
    day = datetime.now(UTC).date().isoformat()
    grouped = [Fact(**f) for f in facts]
    t0 = time.perf_counter()
    for k in range(sample):
        f = grouped[k % len(grouped)]
        evaluator.decide(policy_input(f, f.recipient_id, day))
    per_call = (time.perf_counter() - t0) / sample
    total = per_call * calls * 2
    print(
        f"baseline, replaying each call (2 snapshots x {calls:,} evaluations at "
        f"{per_call * 1e6:.0f} us): ~{total:.0f} s -> POST /v1/impact is "
        f"{total / post_median:.0f}x faster"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--facts", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument("--budget", type=float, default=110, help="seconds for the whole run")
    args = parser.parse_args()
    configure_logging("warning")
    started = time.monotonic()
    stop = started + args.budget
    rng = random.Random(7)

    t0 = time.perf_counter()
    facts = distinct_facts(args.facts, rng)
    rows = record_calls(args.calls, args.days, facts, rng)
    print(
        f"recorded {args.calls:,} calls over {args.days} days from {args.facts} distinct facts "
        f"through proxy.ledger in {time.perf_counter() - t0:.1f} s ({len(rows):,} shipped rows)"
    )
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    if "postgresql" in kinds and not await postgres_answers():
        print("postgresql: nothing answers on 127.0.0.1:5432, skipped")
        kinds.remove("postgresql")
    result = None
    for kind in kinds:
        result = await bench_database(kind, rows, args, stop, result[2] if result else None)
    if result is not None:
        per_call_baseline(result[0], args.calls, result[1])
    print(f"bench_impact: {time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    asyncio.run(main())
