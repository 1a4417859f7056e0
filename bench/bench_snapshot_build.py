"""The registry's snapshot build after a one-recipient change: incremental against a full read.

    .venv/bin/python bench/bench_snapshot_build.py [--recipients 10000] [--rounds 7]
        [--no-postgres]

Seeds `--recipients` approved recipients (2 hosts, 5 approved grants each; bench_registry's
filler) on SQLite, and on PostgreSQL when 127.0.0.1:5432 answers, then alternates, one
recipient suspended before each build (status and version bumped, as the API does):

- full: every row read (what the hub did before), the JSON of unchanged recipients reused;
- incremental: the recipients' (id, version, created_at) read, the rows of the ones that
  moved, the rest kept from the last build (what the hub does now).

Printed per database: median wall time and process CPU (the driver's thread included) of the
read and of the encode, and the ratio. Both builds' bodies are checked to be identical.
Takes ~30-60 s (seeding dominates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_registry import seed_registry  # noqa: E402

from registry import db  # noqa: E402
from registry.models import Recipient  # noqa: E402
from registry.snapshot_builder import PartCache, encoded_snapshot, fetch_snapshot_rows  # noqa: E402
from registry.state import bump_snapshot_version  # noqa: E402


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


async def build(sessions, held: PartCache, incremental: bool) -> tuple[dict, PartCache, bytes]:
    """One build; returns its timings (ms), its cache and its body."""
    wall0, cpu0 = _clocks()
    async with sessions() as session:
        rows = await fetch_snapshot_rows(session, held if incremental else None)
    wall1, cpu1 = _clocks()
    header, encoded, cache = encoded_snapshot(rows, held)
    body = encoded.body(header["version"], header["revision"], header["generated_at"])
    wall2, cpu2 = _clocks()
    times = {
        "read wall": (wall1 - wall0) * 1e3,
        "read CPU": (cpu1 - cpu0) * 1e3,
        "encode wall": (wall2 - wall1) * 1e3,
        "encode CPU": (cpu2 - cpu1) * 1e3,
        "rows read": len(rows.recipients),
    }
    return times, cache, body


async def change_one(sessions, rid: str, status: str) -> None:
    async with sessions() as session:
        await session.exec(
            sa.update(Recipient)
            .where(Recipient.id == rid)
            .values(status=status, version=Recipient.version + 1)
        )
        await bump_snapshot_version(session)
        await session.commit()


async def measure(url: str, label: str, rounds: int, recipients: int) -> None:
    await db.run_migrations(url)
    started = time.perf_counter()
    await seed_registry(url, recipients)
    print(f"{label}: seeded {recipients} recipients in {time.perf_counter() - started:.1f} s")
    engine = db.create_engine(url)
    try:
        sessions = db.create_sessionmaker(engine)
        first, cache, _ = await build(sessions, {}, incremental=True)
        print(f"  first build (a restart: every row) read {first['read wall']:.0f} ms wall")
        results: dict[str, list[dict]] = {"full": [], "incremental": []}
        for i in range(rounds):
            for kind in ("full", "incremental") if i % 2 else ("incremental", "full"):
                rid = f"vendor-{(i * 7919) % recipients:05d}"
                await change_one(sessions, rid, "suspended" if kind == "full" else "approved")
                times, cache, body = await build(sessions, cache, kind == "incremental")
                _, _, check = await build(sessions, {}, incremental=False)
                assert body == check, "incremental build differs from a full one"
                results[kind].append(times)
        print(f"  {'median of ' + str(rounds):<22}{'full':>10}{'incremental':>13}{'ratio':>8}")
        for key in ("read wall", "read CPU", "encode wall", "encode CPU", "rows read"):
            full = statistics.median(r[key] for r in results["full"])
            inc = statistics.median(r[key] for r in results["incremental"])
            unit = "" if key == "rows read" else " ms"
            ratio = f"{full / inc:7.1f}x" if inc and key != "rows read" else "       -"
            print(f"  {key + unit:<22}{full:>10.1f}{inc:>13.1f}{ratio}")
    finally:
        await engine.dispose()


def postgres_reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
        return True
    return False


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-build-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'registry.sqlite'}"
        await measure(url, "SQLite", args.rounds, args.recipients)
    if args.no_postgres or not postgres_reachable():
        print("PostgreSQL: skipped (not reachable at 127.0.0.1:5432)")
        return
    name = f"bench_build_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await measure(url, "PostgreSQL", args.rounds, args.recipients)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
