"""The admin listener: `/healthz`, `/readyz` and `/metrics` on their own port.

A few GET routes on plain asyncio; requests are read by the proxy's own HTTP/1 reader
(`proxy.http1`, httptools), so the admin port needs no web framework. The same server answers
for one proxy process (`create_admin_app`) and for the supervisor of `--workers N`
(`proxy.supervisor`), which aggregates its workers' answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from proxy.http1 import BadRequest, ClientConnection, RequestHead
from proxy.prometheus import load_text_format_for
from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.metrics import ProxyMetrics

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class AdminResponse:
    """One admin answer: status, media type and body."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def json(cls, doc: object, status: int = 200) -> AdminResponse:
        return cls(status, JSON, orjson.dumps(doc))


# A route gets the request's head (`/metrics` reads its Accept).
Route = Callable[[RequestHead], Awaitable[AdminResponse]]


def readiness_response(reasons: list[str], notices: list[str] | None = None) -> AdminResponse:
    """`/readyz`: 200 `{"status": "ready"}`, else 503 with the reasons; `notices` (what an
    operator should know but does not stop the proxy serving: shipping refused, a token about
    to expire) are listed either way."""
    doc: dict[str, object] = {"status": "not_ready", "reasons": reasons} if reasons else {}
    doc = doc or {"status": "ready"}
    if notices:
        doc["notices"] = notices
    return AdminResponse.json(doc, status=503 if reasons else 200)


def _no_notices() -> list[str]:
    return []


def create_admin_app(
    metrics: ProxyMetrics,
    not_ready_reasons: Callable[[], list[str]],
    notices: Callable[[], list[str]] = _no_notices,
) -> dict[str, Route]:
    """The admin routes of one proxy process; `not_ready_reasons` is empty when it is ready."""

    async def healthz(_head: RequestHead) -> AdminResponse:
        return AdminResponse.json({"status": "ok"})

    async def readyz(_head: RequestHead) -> AdminResponse:
        return readiness_response(not_ready_reasons(), notices())

    async def metrics_view(head: RequestHead) -> AdminResponse:
        accept = head.header("accept")
        await load_text_format_for(accept)
        return AdminResponse(200, *metrics.exposition(accept))

    return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}


class AdminServer:
    """Serves `routes` (path -> handler, GET and HEAD) on `host:port`, keep-alive included."""

    def __init__(
        self,
        routes: dict[str, Route],
        host: str,
        port: int,
        *,
        settings: Settings,
    ) -> None:
        self._routes = routes
        self._host = host
        self._port = port
        # Only the request-reading limits are used (head size, timeouts).
        self._settings = settings
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        """Listen; return the bound (host, port)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # Bound here as the proxy's listener is: given a host, the loop's create_server
        # resolves it through Python's idna codec (~0.4 MB of the sidecar, for an address).
        sock = socket.create_server((self._host, self._port), family=family)
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection, sock=sock
        )
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    async def close(self) -> None:
        """Stop serving (connections open now are closed)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def _new_connection(self) -> ClientConnection:
        return ClientConnection(self._settings, on_connect=self._start_serving)

    def _start_serving(self, conn: ClientConnection) -> None:
        asyncio.get_running_loop().create_task(self._on_client(conn))

    async def _on_client(self, conn: ClientConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                head = await conn.read_head(idle_timeout=self._settings.idle_timeout)
                if head is None:
                    return
                path = head.target.partition("?")[0]
                route = self._routes.get(path)
                if route is None:
                    answer = AdminResponse.json({"error": "not_found"}, status=404)
                elif head.method not in ("GET", "HEAD"):
                    answer = AdminResponse.json({"error": "method_not_allowed"}, status=405)
                else:
                    answer = await route(head)
                has_body = head.header("content-length") not in (None, "0") or (
                    head.header("transfer-encoding") is not None
                )
                keep_alive = head.keep_alive and not has_body and answer.status != 405
                await conn.send(_render(answer, head.method == "HEAD", keep_alive))
                if not keep_alive:
                    return
                conn.finish_message()
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await conn.send(
                    _render(AdminResponse.json({"error": exc.code}, exc.status), False, False)
                )
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            conn.close()
            conn.writer.close()


def _render(answer: AdminResponse, head_only: bool, keep_alive: bool) -> bytes:
    reason = HTTPStatus(answer.status).phrase
    head = (
        f"HTTP/1.1 {answer.status} {reason}\r\n"
        f"Content-Type: {answer.content_type}\r\n"
        f"Content-Length: {len(answer.body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + answer.body
