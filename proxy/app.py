"""The `sharewall proxy` process: wires every resource, runs until SIGTERM, tears down in reverse.

Each resource is owned by one cleanup context (aiohttp's idea): set up before its `yield`,
torn down after it, in reverse order of setup. Another component (e.g. the decision shipper)
adds itself by appending to `ProxyApp.cleanup_ctx` in `create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from proxy.admin import AdminServer, create_admin_app
from proxy.decide import Decider, backstop_for
from proxy.decision_log import DecisionLog, DecisionSink, JsonLines
from proxy.destinations import Resolver, system_getaddrinfo
from proxy.engines import create_engine
from proxy.exchange import Source, new_exchange
from proxy.inspect import native as inspect_native
from proxy.inspect.phone import example_numbers
from proxy.listener import ProxyContext, ProxyServer
from proxy.metrics import ProxyMetrics
from proxy.pipeline import decide_exchange, inspect_exchange
from proxy.settings import Settings
from proxy.snapshot_source import FileSnapshotSource, SnapshotSource
from proxy.spool import Spool, SpoolLocked
from proxy.upstream import UpstreamPool
from sharewall.hosts import parse_host_pattern, parse_pin
from sharewall.logs import stdout_lines
from sharewall.recipients import RecipientIndex, updated_index
from sharewall.registry_file import RegistryFileError
from sharewall.slices import freeze_start_up_heap, release_gradually
from sharewall.snapshot import Snapshot

if TYPE_CHECKING:
    from proxy.registry_token import RegistryToken, TokenExpiry

log = structlog.get_logger("sharewall.proxy")

# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). A
# worker thread inspecting a big body holds it until asked to let go: each time the loop
# wakes for a call meanwhile, it waited the whole interval (bench_gc_pauses.py --big-every).
GIL_SWITCH_SECONDS = 0.001

CleanupContext = Callable[["ProxyApp"], contextlib.AbstractAsyncContextManager[None]]


class StartupError(Exception):
    """The proxy cannot start (exit code 2): bad registry file, unusable CA, port in use."""


@dataclass
class ProxyApp:
    """Every long-lived resource of one proxy process."""

    settings: Settings
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    decision_log: DecisionLog = field(default_factory=DecisionLog)
    spool: Spool | None = None
    decider: Decider | None = None
    upstream: UpstreamPool | None = None
    server: ProxyServer | None = None
    context: ProxyContext | None = None
    source: SnapshotSource | None = None
    listen_address: tuple[str, int] | None = None
    transparent_address: tuple[str, int] | None = None
    admin_address: tuple[str, int] | None = None
    cleanup_ctx: list[CleanupContext] = field(default_factory=list)
    # What `/readyz` lists as notices (the shipper's refusal, the token's expiry).
    notice_sources: list[Callable[[], list[str]]] = field(default_factory=list)
    token_expiry: TokenExpiry | None = None
    # The secret sent to the registry: `--token`, or `--token-file` read again when it changes.
    registry_token: RegistryToken | None = None

    @property
    def decision_sinks(self) -> list[DecisionSink]:
        """Hooks called with every decision record (allowed ones too)."""
        return self.decision_log.sinks

    def is_ready(self) -> bool:
        """A snapshot is loaded into a ready engine and the spool takes records."""
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[str]:
        """Why `/readyz` answers 503 (empty when ready)."""
        reasons = []
        if self.decider is None or not self.decider.is_ready:
            reasons.append("no registry snapshot loaded into a ready policy engine")
        if self.spool is not None and self.spool.problem is not None:
            # Blocked calls are answered 503 while their records cannot be written.
            reasons.append(self.spool.problem)
        lines = stdout_lines()
        if lines is not None and lines.problem is not None:
            # Calls are answered 503 (`log_unavailable`) until the reader catches up.
            reasons.append(lines.problem)
        return reasons

    def readiness_notices(self) -> list[str]:
        """What `/readyz` reports without answering 503.

        Shipping refused by the registry (a revoked or expired token, a proxy id bound to
        another token) is one: the proxy still decides every call and keeps the records in
        its spool, so taking the pod out of service would stop the app's traffic for a
        bookkeeping fault an admin fixes in the registry. A spool that can no longer take
        records is a reason (it makes calls fail), and says so by itself.
        """
        return [notice for source in self.notice_sources for notice in source()]

    async def on_snapshot(self, snapshot: Snapshot) -> None:
        """Swap in a new snapshot: the engine first, then the host index (only if the engine took it)."""
        assert self.decider is not None and self.context is not None
        before, index = self.decider.snapshot, None
        if before is not None and self.context.index is not None:
            index = await updated_index(self.context.index, before, snapshot)
        if index is None:  # 10,000 recipients: ~0.1 s of work, in slices so no call waits on it
            index = await RecipientIndex.build_sliced(snapshot.recipients)
        else:
            await asyncio.sleep(0)  # calls waiting since the index update go before the engine's
        if await self.decider.set_snapshot(snapshot):
            replaced, self.context.index = self.context.index, index
            if before is not None:
                # The replaced recipients and index are freed a few at a time, not all at once.
                tables = replaced.tables() if replaced is not None else ()
                release_gradually(list(before.recipients), *tables)
            self.metrics.snapshot_reloads.labels(result="ok").inc()
        else:
            self.metrics.snapshot_reloads.labels(result="failed").inc()


@contextlib.asynccontextmanager
async def _spool_ctx(app: ProxyApp) -> AsyncIterator[None]:
    app.spool = Spool(app.settings.spool_dir, registry=app.settings.registry_url)
    try:
        await app.spool.start()
    except SpoolLocked as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(
            f"cannot use the spool directory {app.settings.spool_dir}: {exc}"
        ) from None
    app.decision_log.spool = app.spool
    app.metrics.watch_spool(app.spool)
    try:
        yield
    finally:
        await app.spool.close()  # flush + fsync + seal: nothing blocked is lost on shutdown


@contextlib.asynccontextmanager
async def _engine_ctx(app: ProxyApp) -> AsyncIterator[None]:
    s = app.settings
    engine = create_engine(s.engine, opa_url=s.opa_url, timeout=s.engine_timeout)
    app.decider = Decider(engine, timeout=backstop_for(s.engine_timeout))
    app.metrics.watch_decider(app.decider)
    try:
        yield
    finally:
        await engine.close()


@contextlib.asynccontextmanager
async def _upstream_ctx(app: ProxyApp) -> AsyncIterator[None]:
    s = app.settings
    app.upstream = UpstreamPool(
        upstream_ca=s.upstream_ca,
        connect_timeout=s.upstream_connect_timeout,
        head_timeout=s.upstream_timeout,
        read_timeout=s.idle_timeout,
    )
    await app.upstream.start()
    try:
        yield
    finally:
        await app.upstream.close()


@contextlib.asynccontextmanager
async def _listener_ctx(app: ProxyApp) -> AsyncIterator[None]:
    """Bind first (so the resolver knows our own addresses), wire the context, serve later."""
    s = app.settings
    ca = None
    if s.ca_cert is not None and s.ca_key is not None:
        from proxy.certs import CertificateAuthority

        try:
            ca = CertificateAuthority.load(s.ca_cert, s.ca_key)
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot load the CA: {exc}") from None
    try:
        pins = dict(parse_pin(p) for p in s.resolve_pins)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    client_tls = None
    if s.client_ca is not None and s.tls_cert is not None and s.tls_key is not None:
        from proxy.client_identity import client_tls_context

        try:
            client_tls = client_tls_context(s.tls_cert, s.tls_key, s.client_ca)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise StartupError(f"cannot load --client-ca/--tls-cert/--tls-key: {exc}") from None
    context = ProxyContext(
        settings=s,
        decider=app.decider,
        resolver=Resolver(pins),
        upstream=app.upstream,  # type: ignore[arg-type]
        decision_log=app.decision_log,
        metrics=app.metrics,
        certificate_authority=ca,
        client_tls=client_tls,
    )
    server = ProxyServer(context)
    try:
        app.listen_address = server.bind()
    except OSError as exc:
        raise StartupError(f"cannot listen on {s.listen}: {exc}") from None
    if s.transparent_listen is not None:
        try:
            app.transparent_address = server.bind_transparent(s.transparent_listen)
        except OSError as exc:
            raise StartupError(f"cannot listen on {s.transparent_listen}: {exc}") from None
    own = [a for a in (app.listen_address, app.transparent_address) if a]
    own.extend(s.sibling_addresses)
    if s.admin_listen is not None:
        own.extend(await _addresses_of(s.admin_listen))
    context.resolver = Resolver(
        pins, self_addresses=own, timeout=s.upstream_connect_timeout, dns_ttl=s.dns_ttl
    )
    app.server, app.context = server, context
    try:
        yield
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def _snapshot_ctx(app: ProxyApp) -> AsyncIterator[None]:
    s = app.settings
    source: SnapshotSource
    if s.registry_file is None:
        from proxy.registry_follower import RegistryFollower

        # The last good snapshot is kept beside the spool: the proxy's one state directory.
        follower = RegistryFollower(
            s.registry_url or "", app.registry_token, s.spool_dir, token_expiry=app.token_expiry
        )
        app.notice_sources.append(follower.notices)
        app.metrics.watch_refusals(
            follower.refusals,
            "sharewall_snapshot_refusals",
            "sharewall_snapshot_refused",
            "snapshot requests",
        )
        source = follower
    else:
        source = FileSnapshotSource(s.registry_file, interval=s.reload_interval)
    try:
        await source.start(app.on_snapshot)
    except RegistryFileError as exc:
        raise StartupError(str(exc)) from None
    app.source = source
    try:
        yield
    finally:
        await source.close()


@contextlib.asynccontextmanager
async def _registry_token_ctx(app: ProxyApp) -> AsyncIterator[None]:
    """The secret the shipper and the follower send: `--token`, or `--token-file`'s content."""
    from proxy.registry_token import RegistryToken, TokenFileError

    s = app.settings
    try:
        app.registry_token = RegistryToken(s.token, path=s.token_file, expiry=app.token_expiry)
    except TokenFileError as exc:  # checked at start too: the file went since
        raise StartupError(str(exc)) from None
    yield


@contextlib.asynccontextmanager
async def _shipper_ctx(app: ProxyApp) -> AsyncIterator[None]:
    """Ship spooled blocked decisions and per-minute allowed counts to the registry."""
    from proxy.ledger import Ledger
    from proxy.shipper import Shipper

    assert app.spool is not None
    ledger = Ledger()
    app.decision_sinks.append(ledger.record)
    shipper = Shipper(
        app.settings.registry_url or "",
        app.registry_token,
        app.spool,
        ledger,
        token_expiry=app.token_expiry,
    )
    app.metrics.watch_shipper(shipper)
    app.notice_sources.append(shipper.notices)
    await shipper.start()
    try:
        yield
    finally:
        # Listeners are closed by now: seal the last segment so the final drain can send it.
        await app.spool.close()
        await shipper.close()


async def _addresses_of(address: tuple[str, int]) -> list[tuple[str, int]]:
    """The IP addresses a listen address (`--admin-listen localhost:15081`) stands for."""
    host, port = address
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return [address]
    try:
        infos = await system_getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
    return list(dict.fromkeys((str(info[4][0]), port) for info in infos))


@contextlib.asynccontextmanager
async def _leftovers_ctx(app: ProxyApp) -> AsyncIterator[None]:
    """Ship what workers of a larger `--workers` count left in DIR/worker-K (in the background)."""
    from proxy.spool_leftovers import leftover_dirs, ship_leftovers

    s = app.settings
    task = None
    if await asyncio.to_thread(leftover_dirs, s.spool_dir, s.workers):
        task = asyncio.create_task(ship_leftovers(s, app.registry_token), name="spool-leftovers")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def _warmup_ctx(app: ProxyApp) -> AsyncIterator[None]:
    """Warm the hot path before `/readyz` answers (the admin server starts after this)."""
    await warm_up(app)
    yield


async def warm_up(app: ProxyApp) -> None:
    """Run one throwaway inspection and one policy evaluation, so that `/readyz` means "fast".

    The first call after start would otherwise pay ~20 ms: phonenumbers loads its metadata per
    region on first use, the inspector compiles its plans, and the engine's first evaluation
    fills its own caches. The call goes through the same pipeline as every call
    (`decide_exchange`), without DNS, and is not logged as a decision. A failure here only
    costs the first call that time again: logged, not fatal.
    """
    s = app.settings
    t0 = time.perf_counter()
    try:
        # The default region's own number, nationally and in E.164: the metadata and patterns
        # this deployment's calls need (a fixed +1 number loaded the 25 regions of +1, ~1 MB).
        national, international = example_numbers(s.limits.default_region) or (
            "+14155550123",
            "+14155550123",
        )
        body = orjson.dumps({"to": international, "body": f"warm-up, call {national}"})
        decider = app.decider
        snapshot = decider.snapshot if decider is not None else None
        host, port = "warm-up.invalid", 80
        if snapshot is not None and snapshot.recipients and snapshot.recipients[0].hosts:
            # A registered recipient's name: the policy walks its real rules, not the
            # unknown-recipient shortcut.
            pattern = parse_host_pattern(snapshot.recipients[0].hosts[0])
            host = f"warm-up.{pattern.name}" if pattern.wildcard else pattern.name
            port = pattern.port or 80
        ex = new_exchange(
            entry="forward",
            method="POST",
            scheme="http",
            host=host,
            port=port,
            path="/v1/messages",
            raw_headers=[("content-type", "application/json")],
            body=body,
            index=app.context.index if app.context is not None else None,
            source=Source(s.source_workload, s.source_namespace),
            default_purpose=s.default_purpose,
        )
        if decider is not None and decider.is_ready:
            # The real pipeline, minus DNS (resolver=None): no lookup of a name nobody calls.
            async with asyncio.timeout(max(s.engine_timeout, 1.0)):
                await decide_exchange(ex, decider, resolver=None, limits=s.limits)
        else:
            await inspect_exchange(ex, s.limits)
    except Exception as exc:  # an optimisation only: the proxy works without it
        log.warning("proxy.warm_up_failed", error=type(exc).__name__)
        return
    log.info("proxy.warmed_up", ms=round((time.perf_counter() - t0) * 1000.0, 1))


@contextlib.asynccontextmanager
async def _admin_ctx(app: ProxyApp) -> AsyncIterator[None]:
    s = app.settings
    if s.admin_listen is None:
        yield
        return
    admin = AdminServer(
        create_admin_app(app.metrics, app.not_ready_reasons, app.readiness_notices),
        *s.admin_listen,
        settings=s,
    )
    try:
        app.admin_address = await admin.start()
    except OSError as exc:
        raise StartupError(f"cannot listen on {s.admin_listen}: {exc}") from None
    # The resolver must refuse the admin port too, now that we know it (port 0 in tests).
    assert app.context is not None
    pins = dict(parse_pin(p) for p in s.resolve_pins)
    app.context.resolver = Resolver(
        pins,
        self_addresses=[
            *(a for a in (app.listen_address, app.transparent_address, app.admin_address) if a),
            *s.sibling_addresses,
        ],
        timeout=s.upstream_connect_timeout,
        dns_ttl=s.dns_ttl,
    )
    try:
        yield
    finally:
        await admin.close()


def create_app(settings: Settings, *, decision_lines: JsonLines | None = None) -> ProxyApp:
    """The proxy with its resources in setup order (torn down in reverse).

    `decision_lines`: write `egress.decision` lines directly (see `JsonLines`), not via structlog.
    """
    app = ProxyApp(settings=settings, decision_log=DecisionLog(lines=decision_lines))
    app.decision_sinks.append(app.metrics.observe_record)
    if (lines := stdout_lines()) is not None:
        app.metrics.watch_log_lines(lines)
    app.cleanup_ctx.append(_spool_ctx)
    if settings.registry_url is not None:
        from proxy.registry_token import TokenExpiry

        # What the registry says of our token, from the follower's and the shipper's answers.
        app.token_expiry = TokenExpiry()
        app.notice_sources.append(app.token_expiry.notices)
        app.metrics.watch_token_expiry(app.token_expiry)
        app.cleanup_ctx.extend([_registry_token_ctx, _shipper_ctx, _leftovers_ctx])
    app.cleanup_ctx.extend(
        [_engine_ctx, _upstream_ctx, _listener_ctx, _snapshot_ctx, _warmup_ctx, _admin_ctx]
    )
    return app


def _write_port_file(path: Path, app: ProxyApp) -> None:
    """`{"listen": [host, port], "admin": [host, port], "transparent"?: [host, port]}`, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    ports = {"listen": app.listen_address, "admin": app.admin_address}
    if app.transparent_address is not None:
        ports["transparent"] = app.transparent_address
    tmp.write_bytes(orjson.dumps(ports))
    os.replace(tmp, path)


def _source_fields(settings: Settings, snapshot: Snapshot | None) -> dict[str, Any]:
    """Where calls' sources come from, and whether the registry binds purposes to them."""
    fields: dict[str, Any] = (
        {"source_from": "client_certificate"}
        if settings.is_gateway
        else {
            "source_from": "settings",
            "source_workload": settings.source_workload,
            "source_namespace": settings.source_namespace,
        }
    )
    # The first snapshot is loaded before the listener serves (the snapshot context).
    fields.update(
        snapshot.source_binding() if snapshot else {"source_binding": None, "workloads": None}
    )
    return fields


async def run_proxy(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    decision_lines: JsonLines | None = None,
    on_listening: Callable[[ProxyApp], None] | None = None,
) -> int:
    """Run the proxy until SIGTERM/SIGINT (or `stop`); return the process exit code.

    `on_listening` is called once the listeners serve (a worker tells its supervisor).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    app = create_app(settings, decision_lines=decision_lines)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for ctx in app.cleanup_ctx:
                await stack.enter_async_context(ctx(app))
            assert app.server is not None and app.listen_address is not None
            freeze_start_up_heap()  # before the first call: no full collection walks it again
            await app.server.start()
            if settings.port_file is not None:
                _write_port_file(settings.port_file, app)
            if on_listening is not None:
                on_listening(app)
            log.info(
                "proxy.listening",
                host=app.listen_address[0],
                port=app.listen_address[1],
                admin_port=app.admin_address[1] if app.admin_address else None,
                transparent_port=app.transparent_address[1] if app.transparent_address else None,
                mode=settings.mode,
                engine=settings.engine,
                event_loop=type(loop).__module__.partition(".")[0],
                intercepts_tls=settings.intercepts_tls,
                inspection=inspect_native.status(),
                **_source_fields(settings, app.decider.snapshot if app.decider else None),
            )
            await stop.wait()
            log.info("proxy.stopping", drain_timeout=settings.drain_timeout)
    except StartupError as exc:
        log.error("proxy.startup_failed", reason=str(exc))
        # One line a person reads, beside the JSON event a log pipeline reads.
        print(f"sharewall proxy: {exc}", file=sys.stderr, flush=True)
        return 2
    # Lines still queued are written by the stdout writer before the process exits (atexit).
    log.info("proxy.stopped")
    return 0
