"""The admin listener: `/healthz`, `/readyz` and `/metrics` on their own port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.metrics import ProxyMetrics


def create_admin_app(
    metrics: ProxyMetrics, not_ready_reasons: Callable[[], list[str]]
) -> web.Application:
    """The admin aiohttp app; `not_ready_reasons` says why the proxy is not ready (empty: it is)."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        reasons = not_ready_reasons()
        if not reasons:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not_ready", "reasons": reasons}, status=503)

    async def metrics_view(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


class AdminServer:
    """Runs the admin app on loopback (or wherever `--admin-listen` says)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host = host
        self._port = port

    async def start(self) -> tuple[str, int]:
        """Listen; return the bound (host, port)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        address = self._runner.addresses[0]
        return address[0], address[1]

    async def close(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()
