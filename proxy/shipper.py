"""Ship spooled blocked/would-block decisions and ledger counts to the registry's `POST /v1/decisions`.

A segment is removed only after the registry answered 2xx for every batch of it; a failed batch
is retried (backoff with jitter) from the start of its segment. The registry keys decisions by
id and ledger rows by (proxy, minute, key), so a retry never duplicates and a registry restart
loses nothing. A segment written for another registry (its header says which) is never sent
here: it is kept, logged once and counted (`sharewall_spool_foreign_segments`).

A refusal (401: the token is unknown, revoked or expired; 403: e.g. `proxy-id-bound`) is retried
like any failure, since an admin can fix it without restarting the proxy, but it is logged as
`shipper.refused` with the registry's reason code, counted, and shown on `/readyz` as a notice
(the proxy stays ready: see `ProxyApp.readiness_notices`). Each answer's
`Sharewall-Token-Expires` goes to the `TokenExpiry` shared with the follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import structlog

from proxy.control_client import ControlClient
from proxy.ledger import Ledger
from proxy.registry_follower import RegistryHTTPError, backoff_delay, write_file_atomically
from proxy.registry_token import REFUSED_STATUSES, Refusals, RegistryToken, TokenExpiry
from proxy.spool import Spool, read_segment, registry_identity

log = structlog.get_logger("sharewall.proxy.shipper")

# Ledger rows not yet acknowledged survive a proxy restart here (not `*.jsonl`: not a segment).
LEDGER_PENDING_FILE = "ledger-pending.json"
DECISIONS_PATH = "/v1/decisions"
_POST_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


class ShippingRefused(RegistryHTTPError):
    """The registry answered 401 or 403 to a shipment; `reason` is its problem code."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(status, detail)
        self.reason = reason
        self.detail = detail


def default_proxy_id() -> str:
    """`$SHAREWALL_PROXY_ID`, else `$HOSTNAME` (the pod name), else the host name."""
    return (
        os.environ.get("SHAREWALL_PROXY_ID") or os.environ.get("HOSTNAME") or socket.gethostname()
    )


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Shipper:
    """Background task that empties the spool and the ledger into the registry."""

    def __init__(
        self,
        registry_url: str,
        token: str | RegistryToken | None,
        spool: Spool,
        ledger: Ledger | None = None,
        *,
        proxy_id: str | None = None,
        batch_size: int = 1000,
        interval: float = 1.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        request_timeout: float = 30.0,
        token_expiry: TokenExpiry | None = None,
    ) -> None:
        self.url = registry_url.rstrip("/") + DECISIONS_PATH
        self.registry_url = registry_url
        # A fixed secret, or a token file read again when it changes (`RegistryToken`).
        self.token = token if isinstance(token, RegistryToken) else RegistryToken(token)
        self.spool = spool
        self.ledger = ledger
        self.proxy_id = proxy_id or default_proxy_id()
        self.batch_size = batch_size
        self.interval = interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.request_timeout = request_timeout
        self.shipped_decisions = 0
        self.shipped_ledger_rows = 0
        self.registry = registry_identity(registry_url)
        # Segments of another registry (a predecessor's on this directory): kept, not sent.
        self.foreign_segments: set[str] = set()
        self.refusals = Refusals()  # of our uploads: the current one, counts by reason
        self.token_expiry = token_expiry or TokenExpiry()
        self._pending_ledger: list[dict[str, Any]] = []
        self._pending_path = spool.directory / LEDGER_PENDING_FILE
        self._client: ControlClient | None = None
        self._task: asyncio.Task[None] | None = None
        # One shipment at a time: the background loop, close()'s drain and a caller's
        # ship_once() would otherwise read the same segment twice and post the same ledger rows.
        self._shipping = asyncio.Lock()

    async def start(self) -> None:
        """Load ledger rows left by the last run, then ship in the background."""
        saved = await asyncio.to_thread(self._load_pending)
        if self.ledger is not None:
            # Back into the counts: a minute the last run left unfinished is counted on, and
            # shipped once, whole (a re-sent row replaces, so half a minute must never go out).
            self.ledger.restore(saved)
        else:
            self._pending_ledger = saved
        self._client = ControlClient(self.registry_url, token=self.token.current())
        self._task = asyncio.create_task(self._run(), name="decision-shipper")

    async def close(self, *, drain_timeout: float = 2.0) -> None:
        """Stop; try one last shipment within `drain_timeout`, keep what is left for the next run."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            try:
                await asyncio.wait_for(self.ship_once(), drain_timeout)
            except Exception as exc:  # the registry may be down at shutdown: segments stay on disk
                log.info("shipper.drain_incomplete", error=type(exc).__name__)
            await self._client.close()
            self._client = None
        if self.ledger is not None:
            # The current minute is not over: saved, not sent, and continued by the next run.
            self._pending_ledger.extend(self.ledger.take_complete(everything=True))
        await asyncio.to_thread(self._save_pending)

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self.ship_once()
                attempt = 0
                await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
                attempt += 1
                if isinstance(exc, ShippingRefused):
                    log.error(
                        "shipper.refused",
                        status=exc.status,
                        reason=exc.reason,
                        detail=exc.detail,
                        proxy_id=self.proxy_id,
                        attempt=attempt,
                        retry_in=round(delay, 2),
                    )
                else:
                    log.warning(
                        "shipper.ship_failed",
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                        attempt=attempt,
                        retry_in=round(delay, 2),
                    )
                await asyncio.sleep(delay)

    async def ship_once(self) -> int:
        """Ship every sealed segment and the finished ledger minutes; return decisions shipped.

        Safe to call while the background loop runs: shipments take turns, so what one shipped
        the next does not find again.
        """
        async with self._shipping:
            return await self._ship_once()

    async def _ship_once(self) -> int:
        if self.ledger is not None:
            self._pending_ledger.extend(self.ledger.take_complete())
        shipped = 0
        for path in self.spool.sealed_segments():
            if path.name in self.foreign_segments:
                continue
            segment = await asyncio.to_thread(read_segment, path)
            if segment.registry != self.registry:
                self.foreign_segments.add(path.name)
                log.warning(
                    "shipper.foreign_segment_kept",
                    segment=path.name,
                    written_for=segment.registry,
                    registry=self.registry,
                    decisions=len(segment.records),
                )
                continue
            records = segment.records
            for batch in _batches(records, self.batch_size) if records else ():
                await self._post(batch, self._pending_ledger)
                self._ledger_acknowledged()
            self.spool.remove(path)
            shipped += len(records)
            self.shipped_decisions += len(records)
            log.info("shipper.segment_shipped", segment=path.name, decisions=len(records))
        if self._pending_ledger:
            await self._post([], self._pending_ledger)
            self._ledger_acknowledged()
        return shipped

    def _ledger_acknowledged(self) -> None:
        self.shipped_ledger_rows += len(self._pending_ledger)
        self._pending_ledger = []

    async def _post(self, decisions: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> None:
        assert self._client is not None
        payload = {"proxy_id": self.proxy_id, "decisions": decisions, "ledger": ledger}
        body = gzip.compress(orjson.dumps(payload), compresslevel=5)
        secret = self.token.current()
        self._client.use_token(secret)
        async with asyncio.timeout(self.request_timeout):
            resp = await self._client.post(DECISIONS_PATH, body=body, headers=_POST_HEADERS)
        if secret == self.token.secret:  # else the expiry is of a secret replaced meanwhile
            self.token_expiry.note(resp.headers)
        if resp.status == 401:
            self.token.refused()  # a rotated secret in the file is used by the retry
        if resp.status in REFUSED_STATUSES:
            refusal = self.refusals.refused(resp.status, resp.body)
            raise ShippingRefused(refusal.status, refusal.reason, refusal.detail)
        if not resp.ok:
            raise RegistryHTTPError(resp.status, resp.text()[:200])
        if (ended := self.refusals.accepted()) is not None:
            log.info("shipper.refusal_over", reason=ended.reason, proxy_id=self.proxy_id)
        answer = resp.json()
        # Records the registry refused (unknown ids...) are not retried: they never would pass.
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if rejected:
            log.warning(
                "shipper.records_rejected",
                count=len(rejected),
                first=rejected[0] if isinstance(rejected, list) else None,
            )

    def notices(self) -> list[str]:
        """What `/readyz` reports about shipping while the proxy stays ready (empty: nothing)."""
        refusal = self.refusals.current
        if refusal is None:
            return []
        return [refusal.notice("shipments", "decisions are kept in the spool and retried")]

    def _load_pending(self) -> list[dict[str, Any]]:
        try:
            rows = orjson.loads(self._pending_path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError):
            log.warning("shipper.ledger_pending_unreadable", path=str(self._pending_path))
            return []
        # Kept on disk until `close` rewrites it: a crash before then re-sends, which replaces.
        return rows if isinstance(rows, list) else []

    def _save_pending(self) -> None:
        if self._pending_ledger:
            write_file_atomically(self._pending_path, orjson.dumps(self._pending_ledger))
        else:
            self._pending_path.unlink(missing_ok=True)
