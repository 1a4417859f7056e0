"""`sharewall proxy`: its command-line flags (README.md), turned into `Settings`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.inspection_limits import InspectionLimits
from proxy.settings import Settings, SettingsError, default_spool_dir, parse_hostport
from sharewall.cli import HelpFormatter

if TYPE_CHECKING:
    from proxy.decision_log import JsonLines


class _HelpFormatter(HelpFormatter):
    """Every flag's help ends with its default (when it has one that is not "unset")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `proxy` subcommand."""
    p = subparsers.add_parser(
        "proxy",
        help="run the egress enforcement proxy",
        description="Run the egress proxy: inspect every outbound call and enforce the registry.",
        formatter_class=_HelpFormatter,
    )
    d = Settings.__dataclass_fields__
    limits = InspectionLimits()
    src = p.add_argument_group("registry (one of --registry-file or --registry-url)")
    src.add_argument(
        "--registry-file",
        type=Path,
        metavar="FILE",
        help="YAML registry file, watched and reloaded (no registry service needed)",
    )
    src.add_argument(
        "--registry-url", metavar="URL", help="registry service to follow (snapshot long poll)"
    )
    src.add_argument(
        "--token",
        help="proxy token for --registry-url (default: $SHAREWALL_TOKEN; keep tokens off the "
        "command line)",
    )
    src.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="file holding the proxy token (a mounted Secret), read again when it changes, so "
        "a rotated token is taken without a restart; not with --token (default: "
        "$SHAREWALL_TOKEN_FILE)",
    )
    net = p.add_argument_group("listeners")
    net.add_argument(
        "--listen",
        default="127.0.0.1:15080",
        metavar="HOST:PORT",
        help="where the proxy listens (port 0: any free port)",
    )
    net.add_argument(
        "--admin-listen",
        default="127.0.0.1:15081",
        metavar="HOST:PORT",
        help="HOST:PORT of /healthz, /readyz, /metrics, or 'off'",
    )
    net.add_argument(
        "--port-file", type=Path, metavar="FILE", help="write the bound ports here as JSON"
    )
    net.add_argument(
        "--transparent-listen",
        metavar="HOST:PORT",
        help="accept connections redirected by `sharewall capture-rules` (off by default; "
        "127.0.0.1:15001 with the rules' default port)",
    )
    net.add_argument(
        "--first-bytes-timeout",
        type=float,
        default=d["first_bytes_timeout"].default,
        metavar="SECONDS",
        help="time a captured connection has to send a ClientHello or request head "
        "(else DESTINATION_UNIDENTIFIED)",
    )
    pol = p.add_argument_group("policy")
    pol.add_argument(
        "--mode",
        choices=("enforce", "report"),
        default=d["mode"].default,
        help="report: let policy denials through and log them as would-block",
    )
    pol.add_argument(
        "--engine",
        choices=("embedded", "opa"),
        default=d["engine"].default,
        help="policy engine: embedded (regorus, in process) or an OPA server",
    )
    pol.add_argument("--opa-url", metavar="URL", help="OPA server URL (with --engine opa)")
    pol.add_argument(
        "--engine-timeout",
        type=float,
        default=d["engine_timeout"].default,
        metavar="SECONDS",
        help="time allowed per decision of the opa engine (then 503 engine_timeout); the embedded "
        "engine decides in process, in microseconds, and is not timed",
    )
    pol.add_argument(
        "--default-purpose",
        metavar="P",
        help="purpose of calls without an X-Sharewall-Purpose header (unset: PURPOSE_UNDECLARED)",
    )
    pol.add_argument(
        "--source",
        metavar="W",
        help="source workload (default: $SHAREWALL_SOURCE; not with --client-ca)",
    )
    pol.add_argument(
        "--namespace",
        metavar="NS",
        help="source namespace (default: $POD_NAMESPACE; not with --client-ca)",
    )
    gw = p.add_argument_group("egress gateway (source from client certificates)")
    gw.add_argument(
        "--client-ca",
        type=Path,
        metavar="FILE",
        help="listener speaks TLS and requires client certificates signed by this CA (PEM); "
        "each call's source is its client's SPIFFE ID or CN",
    )
    gw.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="the listener's TLS certificate chain (PEM)"
    )
    gw.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the listener's TLS private key (PEM)"
    )
    tls = p.add_argument_group("tls")
    tls.add_argument(
        "--ca-cert",
        type=Path,
        metavar="FILE",
        help="interception CA certificate (see `sharewall ca create`); with --ca-key",
    )
    tls.add_argument("--ca-key", type=Path, metavar="FILE", help="interception CA private key")
    tls.add_argument(
        "--upstream-ca",
        type=Path,
        metavar="FILE",
        help="CA bundle trusted for upstream TLS (unset: the system's)",
    )
    tls.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:PORT:ADDR",
        help="pin a name to an address, repeatable (passes the private-address check)",
    )
    lim = p.add_argument_group("limits")
    lim.add_argument(
        "--max-header-bytes",
        type=int,
        default=d["max_header_bytes"].default,
        metavar="BYTES",
        help="largest request head (else 431)",
    )
    lim.add_argument(
        "--max-body-bytes",
        type=int,
        default=limits.max_body_bytes,
        metavar="BYTES",
        help="body bytes read and inspected; a bigger body is INSPECTION_INCOMPLETE",
    )
    lim.add_argument(
        "--max-decompressed-bytes",
        type=int,
        default=limits.max_decompressed_bytes,
        metavar="BYTES",
        help="bytes a compressed or encoded body may inflate to (else INSPECTION_INCOMPLETE)",
    )
    lim.add_argument(
        "--max-depth",
        type=int,
        default=limits.max_depth,
        metavar="N",
        help="nesting inspected in JSON/XML and nested encodings (else INSPECTION_INCOMPLETE)",
    )
    lim.add_argument(
        "--max-fields",
        type=int,
        default=limits.max_fields,
        metavar="N",
        help="fields inspected in one call (else INSPECTION_INCOMPLETE)",
    )
    lim.add_argument(
        "--inspect-timeout",
        type=float,
        default=limits.max_seconds,
        metavar="SECONDS",
        help="time one call's inspection may take (else INSPECTION_INCOMPLETE)",
    )
    lim.add_argument(
        "--max-tunnels",
        type=int,
        default=d["max_tunnels"].default,
        metavar="N",
        help="spliced CONNECT tunnels open at once (then 503)",
    )
    lim.add_argument(
        "--max-connections",
        type=int,
        default=d["max_connections"].default,
        metavar="N",
        help="client connections open at once (then 503)",
    )
    lim.add_argument(
        "--idle-timeout",
        type=float,
        default=d["idle_timeout"].default,
        metavar="SECONDS",
        help="keep-alive between requests, and idle spliced tunnels",
    )
    lim.add_argument(
        "--header-timeout",
        type=float,
        default=d["header_timeout"].default,
        metavar="SECONDS",
        help="time for a request head to arrive (slowloris)",
    )
    lim.add_argument(
        "--body-timeout",
        type=float,
        default=d["body_timeout"].default,
        metavar="SECONDS",
        help="time to receive the inspected part of a request body (else 408)",
    )
    lim.add_argument(
        "--connect-timeout",
        type=float,
        default=d["upstream_connect_timeout"].default,
        metavar="SECONDS",
        help="time to connect upstream (else 502)",
    )
    lim.add_argument(
        "--upstream-timeout",
        type=float,
        default=d["upstream_timeout"].default,
        metavar="SECONDS",
        help="time until the upstream's response head (else 504)",
    )
    lim.add_argument(
        "--dns-ttl",
        type=float,
        default=d["dns_ttl"].default,
        metavar="SECONDS",
        help="how long a checked DNS answer is reused (0: resolve every call)",
    )
    lim.add_argument(
        "--drain-timeout",
        type=float,
        default=d["drain_timeout"].default,
        metavar="SECONDS",
        help="on SIGTERM, time given to calls in flight",
    )
    lim.add_argument(
        "--log-buffer",
        type=int,
        default=d["log_buffer_bytes"].default,
        metavar="BYTES",
        help="log lines kept while stdout's reader stalls; past it new calls are refused 503",
    )
    lim.add_argument(
        "--reload-interval",
        type=float,
        default=d["reload_interval"].default,
        metavar="SECONDS",
        help="how often --registry-file is checked for changes (a change is loaded once it "
        "has stayed for one interval)",
    )
    run_group = p.add_argument_group("process")
    run_group.add_argument(
        "--spool-dir",
        type=Path,
        metavar="DIR",
        help="blocked decisions and the snapshot cache, one proxy per directory "
        "(default: $SHAREWALL_SPOOL_DIR, else var/spool)",
    )
    run_group.add_argument(
        "--log-level",
        default=d["log_level"].default,
        type=str.lower,
        choices=("debug", "info", "warning", "error", "critical"),
        help="least severe log events written",
    )
    run_group.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        help="event loop; auto: uvloop when installed (default: $SHAREWALL_LOOP, else auto)",
    )
    run_group.add_argument(
        "--workers",
        type=workers_count,
        default=1,
        metavar="N|auto",
        help="processes serving the same port(s) (SO_REUSEPORT), each with its own spool "
        "directory (DIR/worker-K; worker 0 keeps DIR) and ledger, restarted when one dies; "
        "the admin port sums their metrics and is ready when all are; auto: one per CPU this "
        "process may use (affinity, cgroup quota) (default: 1, a single process)",
    )
    p.set_defaults(handler=run)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build `Settings` from parsed flags; raise `SettingsError` for unusable values."""
    admin = None if args.admin_listen == "off" else parse_hostport(args.admin_listen, what="admin")
    for flag, value in (
        ("--max-body-bytes", args.max_body_bytes),
        ("--max-decompressed-bytes", args.max_decompressed_bytes),
        ("--max-depth", args.max_depth),
        ("--max-fields", args.max_fields),
        ("--inspect-timeout", args.inspect_timeout),
    ):
        if value <= 0:
            raise SettingsError(f"{flag} must be more than 0")
    limits = replace(
        InspectionLimits(),
        max_body_bytes=args.max_body_bytes,
        max_decompressed_bytes=args.max_decompressed_bytes,
        max_depth=args.max_depth,
        max_fields=args.max_fields,
        max_seconds=args.inspect_timeout,
    )
    token_file = args.token_file or os.environ.get("SHAREWALL_TOKEN_FILE") or None
    settings = Settings(
        registry_file=args.registry_file,
        registry_url=args.registry_url,
        token=args.token or os.environ.get("SHAREWALL_TOKEN") or None,
        token_file=Path(token_file) if token_file is not None else None,
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
        log_buffer_bytes=args.log_buffer,
        loop=args.loop or os.environ.get("SHAREWALL_LOOP") or "auto",
    )
    if settings.token_file is not None:
        # Read once here, so an unusable file stops the start (exit 2) before any worker runs;
        # the proxy reads it again itself (`RegistryToken`).
        from proxy.registry_token import TokenFileError, read_token_file

        try:
            read_token_file(settings.token_file)
        except TokenFileError as exc:
            raise SettingsError(str(exc)) from None
    return settings


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
    # Every line through one writer thread: a stalled stdout reader never blocks the loop.
    configure_logging(settings.log_level, writer_thread=settings.log_buffer_bytes)
    if args.workers > 1:
        # The supervisor loads neither the proxy nor its event loop: each worker does.
        from proxy.supervisor import run_supervisor

        return run_supervisor(settings, args.workers)
    try:
        loop_factory = event_loop_factory(settings.loop)
    except SettingsError as exc:
        print(f"sharewall proxy: {exc}", file=sys.stderr)
        return 2
    from proxy.app import run_proxy

    lines = decision_lines_for(settings)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_proxy(settings, decision_lines=lines))


def decision_lines_for(settings: Settings) -> JsonLines | None:
    """Where decision lines go: written directly to stdout's `LineWriter`, or None for structlog.

    Directly when the logs are JSON lines at info (the pod's configuration) through the writer
    `configure_logging(writer_thread=True)` made; a terminal or a quieter level keeps
    structlog's rendering.
    """
    from proxy.decision_log import JsonLines
    from sharewall.logs import stdout_lines

    writer = stdout_lines()
    direct = (
        writer is not None
        and not sys.stdout.isatty()
        and logging.getLevelNamesMapping()[settings.log_level.upper()] <= logging.INFO
    )
    return JsonLines(writer) if direct and writer is not None else None


def workers_count(text: str) -> int:
    """`--workers`: a number of processes, or `auto` (`usable_cpus()`)."""
    if text == "auto":
        return usable_cpus()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'auto'") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError("must be between 1 and 256")
    return count


def usable_cpus() -> int:
    """The CPUs this process may run on, bounded by its cgroup's CPU quota (a pod's CPU limit).

    A container limited to 2 CPUs on a 64-core node sees 64 in its affinity mask: the quota
    (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`) is what it may really use, rounded up.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    for quota_file, period_file in (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ):
        try:
            words = Path(quota_file).read_text().split()
            if period_file is not None:
                words.append(Path(period_file).read_text().strip())
            quota, period = int(words[0]), int(words[1])
        except (OSError, ValueError, IndexError):
            continue  # no such cgroup file, or "max" (no limit)
        if quota > 0 and period > 0:
            count = min(count, max(1, -(-quota // period)))
        break
    return count


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
