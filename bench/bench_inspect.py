"""Inspection throughput: µs per call and MB/s for a form call, a JSON call and a JSON batch.

Run: `.venv/bin/python bench/bench_inspect.py`. Each case is timed over repeated runs (best and
median: the machine is shared) beside a baseline measured in the same run (`orjson.loads` of the
same JSON, `parse_qsl` of the same form), so the ratio says what inspection costs over parsing. Goals (issue 2 §8): 2 KB JSON call < 100 µs, 256 KB batch
≥ 50 MB/s. The `encoded` case is the JSON call as base64 in a field of a gzip body sent without
Content-Encoding (issue 7 §1).
"""

from __future__ import annotations

import base64
import gzip
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.inspect import inspect_call
from proxy.inspect.model import InspectionLimits

FORM_HEADERS = [("Content-Type", "application/x-www-form-urlencoded")]
JSON_HEADERS = [("Content-Type", "application/json")]
# The benchmark measures throughput, not the time limit.
LIMITS = InspectionLimits(max_seconds=10.0, max_fields=10**6, max_body_bytes=8 << 20)


def _phone(rng: random.Random) -> str:
    return "+659" + "".join(rng.choice("0123456789") for _ in range(7))


def form_call(rng: random.Random) -> bytes:
    """A Twilio Messages call padded to ~1 KB (StatusCallback, body text, media)."""
    fields = {
        "To": _phone(rng),
        "From": "+15005550006",
        "MessagingServiceSid": "MG" + "a" * 32,
        "Body": "Your Acme order 8812-2291 has shipped and will arrive on Tuesday. "
        "Track it at https://acme.example.com/t/8812-2291 or reply STOP to opt out. " * 4,
        "StatusCallback": "https://hooks.acme.example.com/twilio/status?tenant=sg-prod-1",
        "ValidityPeriod": "3600",
        "SmartEncoded": "true",
        "MediaUrl": "https://cdn.acme.example.com/receipts/2024/01/15/8812-2291.png",
    }
    body = urlencode(fields).encode()
    return body + b"&Pad=" + b"x" * max(0, 1024 - len(body) - 5)


def _message(rng: random.Random, index: int) -> dict:
    return {
        "destinations": [{"to": _phone(rng), "messageId": f"msg-{index:08d}"}],
        "from": "AcmeSG",
        "text": f"Hi, your one-time code is {rng.randint(100000, 999999)}. It expires in 5 minutes.",
        "notifyUrl": "https://hooks.acme.example.com/infobip/dlr",
        "callbackData": f"order={rng.randint(10**9, 10**10)}",
        "validityPeriod": 720,
    }


def json_call(rng: random.Random) -> bytes:
    """An Infobip advanced SMS call of ~2 KB (a handful of messages, tracking options)."""
    doc = {"bulkId": "BULK-2024-01-15", "messages": [], "tracking": {"track": "SMS", "type": "otp"}}
    while len(orjson.dumps(doc)) < 2048 - 330:
        doc["messages"].append(_message(rng, len(doc["messages"])))
    return orjson.dumps(doc)


def json_batch(rng: random.Random) -> bytes:
    """An Infobip batch of ~256 KB."""
    doc = {"bulkId": "BULK-2024-01-15", "messages": []}
    size = 0
    while size < 256 * 1024:
        message = _message(rng, len(doc["messages"]))
        doc["messages"].append(message)
        size += len(orjson.dumps(message)) + 1
    return orjson.dumps(doc)


def encoded_call(rng: random.Random) -> bytes:
    """The JSON call as a base64 field of a JSON body gzipped without Content-Encoding: what the
    decoders of issue 7 §1 undo (magic bytes, base64 gate, a nested walk)."""
    inner = base64.b64encode(json_call(rng)).decode()
    return gzip.compress(orjson.dumps({"type": "batch", "payload": inner}), mtime=0)


def _encoded_baseline(body: bytes) -> object:
    return orjson.loads(base64.b64decode(orjson.loads(gzip.decompress(body))["payload"]))


def best_and_median(fn: Callable[[], object], *, min_seconds: float = 0.5) -> tuple[float, float]:
    """Best and median per-call time over repeated runs (seconds).

    The machine is shared: the best run is the least disturbed by other processes, the median
    says how much they disturbed it.
    """
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            break
        calls *= 2
    runs = [elapsed / calls]
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(runs) < 5:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return min(runs), statistics.median(runs)


def main() -> None:
    rng = random.Random(7)
    cases = [
        ("form call", form_call(rng), FORM_HEADERS, lambda b: parse_qsl(b.decode()), "parse_qsl"),
        ("json call", json_call(rng), JSON_HEADERS, orjson.loads, "orjson.loads"),
        ("json batch", json_batch(rng), JSON_HEADERS, orjson.loads, "orjson.loads"),
        ("encoded", encoded_call(rng), JSON_HEADERS, _encoded_baseline, "gunzip+b64+loads"),
    ]
    url = "https://api.example.com/sms/2/text/advanced"
    print(
        f"{'case':<11} {'bytes':>8} {'best µs':>10} {'median µs':>10} {'best MB/s':>9} "
        f"{'baseline µs':>12} {'ratio':>6} findings"
    )
    for name, body, headers, baseline, baseline_name in cases:
        inspection = inspect_call("POST", url, headers, body, limits=LIMITS)
        assert inspection.complete, inspection.problems
        best, median = best_and_median(
            lambda: inspect_call("POST", url, headers, body, limits=LIMITS)  # noqa: B023
        )
        base, _ = best_and_median(lambda: baseline(body))  # noqa: B023
        print(
            f"{name:<11} {len(body):>8} {best * 1e6:>10.1f} {median * 1e6:>10.1f} "
            f"{len(body) / best / 1e6:>9.1f} {base * 1e6:>12.1f} {best / base:>6.1f} "
            f"{len(inspection.findings)} ({baseline_name} baseline)"
        )


if __name__ == "__main__":
    main()
