"""The decision spool: records made durable before their refusal leaves, with grouped fsyncs.

Every refused call waits for its record to be fsync'd (`Spool.commit`). This measures, on the
disk `--dir` is on, how many refused calls per second that allows when `--concurrency` calls
wait at once, with records of a few milliseconds sharing one fsync (the proxy's setting)
against a baseline of one write and fsync per record, in the same run:

    .venv/bin/python bench/bench_spool.py [--records 2000] [--concurrency 50] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from proxy.spool import Spool

RECORD = {
    "time": "2026-11-30T00:00:00.000+00:00",
    "action": "deny",
    "would_block": False,
    "mode": "enforce",
    "reason_codes": ["CATEGORY_NOT_APPROVED"],
    "recipient_id": "zendesk",
    "host": "acme.zendesk.com",
    "port": 443,
    "method": "POST",
    "path": "/api/v2/tickets.json",
    "purpose": "customer_support",
    "categories": ["contact.phone_number"],
    "finding_locations": ["contact.phone_number@json:$.ticket.requester.phone"],
    "status": 403,
    "reasons": [
        {"code": "CATEGORY_NOT_APPROVED", "message": "…", "category": "contact.phone_number"}
    ],
}


async def grouped(
    directory: Path, records: int, concurrency: int, window: float
) -> tuple[float, int]:
    """Records/s and fsyncs with `concurrency` callers each committing its share."""
    spool = Spool(directory, group_window=window, segment_max_records=10**9)
    await spool.start()
    queue = iter(range(records))

    async def caller() -> None:
        for i in queue:
            await spool.commit({**RECORD, "decision_id": f"d{i}"})

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    fsyncs = spool.fsyncs
    await spool.close()
    return records / elapsed, fsyncs


async def paced(directory: Path, records: int, rate: float, window: float) -> tuple[float, int]:
    """Median wait of a refused call (ms) and fsyncs, with calls arriving at `rate` per second."""
    spool = Spool(directory, group_window=window, segment_max_records=10**9)
    await spool.start()
    waits: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await spool.commit({**RECORD, "decision_id": f"d{i}"})
        waits.append(time.perf_counter() - t0)

    tasks = []
    for i in range(records):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    fsyncs = spool.fsyncs
    await spool.close()
    waits.sort()
    return waits[len(waits) // 2] * 1000, fsyncs


def one_fsync_each(directory: Path, records: int) -> float:
    """The baseline: each record written and fsync'd on its own (what grouping avoids)."""
    import orjson

    fd = os.open(directory / "baseline.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    t0 = time.perf_counter()
    try:
        for i in range(records):
            os.write(fd, orjson.dumps({**RECORD, "decision_id": f"d{i}"}) + b"\n")
            os.fsync(fd)
    finally:
        os.close(fd)
    return records / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=300.0, help="paced arrivals per second")
    parser.add_argument("--dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        baseline = one_fsync_each(base, args.records)
        rows = [("one fsync per record (baseline)", baseline, args.records)]
        for label, window in (("grouped, 2 ms window (proxy)", 0.002), ("grouped, no window", 0.0)):
            sub = base / label.split(",")[1].strip().replace(" ", "-")
            rate, fsyncs = asyncio.run(grouped(sub, args.records, args.concurrency, window))
            rows.append((label, rate, fsyncs))
        paced_rows = []
        for label, window in (("2 ms window (proxy)", 0.002), ("no window", 0.0)):
            sub = base / ("paced-" + label.split()[0])
            paced_rows.append(
                (label, *asyncio.run(paced(sub, args.records // 4, args.rate, window)))
            )
    print(f"{args.records} records, {args.concurrency} waiting at once, on {args.dir or 'tmp'}")
    print(f"{'':34} {'records/s':>10} {'fsyncs':>7} {'ratio':>6}")
    for label, rate, fsyncs in rows:
        print(f"{label:34} {rate:10.0f} {fsyncs:7d} {rate / baseline:6.1f}")
    print(f"\n{args.records // 4} calls arriving {args.rate:.0f}/s, one at a time")
    print(f"{'':34} {'median wait ms':>14} {'fsyncs':>7}")
    for label, wait, fsyncs in paced_rows:
        print(f"{label:34} {wait:14.2f} {fsyncs:7d}")


if __name__ == "__main__":
    main()
