"""`sharewall inject` and `sharewall injector serve`: the command-line side of the injector.

Only argparse is imported here; the handlers import the injector when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any


def _fail(message: str) -> int:
    print(f"sharewall: {message}", file=sys.stderr)
    return 2


def _name_key(text: str, default_key: str) -> dict[str, str]:
    name, _, key = text.partition(":")
    return {"name": name, "key": key or default_key}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="injector settings (YAML, as the chart renders)")
    s = p.add_argument_group("settings (override --config)")
    s.add_argument("--image", help="sharewall image (default sharewall/sharewall:<version>)")
    s.add_argument("--registry-url", help="registry Service URL the proxy follows")
    s.add_argument("--token-secret", metavar="NAME[:KEY]", help="Secret with the proxy token")
    s.add_argument(
        "--registry-file-configmap",
        metavar="NAME",
        help="ConfigMap with registry.yaml: the proxy runs on the file, no registry service",
    )
    s.add_argument("--capture", choices=("proxy-env", "transparent"))
    s.add_argument(
        "--classic",
        action="store_true",
        help="a plain extra container instead of a native sidecar (Kubernetes < 1.29)",
    )
    s.add_argument("--mode", choices=("enforce", "report"))
    s.add_argument("--default-purpose", metavar="P")
    s.add_argument("--exclude-cidr", action="append", default=[], metavar="CIDR")
    s.add_argument("--exclude-port", action="append", default=[], type=int, metavar="PORT")
    s.add_argument(
        "--ipv6",
        action="store_true",
        help="transparent capture of IPv6 too (dual-stack pods): ip6tables rules, proxy on [::]",
    )
    s.add_argument("--ca-secret", metavar="NAME", help="TLS Secret of the interception CA")
    s.add_argument(
        "--trust-bundle",
        metavar="CONFIGMAP[:KEY]",
        help="ConfigMap with the app's full trust bundle (system roots + the CA)",
    )


def _config(args: argparse.Namespace):
    from injector.config import load_config

    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    simple = {
        "image": args.image,
        "capture": args.capture,
        "mode": args.mode,
        "defaultPurpose": args.default_purpose,
    }
    overrides.update({k: v for k, v in simple.items() if v is not None})
    if args.classic:
        overrides["native"] = False
    registry: dict[str, Any] = {}
    if args.registry_url:
        registry["url"] = args.registry_url
    if args.token_secret:
        registry["tokenSecret"] = _name_key(args.token_secret, "proxy")
    if args.registry_file_configmap:
        registry["fileConfigMap"] = args.registry_file_configmap
    if registry:
        overrides["registry"] = registry
    transparent: dict[str, Any] = {}
    if args.exclude_cidr:
        transparent["excludeCIDRs"] = args.exclude_cidr
    if args.exclude_port:
        transparent["excludePorts"] = args.exclude_port
    if args.ipv6:
        transparent["ipv6"] = True
    if transparent:
        overrides["transparent"] = transparent
    tls: dict[str, Any] = {}
    if args.ca_secret:
        tls["caSecret"] = args.ca_secret
    if args.trust_bundle:
        bundle = _name_key(args.trust_bundle, "ca-bundle.crt")
        tls["appTrustBundle"] = {"configMap": bundle["name"], "key": bundle["key"]}
    if tls:
        overrides["tls"] = tls
    return config.with_overrides(overrides) if overrides else config


def cmd_inject(args: argparse.Namespace) -> int:
    from injector.config import InjectionError
    from injector.manifests import inject_text

    try:
        config = _config(args)
        if args.filename == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.filename).read_text(encoding="utf-8")
        output, report = inject_text(text, config)
    except InjectionError as exc:
        return _fail(str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{args.filename}: {exc}")
    if args.output:
        args.output.write_text(output, encoding="utf-8")
    else:
        sys.stdout.write(output)
    for warning in report.warnings:
        print(f"sharewall inject: warning: {warning}", file=sys.stderr)
    counts = sorted(report.counts.items())
    summary = ", ".join(f"{n} {status}" for status, n in counts) or "no objects"
    print(f"sharewall inject: {summary}", file=sys.stderr)
    return 0


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


async def _serve(args: argparse.Namespace, config) -> None:
    import structlog
    from aiohttp import web

    from injector.tls import ReloadingContext
    from injector.webhook import create_app

    log = structlog.get_logger("sharewall.injector")
    tls = ReloadingContext(args.tls_cert, args.tls_key)
    runner = web.AppRunner(create_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    host, port = args.listen
    site = web.TCPSite(runner, host, port, ssl_context=tls.context, backlog=512)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    if args.port_file:
        args.port_file.write_text(json.dumps({"listen": bound_port}))
    log.info("injector.listening", host=bound_host, port=bound_port, capture=config.capture)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reload_task = asyncio.create_task(tls.watch(interval=args.cert_reload_interval))
    try:
        await stop.wait()
    finally:
        log.info("injector.stopping")
        reload_task.cancel()
        await runner.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    from injector.config import InjectionError
    from injector.tls import TlsError
    from sharewall.logs import configure_logging

    configure_logging(args.log_level)
    try:
        config = _config(args)
        asyncio.run(_serve(args, config))
    except (InjectionError, TlsError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror or exc}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `inject` and `injector serve`."""
    p = subparsers.add_parser(
        "inject",
        help="add the sidecar to Kubernetes manifests (like istioctl kube-inject)",
        description=(
            "Print the manifests of FILE with the sharewall sidecar added to every Pod, "
            "Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob; other kinds pass "
            "through unchanged, injected and opted-out pods are left as they are."
        ),
    )
    p.add_argument("-f", "--filename", required=True, metavar="FILE|-", help="YAML, - for stdin")
    p.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    _add_config_flags(p)
    p.set_defaults(handler=cmd_inject)

    injector = subparsers.add_parser("injector", help="the sidecar injection admission webhook")
    sub = injector.add_subparsers(dest="injector_command", required=True)
    s = sub.add_parser(
        "serve",
        help="serve the mutating admission webhook (POST /mutate, GET /healthz) over TLS",
        description="Serve the AdmissionReview v1 webhook that injects the sidecar into pods.",
    )
    s.add_argument("--tls-cert", type=Path, required=True, help="serving certificate (PEM)")
    s.add_argument("--tls-key", type=Path, required=True, help="its private key (PEM)")
    s.add_argument("--listen", type=_parse_listen, default="127.0.0.1:9443", help="HOST:PORT")
    s.add_argument("--port-file", type=Path, help="write the bound port here as JSON")
    s.add_argument(
        "--cert-reload-interval",
        type=float,
        default=30.0,
        help="seconds between checks of the certificate files (rotated by cert-manager)",
    )
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    _add_config_flags(s)
    s.set_defaults(handler=cmd_serve)
