"""The impact replay (`POST /v1/impact`) over 1,000,000 recorded calls.

    .venv/bin/python bench/bench_impact.py [--calls 1000000] [--days 7] [--facts 400]

1. Records `--calls` calls over `--days` through the proxy's own ledger (`proxy.ledger.Ledger`,
   a clock stepping through the week), drawn from `--facts` distinct policy facts (sources,
   recipients, purposes, category sets, flags), and ingests the shipped rows with the
   registry's ingest (`registry.ingest.store_facts`) into a migrated SQLite database.
2. Times `POST /v1/impact` through the real app (the candidate drops a category from one
   recipient and suspends another): wall time, the facts query and the policy evaluations.
   Baseline in the same run: deciding every recorded call one by one (regorus), measured on a
   sample and extrapolated: what a replay per call would cost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.ledger import Ledger  # noqa: E402
from registry import db  # noqa: E402
from registry.api.app import create_app  # noqa: E402
from registry.apply import apply_registry  # noqa: E402
from registry.audit import Actor  # noqa: E402
from registry.impact import Window, load_facts, policy_input  # noqa: E402
from registry.ingest import FactIn, fact_row, store_facts  # noqa: E402
from registry.settings import Settings  # noqa: E402
from registry.tokens import create_token  # noqa: E402
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--facts", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'registry.sqlite'}"
        await db.run_migrations(url)
        engine = db.create_engine(url)
        live_doc = registry_document()
        async with db.create_sessionmaker(engine)() as session, session.begin():
            await db.begin_write(session)
            await apply_registry(
                session, parse_registry_document(live_doc), Actor("bench", "admin"), bootstrap=True
            )
            _, secret = await create_token(session, name="bench", role="security")

        t0 = time.perf_counter()
        facts = distinct_facts(args.facts, rng)
        rows = record_calls(args.calls, args.days, facts, rng)
        t_record = time.perf_counter() - t0
        t0 = time.perf_counter()
        stored = [fact_row(FactIn.model_validate(r), "bench-proxy") for r in rows]
        async with engine.begin() as conn:
            for i in range(0, len(stored), 5000):
                await store_facts(conn, stored[i : i + 5000])
        t_ingest = time.perf_counter() - t0
        async with engine.connect() as conn:
            fact_rows = (
                await conn.execute(sa.text("SELECT count(*), sum(count) FROM decision_fact"))
            ).one()
        print(
            f"recorded {args.calls:,} calls over {args.days} days from {args.facts} distinct "
            f"facts through proxy.ledger in {t_record:.1f} s; {fact_rows[0]:,} (hour, fact) "
            f"rows ({int(fact_rows[1]):,} calls) ingested in {t_ingest:.1f} s"
        )

        window = Window.last_days(args.days + 1)
        async with engine.connect() as conn:
            t0 = time.perf_counter()
            grouped = await load_facts(conn, window)
            t_query = time.perf_counter() - t0
        print(
            f"facts query (GROUP BY over the window): {t_query * 1000:.0f} ms, {len(grouped)} distinct"
        )

        server = TestServer(create_app(Settings(db_url=url)), host="127.0.0.1", port=0)
        async with TestClient(server) as client:
            body = {"registry": candidate_document(live_doc), "days": args.days + 1}
            headers = {"Authorization": f"Bearer {secret}"}
            times, doc = [], {}
            for _ in range(args.runs):
                t0 = time.perf_counter()
                resp = await client.post("/v1/impact", json=body, headers=headers)
                doc = await resp.json()
                times.append(time.perf_counter() - t0)
                assert resp.status == 200, doc
        print(
            f"POST /v1/impact: median {statistics.median(times) * 1000:.0f} ms, "
            f"min {min(times) * 1000:.0f} ms over {args.runs} runs; replayed "
            f"{doc['replayed']:,} calls, {doc['distinct_facts']} distinct facts, "
            f"{doc['evaluations']} policy evaluations, "
            f"{doc['totals']['allow_to_deny']:,} allow->deny, "
            f"{doc['totals']['deny_to_allow']:,} deny->allow"
        )

        # Baseline: one policy evaluation per recorded call (no grouping), on a sample.
        live = Snapshot.model_validate(
            {**dump_registry_document(parse_registry_document(live_doc)), "version": 1}
        )
        evaluator = PolicyEvaluator(live)
        sample = 2000
        day = datetime.now(UTC).date().isoformat()
        t0 = time.perf_counter()
        for k in range(sample):
            f = grouped[k % len(grouped)]
            evaluator.decide(policy_input(f, f.recipient_id, day))
        per_call = (time.perf_counter() - t0) / sample
        per_call_total = per_call * args.calls * 2
        print(
            f"baseline, replaying each call (2 snapshots x {args.calls:,} evaluations at "
            f"{per_call * 1e6:.0f} us): ~{per_call_total:.0f} s -> the grouped replay is "
            f"{per_call_total / statistics.median(times):.0f}x faster"
        )
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
