"""The admin listener: `/healthz`, `/readyz` and `/metrics` on their own port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.metrics import ProxyMetrics


def create_admin_app(metrics: ProxyMetrics, is_ready: Callable[[], bool]) -> web.Application:
    """The admin aiohttp app; `is_ready` says whether a snapshot is loaded and the engine ready."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ready = is_ready()
        return web.json_response(
            {"status": "ready" if ready else "not_ready"}, status=200 if ready else 503
        )

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
