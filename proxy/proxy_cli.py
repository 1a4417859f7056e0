"""`sharewall proxy`: the command-line flags of DESIGN.md, turned into `Settings`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from proxy.inspect.model import InspectionLimits
from proxy.settings import Settings, SettingsError, default_spool_dir, parse_hostport


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `proxy` subcommand."""
    p = subparsers.add_parser(
        "proxy",
        help="run the egress enforcement proxy",
        description="Run the egress proxy: inspect every outbound call and enforce the registry.",
    )
    src = p.add_argument_group("registry")
    src.add_argument("--registry-file", type=Path, help="YAML registry file (watched, reloaded)")
    src.add_argument("--registry-url", help="registry service URL (snapshot follower)")
    src.add_argument("--token", default=os.environ.get("SHAREWALL_TOKEN"), help="proxy token")
    net = p.add_argument_group("listeners")
    net.add_argument("--listen", default="127.0.0.1:15080", help="HOST:PORT (port 0: ephemeral)")
    net.add_argument("--admin-listen", default="127.0.0.1:15081", help="HOST:PORT or 'off'")
    net.add_argument("--port-file", type=Path, help="write the bound ports here as JSON")
    net.add_argument(
        "--transparent-listen",
        metavar="HOST:PORT",
        help="accept connections redirected by `sharewall capture-rules` (off by default; "
        "127.0.0.1:15001 with the rules' default port)",
    )
    net.add_argument(
        "--first-bytes-timeout",
        type=float,
        default=Settings.__dataclass_fields__["first_bytes_timeout"].default,
        help="seconds a captured connection has to send a ClientHello or request head "
        "(else DESTINATION_UNIDENTIFIED)",
    )
    pol = p.add_argument_group("policy")
    pol.add_argument("--mode", choices=("enforce", "report"), default="enforce")
    pol.add_argument("--engine", choices=("embedded", "opa"), default="embedded")
    pol.add_argument("--opa-url", help="OPA server URL (with --engine opa)")
    pol.add_argument("--engine-timeout", type=float, default=0.5, help="seconds per decision")
    pol.add_argument("--default-purpose", help="purpose when X-Sharewall-Purpose is absent")
    pol.add_argument(
        "--source",
        help="source workload name (default $SHAREWALL_SOURCE; not with --client-ca)",
    )
    pol.add_argument(
        "--namespace",
        help="source namespace (default $POD_NAMESPACE; not with --client-ca)",
    )
    gw = p.add_argument_group("egress gateway (source from client certificates)")
    gw.add_argument(
        "--client-ca",
        type=Path,
        help="listener speaks TLS and requires client certificates signed by this CA (PEM); "
        "each call's source is its client's SPIFFE ID or CN",
    )
    gw.add_argument("--tls-cert", type=Path, help="the listener's TLS certificate chain (PEM)")
    gw.add_argument("--tls-key", type=Path, help="the listener's TLS private key (PEM)")
    tls = p.add_argument_group("tls")
    tls.add_argument("--ca-cert", type=Path, help="CA certificate for TLS interception")
    tls.add_argument("--ca-key", type=Path, help="CA private key for TLS interception")
    tls.add_argument("--upstream-ca", type=Path, help="CA bundle trusted for upstream TLS")
    tls.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:PORT:ADDR",
        help="pin a name to an address (passes the private-address check)",
    )
    lim = p.add_argument_group("limits")
    d = Settings.__dataclass_fields__
    lim.add_argument("--max-header-bytes", type=int, default=d["max_header_bytes"].default)
    lim.add_argument("--max-body-bytes", type=int, default=InspectionLimits().max_body_bytes)
    lim.add_argument("--max-tunnels", type=int, default=d["max_tunnels"].default)
    lim.add_argument("--max-connections", type=int, default=d["max_connections"].default)
    lim.add_argument("--idle-timeout", type=float, default=d["idle_timeout"].default)
    lim.add_argument("--header-timeout", type=float, default=d["header_timeout"].default)
    lim.add_argument(
        "--body-timeout",
        type=float,
        default=d["body_timeout"].default,
        help="seconds to receive the inspected part of a request body (else 408)",
    )
    lim.add_argument("--connect-timeout", type=float, default=d["upstream_connect_timeout"].default)
    lim.add_argument(
        "--upstream-timeout",
        type=float,
        default=d["upstream_timeout"].default,
        help="seconds until the upstream's response head (else 504)",
    )
    lim.add_argument(
        "--dns-ttl",
        type=float,
        default=d["dns_ttl"].default,
        help="seconds a checked DNS answer is reused (0: resolve every call)",
    )
    lim.add_argument("--drain-timeout", type=float, default=d["drain_timeout"].default)
    lim.add_argument("--reload-interval", type=float, default=d["reload_interval"].default)
    p.add_argument("--spool-dir", type=Path, default=None, help="default $SHAREWALL_SPOOL_DIR")
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default=os.environ.get("SHAREWALL_LOOP") or d["loop"].default,
        help="event loop (auto: uvloop when installed; default $SHAREWALL_LOOP)",
    )
    p.set_defaults(handler=run)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build `Settings` from parsed flags; raise `SettingsError` for unusable values."""
    admin = None if args.admin_listen == "off" else parse_hostport(args.admin_listen, what="admin")
    limits = replace(InspectionLimits(), max_body_bytes=args.max_body_bytes)
    return Settings(
        registry_file=args.registry_file,
        registry_url=args.registry_url,
        token=args.token,
        listen=parse_hostport(args.listen, what="listen"),
        admin_listen=admin,
        port_file=args.port_file,
        transparent_listen=(
            parse_hostport(args.transparent_listen, what="transparent-listen")
            if args.transparent_listen
            else None
        ),
        first_bytes_timeout=args.first_bytes_timeout,
        mode=args.mode,
        engine=args.engine,
        opa_url=args.opa_url,
        engine_timeout=args.engine_timeout,
        default_purpose=args.default_purpose,
        ca_cert=args.ca_cert,
        ca_key=args.ca_key,
        upstream_ca=args.upstream_ca,
        resolve_pins=tuple(args.resolve),
        **_source_settings(args),
        client_ca=args.client_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_header_bytes=args.max_header_bytes,
        limits=limits,
        max_tunnels=args.max_tunnels,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        upstream_connect_timeout=args.connect_timeout,
        dns_ttl=args.dns_ttl,
        upstream_timeout=args.upstream_timeout,
        drain_timeout=args.drain_timeout,
        spool_dir=args.spool_dir or default_spool_dir(),
        reload_interval=args.reload_interval,
        log_level=args.log_level,
        loop=args.loop,
    )


def _source_settings(args: argparse.Namespace) -> dict[str, str | None]:
    """The sidecar's own source: the flags, else the pod's environment (downward API).

    A gateway (`--client-ca`) takes each client's source from its certificate, so the
    environment's defaults are not used there (explicit flags are refused by `Settings`).
    """
    if args.client_ca is not None:
        return {"source_workload": args.source, "source_namespace": args.namespace}
    return {
        "source_workload": args.source or os.environ.get("SHAREWALL_SOURCE") or None,
        "source_namespace": args.namespace or os.environ.get("POD_NAMESPACE") or None,
    }


def run(args: argparse.Namespace) -> int:
    """Handler of `sharewall proxy`: configure logging, run until SIGTERM; the exit code."""
    from sharewall.logs import configure_logging

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"sharewall proxy: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from proxy.app import run_proxy
    from proxy.decision_log import JsonLines

    # The decision line is written directly when the logs are JSON lines at info (the
    # pod's configuration); a terminal or a quieter level keeps structlog's rendering.
    direct = not sys.stdout.isatty() and (
        logging.getLevelNamesMapping()[settings.log_level.upper()] <= logging.INFO
    )
    lines = JsonLines(sys.stdout.buffer) if direct else None
    try:
        loop_factory = event_loop_factory(settings.loop)
    except SettingsError as exc:
        print(f"sharewall proxy: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_proxy(settings, decision_lines=lines))


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `--loop` (None: asyncio's default loop).

    uvloop (libuv, with its own transports and TLS) costs less CPU per proxied call than the
    pure-Python selector loop and `sslproto`; `auto` uses it when it is importable (it is a
    dependency except on Windows) and falls back to asyncio's loop otherwise.
    """
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise SettingsError("--loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop
