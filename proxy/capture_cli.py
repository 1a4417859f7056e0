"""`sharewall capture-rules`: print (or apply) the iptables rules of transparent capture."""

from __future__ import annotations

import argparse
import ipaddress
import sys

import orjson

from proxy.capture_rules import BACKENDS, CaptureConfig, CaptureError, apply, render_all


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `capture-rules` subcommand."""
    p = subparsers.add_parser(
        "capture-rules",
        help="print or apply the iptables rules of transparent capture",
        description=(
            "Redirect every outbound TCP connection of every UID but the proxy's to the proxy's "
            "transparent port (loopback, excluded CIDRs and ports aside), and drop other "
            "outbound UDP than DNS. Prints iptables-restore input; --apply loads it."
        ),
    )
    p.add_argument("--proxy-uid", type=int, default=1337, help="UID the proxy runs as (exempt)")
    p.add_argument("--port", type=int, default=15001, help="the proxy's --transparent-listen port")
    p.add_argument(
        "--exclude-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="destination range left alone (cluster service and pod CIDRs); repeatable",
    )
    p.add_argument(
        "--exclude-port",
        action="append",
        default=[],
        metavar="PORT",
        help="destination TCP port left alone; repeatable",
    )
    p.add_argument("--ipv6", action="store_true", help="also write the ip6tables rules")
    p.add_argument(
        "--keep-udp", action="store_true", help="leave outbound UDP alone (default: DNS only)"
    )
    p.add_argument("--apply", action="store_true", help="load the rules (needs NET_ADMIN)")
    p.add_argument(
        "--iptables-backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="iptables back-end to load the rules with (default: the one already holding rules "
        "in this namespace, else nft)",
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of `sharewall capture-rules`."""
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"sharewall capture-rules: {exc}", file=sys.stderr)
        return 2
    backend = None if args.iptables_backend == "auto" else args.iptables_backend
    if not args.apply:
        sys.stdout.write(render_all(config, backend or ""))
        return 0
    try:
        backend, elapsed_ms = apply(config, backend)
    except CaptureError as exc:
        print(f"sharewall capture-rules: {exc}", file=sys.stderr)
        return 1
    line = {
        "event": "capture.applied",
        "families": [f"ipv{f}" for f in config.families],
        "backend": backend or "default",
        "port": config.port,
        "proxy_uid": config.proxy_uid,
        "udp": "kept" if config.keep_udp else "dns_only",
        "apply_ms": round(elapsed_ms, 1),
    }
    sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
    return 0


def _config(args: argparse.Namespace) -> CaptureConfig:
    if not 0 <= args.proxy_uid < 2**32:
        raise ValueError(f"--proxy-uid {args.proxy_uid}: not a UID")
    if not 0 < args.port <= 65535:
        raise ValueError(f"--port {args.port}: not a port")
    cidrs = []
    for text in args.exclude_cidr:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"--exclude-cidr {text!r}: not a CIDR") from None
        if network.version == 6 and not args.ipv6:
            raise ValueError(f"--exclude-cidr {text}: an IPv6 range needs --ipv6")
        cidrs.append(network)
    ports = []
    for text in args.exclude_port:
        if not text.isdigit() or not 0 < int(text) <= 65535:
            raise ValueError(f"--exclude-port {text!r}: not a port")
        ports.append(int(text))
    return CaptureConfig(
        proxy_uid=args.proxy_uid,
        port=args.port,
        exclude_cidrs=tuple(cidrs),
        exclude_ports=tuple(ports),
        ipv6=args.ipv6,
        keep_udp=args.keep_udp,
    )
