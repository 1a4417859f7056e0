"""Registry distribution and flow figures (issue 4, "Performance and retention").

    .venv/bin/python bench/bench_registry.py [--recipients 10000] [--rows 1000000]
        [--ingest 20000] [--no-postgres] [--skip-flows]

1. Snapshot build (DB → validated Snapshot → JSON) and serve (HTTP, cold and cached) for
   N recipients with 5 approved grants each; baseline: the cached serve vs a rebuild.
2. Long-poll change latency: write through the API (in-process wake-up) and directly in the
   database (the 0.5 s version poll of a multi-process deployment).
3. Decision ingest through `POST /v1/decisions` (gzip batches of 1,000) on SQLite and
   PostgreSQL; baseline: a raw executemany of the same flow rows (no HTTP, no child rows).
4. Blocked-flow queries (the API's own query builder) over `--rows` flows with filters:
   p50/p99, and the reason filter with vs without its (code, time) index.

Time on the shared 2-core dev machine: generating 1,000,000 flows (+ ~2.7 M reason/category
rows) takes about 1-2 min on SQLite and about as long on PostgreSQL (COPY); use `--rows
100000` for a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import sqlalchemy as sa
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry import db  # noqa: E402
from registry.api.app import create_app  # noqa: E402
from registry.api.flows import build_flows_query  # noqa: E402
from registry.models import BlockedFlow  # noqa: E402
from registry.settings import Settings  # noqa: E402
from registry.snapshot_builder import (  # noqa: E402
    build_snapshot,
    fetch_snapshot_rows,
    snapshot_document,
)
from registry.tokens import create_token  # noqa: E402
from sharewall.taxonomy import load_taxonomy  # noqa: E402

PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}
NOW = datetime.now(UTC).replace(microsecond=0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


# -- databases -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(kind: str, tmp: Path) -> AsyncIterator[str]:
    """A migrated throwaway database URL of `kind`, dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.sqlite'}"
        await db.run_migrations(url)
        yield url
        return
    name = f"sharewall_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(**PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await db.run_migrations(url)
        yield url
    finally:
        conn = await asyncpg.connect(**PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def postgres_available() -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(**PG_ADMIN), 2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@contextlib.asynccontextmanager
async def serve(url: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The registry app on loopback and bearer headers by role."""
    engine = db.create_engine(url)
    tokens = {}
    async with db.create_sessionmaker(engine)() as session:
        for role in ("proxy", "security", "engineer"):
            _, tokens[role] = await create_token(session, name=f"bench-{role}", role=role)
        await session.commit()
    await engine.dispose()
    runner = web.AppRunner(create_app(Settings(db_url=url, retention_days=0)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield base, {r: f"Bearer {t}" for r, t in tokens.items()}
    finally:
        await runner.cleanup()


# -- 1 + 2: snapshot ---------------------------------------------------------------------------


async def seed_registry(url: str, recipients: int) -> None:
    """`recipients` approved recipients, 2 hosts and 5 approved grants each, in bulk."""
    taxonomy = load_taxonomy()
    purposes = sorted(taxonomy.purposes)
    categories = sorted(taxonomy.categories)
    kinds = sorted(taxonomy.recipient_kinds)
    now = datetime.now(UTC)
    rec_rows, host_rows, grant_rows = [], [], []
    for i in range(recipients):
        rid = f"vendor-{i:05d}"
        rec_rows.append(
            {
                "id": rid,
                "name": f"Vendor {i}",
                "kind": kinds[i % len(kinds)],
                "status": "approved",
                "regions": ["SG", "US"][: 1 + i % 2],
                "tls_origination": False,
                "inspect_tls": True,
                "proposed_by": "bench",
                "updated_by": "bench",
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
        host_rows += [
            {"recipient_id": rid, "pattern": f"api.{rid}.example"},
            {"recipient_id": rid, "pattern": f"*.{rid}.example"},
        ]
        for g in range(5):
            grant_rows.append(
                {
                    "recipient_id": rid,
                    "purpose": purposes[(i + g) % len(purposes)],
                    "categories": categories[g : g + 3],
                    "legal_basis": "contract",
                    "status": "approved",
                    "proposed_by": "bench",
                    "approved_by": "bench2",
                    "created_at": now,
                    "updated_at": now,
                }
            )
    engine = db.create_engine(url)
    from registry.models import Grant, Recipient, RecipientHost, RegistryState

    async with engine.begin() as conn:
        await conn.execute(sa.insert(Recipient.__table__), rec_rows)
        await conn.execute(sa.insert(RecipientHost.__table__), host_rows)
        await conn.execute(sa.insert(Grant.__table__), grant_rows)
        await conn.execute(
            sa.update(RegistryState.__table__).values(version=RegistryState.version + 1)
        )
    await engine.dispose()


async def bench_snapshot(url: str, recipients: int) -> None:
    t = time.perf_counter()
    await seed_registry(url, recipients)
    print(f"  seeded {recipients} recipients x 5 grants in {ms(time.perf_counter() - t)}")
    engine = db.create_engine(url)
    builds, validated = [], []
    for _ in range(3):
        async with db.create_sessionmaker(engine)() as session:
            t = time.perf_counter()
            rows = await fetch_snapshot_rows(session)
            fetched = time.perf_counter() - t
            body = orjson.dumps(snapshot_document(rows))
            builds.append((time.perf_counter() - t, fetched))
            t = time.perf_counter()
            await build_snapshot(session)
            validated.append(time.perf_counter() - t)
    await engine.dispose()
    build, fetched = sorted(builds)[1]
    print(
        f"  build as served (DB rows → dicts → JSON): p50 {ms(build)} (of which DB fetch "
        f"{ms(fetched)}); {len(body) / 1e6:.1f} MB JSON, {len(gzip.compress(body)) / 1e6:.2f} MB "
        f"gzip; baseline: through the pydantic schema p50 {ms(statistics.median(validated))} "
        f"= {statistics.median(validated) / build:.1f}x slower"
    )
    async with serve(url) as (base, auth), aiohttp.ClientSession() as http:
        headers = {"Authorization": auth["proxy"]}
        t = time.perf_counter()
        async with http.get(f"{base}/v1/snapshot", headers=headers) as resp:
            await resp.read()
            etag = resp.headers["ETag"]
        cold = time.perf_counter() - t
        warm = []
        for _ in range(20):
            t = time.perf_counter()
            async with http.get(f"{base}/v1/snapshot", headers=headers) as resp:
                await resp.read()
            warm.append(time.perf_counter() - t)
        not_modified = []
        for _ in range(50):
            t = time.perf_counter()
            async with http.get(
                f"{base}/v1/snapshot", headers={**headers, "If-None-Match": etag}
            ) as resp:
                assert resp.status == 304
            not_modified.append(time.perf_counter() - t)
        print(
            f"  serve: cold (builds) {ms(cold)}, cached 200 (gzip, client inflates) p50 "
            f"{ms(statistics.median(warm))}, 304 p50 {ms(statistics.median(not_modified))}; "
            f"cached/cold = {statistics.median(warm) / cold:.3f}"
        )
        await bench_long_poll(base, auth, http, url)
        await bench_proxy_reload(body)


async def bench_proxy_reload(body: bytes) -> None:
    """What a following proxy spends on a new snapshot: validate, index hosts, load the engine."""
    from proxy.engines import create_engine
    from sharewall.recipients import RecipientIndex
    from sharewall.snapshot import Snapshot

    t = time.perf_counter()
    snapshot = Snapshot.from_json(body)
    validated = time.perf_counter() - t
    t = time.perf_counter()
    RecipientIndex(snapshot)
    indexed = time.perf_counter() - t
    engine = create_engine("embedded")
    await engine.set_snapshot(snapshot)  # the first load also compiles the policies
    t = time.perf_counter()
    await engine.set_snapshot(snapshot)
    loaded = time.perf_counter() - t
    print(
        f"  proxy reload of that snapshot: validate {ms(validated)} (worker thread), host index "
        f"{ms(indexed)} (worker thread), regorus data load {ms(loaded)} (event loop)"
    )


async def bench_long_poll(base: str, auth: dict[str, str], http: aiohttp.ClientSession, url: str):
    """Time from a change to the long poll's answer (API write, then a direct DB write)."""
    headers = {"Authorization": auth["proxy"]}
    engine = db.create_engine(url)
    from registry.state import bump_snapshot_version

    async def poll_after(change: Callable[[], Any]) -> float:
        async with http.get(f"{base}/v1/snapshot", headers=headers) as resp:
            etag = resp.headers["ETag"]
            await resp.read()
        task = asyncio.create_task(
            http.get(
                f"{base}/v1/snapshot?wait=30", headers={**headers, "If-None-Match": etag}
            ).__aenter__()
        )
        await asyncio.sleep(0.3)
        t = time.perf_counter()
        await change()
        resp = await task
        await resp.read()
        elapsed = time.perf_counter() - t
        assert resp.status == 200
        resp.release()
        return elapsed

    suspended = iter(range(10**6))

    async def api_write() -> None:
        rid = f"vendor-{next(suspended):05d}"
        async with http.post(
            f"{base}/v1/recipients/{rid}/suspend", headers={"Authorization": auth["security"]}
        ) as resp:
            assert resp.status == 200, await resp.text()

    async def db_write() -> None:
        async with db.create_sessionmaker(engine)() as session:
            await bump_snapshot_version(session)
            await session.commit()

    api = [await poll_after(api_write) for _ in range(5)]
    direct = [await poll_after(db_write) for _ in range(5)]
    await engine.dispose()
    print(
        f"  long-poll change latency: API write (in-process wake-up, incl. the write and the "
        f"rebuild) p50 {ms(statistics.median(api))} max {ms(max(api))}; direct DB write "
        f"(0.5 s version poll) p50 {ms(statistics.median(direct))} max {ms(max(direct))}"
    )


# -- 3: ingest ---------------------------------------------------------------------------------


def decision_records(n: int) -> list[dict[str, Any]]:
    taxonomy = load_taxonomy()
    codes = sorted(taxonomy.reason_codes)
    categories = sorted(taxonomy.categories)
    out = []
    for i in range(n):
        out.append(
            {
                "time": (NOW - timedelta(seconds=i)).isoformat(),
                "decision_id": uuid.uuid4().hex,
                "action": "deny",
                "mode": "enforce",
                "reason_codes": [codes[i % len(codes)]],
                "recipient_id": f"vendor-{i % 200:05d}",
                "host": f"api.vendor-{i % 200:05d}.example",
                "method": "POST",
                "path": "/v1/messages",
                "purpose": "marketing",
                "categories": [
                    categories[i % len(categories)],
                    categories[(i * 7) % len(categories)],
                ],
                "source_workload": f"svc-{i % 50}",
                "source_namespace": "prod",
                "findings": [
                    {
                        "category": categories[i % len(categories)],
                        "location": "json:$.to",
                        "detector": "x",
                    }
                ],
                "latency_ms": 1.0,
            }
        )
    return out


async def bench_ingest(kind: str, url: str, n: int) -> None:
    records = decision_records(n)
    batches = [
        gzip.compress(orjson.dumps({"proxy_id": "bench", "decisions": records[i : i + 1000]}))
        for i in range(0, n, 1000)
    ]
    async with serve(url) as (base, auth), aiohttp.ClientSession() as http:
        headers = {"Authorization": auth["proxy"], "Content-Encoding": "gzip"}
        t = time.perf_counter()
        for body in batches:
            async with http.post(f"{base}/v1/decisions", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        api = time.perf_counter() - t
        t = time.perf_counter()
        for body in batches[:5]:  # a resend: every record a duplicate
            async with http.post(f"{base}/v1/decisions", data=body, headers=headers) as resp:
                assert (await resp.json())["accepted"] == 0
        resend = (time.perf_counter() - t) / (min(5, len(batches)) * 1000)
    # Baseline: the same flow rows through a plain executemany INSERT (no HTTP, no JSON, no
    # validation, no child index rows) into a scratch copy of the table.
    rows = [
        {
            **{
                k: r[k]
                for k in ("action", "mode", "recipient_id", "host", "method", "path", "purpose")
            },
            "decision_id": "raw-" + r["decision_id"],
            "time": datetime.fromisoformat(r["time"]),
            "categories": r["categories"],
            "reason_codes": r["reason_codes"],
            "findings": r["findings"],
            "would_block": False,
            "triage_state": "new",
            "source_workload": r["source_workload"],
            "source_namespace": r["source_namespace"],
        }
        for r in records
    ]
    engine = db.create_engine(url)
    t = time.perf_counter()
    for i in range(0, n, 1000):
        async with engine.begin() as conn:
            await conn.execute(sa.insert(BlockedFlow.__table__), rows[i : i + 1000])
    raw = time.perf_counter() - t
    await engine.dispose()
    print(
        f"  {kind:10s} ingest {n} decisions: {n / api:8.0f} decisions/s via POST /v1/decisions "
        f"(gzip batches of 1,000, +reason/category rows); raw executemany {n / raw:8.0f} rows/s; "
        f"API/raw = {raw / api:.2f}; duplicate resend {1 / resend:8.0f} decisions/s"
    )


# -- 4: flow queries ---------------------------------------------------------------------------


def flow_rows(n: int, seed: int = 7):
    """Yield (flow, reasons, categories) tuples spread over 30 days, skewed like real traffic."""
    rng = random.Random(seed)
    taxonomy = load_taxonomy()
    codes = sorted(taxonomy.reason_codes)
    # A few codes dominate (unknown hosts, categories not granted); others are rare.
    code_weights = [30 if c in ("UNKNOWN_RECIPIENT", "CATEGORY_NOT_APPROVED") else 3 for c in codes]
    code_weights[codes.index("SMS_CONSENT_TO_THIRD_PARTY")] = 0.2
    categories = sorted(taxonomy.categories)
    span = 30 * 86400
    for i in range(n):
        t = NOW - timedelta(seconds=rng.random() * span)
        did = f"{i:08x}{rng.getrandbits(64):016x}"
        reasons = sorted(set(rng.choices(codes, code_weights, k=rng.choice((1, 1, 2)))))
        cats = sorted(set(rng.choices(categories, k=rng.choice((1, 2, 3)))))
        triage = rng.choices(["new", "acknowledged", "false_positive", "escalated"], [90, 6, 3, 1])[
            0
        ]
        yield (
            did,
            t,
            f"vendor-{rng.randrange(500):05d}",
            f"svc-{rng.randrange(80)}",
            triage,
            reasons,
            cats,
        )


def _sqlite_time(t: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME storage format (what the API's bound parameters compare to).
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def load_flows_sqlite(path: str, n: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA journal_mode=WAL")
    flows, reasons, cats = [], [], []

    def flush() -> None:
        con.executemany(
            "INSERT INTO blocked_flow (decision_id, time, action, would_block, mode, recipient_id,"
            " host, method, path, purpose, categories, reason_codes, source_workload,"
            " source_namespace, findings, proxy_id, triage_state)"
            " VALUES (?, ?, 'deny', 0, 'enforce', ?, ?, 'POST', '/x', 'marketing', ?, ?, ?, 'prod',"
            " '[]', 'bench', ?)",
            flows,
        )
        con.executemany("INSERT INTO flow_reason VALUES (?, ?, ?)", reasons)
        con.executemany("INSERT INTO flow_category VALUES (?, ?, ?)", cats)
        con.commit()
        flows.clear()
        reasons.clear()
        cats.clear()

    for did, t, rid, src, triage, rs, cs in flow_rows(n):
        ts = _sqlite_time(t)
        flows.append(
            (did, ts, rid, f"api.{rid}.example", json.dumps(cs), json.dumps(rs), src, triage)
        )
        reasons += [(did, c, ts) for c in rs]
        cats += [(did, c, ts) for c in cs]
        if len(flows) >= 50_000:
            flush()
    flush()
    con.execute("ANALYZE")
    con.commit()
    con.close()


async def load_flows_postgres(url: str, n: int) -> None:
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(dsn)
    flows, reasons, cats = [], [], []

    async def flush() -> None:
        await conn.copy_records_to_table(
            "blocked_flow",
            records=flows,
            columns=[
                "decision_id", "time", "action", "would_block", "mode", "recipient_id", "host",
                "method", "path", "purpose", "categories", "reason_codes", "source_workload",
                "source_namespace", "findings", "proxy_id", "triage_state",
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "flow_reason", records=reasons, columns=["decision_id", "code", "time"]
        )
        await conn.copy_records_to_table(
            "flow_category", records=cats, columns=["decision_id", "category", "time"]
        )
        flows.clear()
        reasons.clear()
        cats.clear()

    for did, t, rid, src, triage, rs, cs in flow_rows(n):
        flows.append(
            (did, t, "deny", False, "enforce", rid, f"api.{rid}.example", "POST", "/x",
             "marketing", json.dumps(cs), json.dumps(rs), src, "prod", "[]", "bench", triage)
        )  # fmt: skip
        reasons += [(did, c, t) for c in rs]
        cats += [(did, c, t) for c in cs]
        if len(flows) >= 50_000:
            await flush()
    await flush()
    await conn.execute("ANALYZE")
    await conn.close()


QUERIES = [
    ("newest 100, no filter", {}),
    ("recipient", {"recipient_id": "vendor-00042"}),
    ("source + triage_state", {"source": "svc-7", "triage_state": "new"}),
    ("reason (common)", {"reason": "CATEGORY_NOT_APPROVED"}),
    ("reason (rare)", {"reason": "SMS_CONSENT_TO_THIRD_PARTY"}),
    ("category", {"category": "mobile.device_id"}),
    ("reason + category", {"reason": "UNKNOWN_RECIPIENT", "category": "contact.email"}),
    ("reason + 1 day", {"reason": "PURPOSE_UNKNOWN", "since": None, "until": None}),
    ("recipient + 1 day", {"recipient_id": "vendor-00042", "since": None, "until": None}),
]


async def time_query(engine, params: dict[str, str], runs: int) -> tuple[float, float]:
    stmt, _ = build_flows_query(params)
    times = []
    async with engine.connect() as conn:
        await conn.execute(stmt)  # warm the cache and the plan
        for _ in range(runs):
            t = time.perf_counter()
            (await conn.execute(stmt)).all()
            times.append(time.perf_counter() - t)
    return statistics.median(times), pct(times, 0.99)


async def bench_queries(kind: str, url: str, rows: int, runs: int) -> None:
    t = time.perf_counter()
    if kind == "sqlite":
        await asyncio.to_thread(load_flows_sqlite, sa.make_url(url).database, rows)
    else:
        await load_flows_postgres(url, rows)
    print(
        f"  {kind}: generated {rows} flows (+ reason/category rows) in {time.perf_counter() - t:.0f} s"
    )
    day_since = (NOW - timedelta(days=10)).isoformat()
    day_until = (NOW - timedelta(days=9)).isoformat()
    engine = db.create_engine(url)
    try:
        for label, params in QUERIES:
            params = {
                k: (day_since if k == "since" else day_until if k == "until" else v)
                for k, v in params.items()
            }
            p50, p99 = await time_query(engine, params, runs)
            print(f"    {label:24s} p50 {ms(p50)}  p99 {ms(p99)}")
        # Baseline: the rare-reason query without its (code, time) index.
        params = {"reason": "SMS_CONSENT_TO_THIRD_PARTY"}
        with_index, _ = await time_query(engine, params, runs)
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP INDEX ix_flow_reason_code_time"))
            if kind == "postgresql":
                await conn.execute(sa.text("ANALYZE flow_reason"))
        without, _ = await time_query(engine, params, max(3, runs // 10))
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("CREATE INDEX ix_flow_reason_code_time ON flow_reason (code, time)")
            )
        print(
            f"    reason (rare) without the (code, time) index: p50 {ms(without)} "
            f"→ the index makes it {without / with_index:.0f}x faster"
        )
    finally:
        await engine.dispose()


# -- main --------------------------------------------------------------------------------------


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="flows for the query bench")
    parser.add_argument("--ingest", type=int, default=20_000, help="decisions for the ingest bench")
    parser.add_argument("--runs", type=int, default=50, help="runs per query")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--skip-flows", action="store_true", help="skip the 1M-row query bench")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    kinds = ["sqlite"]
    if not args.no_postgres and await postgres_available():
        kinds.append("postgresql")
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        print(f"1+2. snapshot for {args.recipients} recipients x 5 grants (SQLite)")
        async with database("sqlite", Path(tmp)) as url:
            await bench_snapshot(url, args.recipients)
        print("3. decision ingest")
        for kind in kinds:
            async with database(kind, Path(tmp)) as url:
                await bench_ingest(kind, url, args.ingest)
        if not args.skip_flows:
            print(f"4. blocked-flow queries over {args.rows} flows (page of 100, newest first)")
            for kind in kinds:
                async with database(kind, Path(tmp)) as url:
                    await bench_queries(kind, url, args.rows, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
