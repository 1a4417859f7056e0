"""`sharewall check`: decide one described HTTP call against a registry file, without a network."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import orjson
import structlog

EXIT_ALLOW = 0
EXIT_USAGE = 2  # also argparse's own exit code for a malformed command line
EXIT_DENY = 3
EXIT_FAULT = 4

_EPILOG = """\
exit status:
  0  the call is allowed
  2  usage or input error (one line on stderr): unreadable or invalid registry file,
     unknown --purpose, bad URL, method or --header, unreadable --data @FILE
  3  the call is denied (the reasons are in the printed decision)
  4  sharewall could not decide (policy engine fault, inspector error): the proxy would
     answer 503
"""


class UsageError(Exception):
    """An input problem reported as one line on stderr with exit status 2."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `check` subcommand on the `sharewall` command line."""
    parser = subparsers.add_parser(
        "check",
        help="decide whether one HTTP call may go to its recipient for a purpose",
        description=(
            "Classify the given call, evaluate it against --registry-file and print the decision "
            "JSON (action, reasons, categories, findings, recipient)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--registry-file", required=True, metavar="FILE", help="YAML registry")
    parser.add_argument("--purpose", required=True, metavar="P", help="declared purpose")
    parser.add_argument("--source", metavar="W", help="source workload (e.g. sms-gateway)")
    parser.add_argument("--namespace", metavar="NS", help="source namespace")
    parser.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="'K: V'",
        help="request header (repeatable)",
    )
    parser.add_argument(
        "--data", "-d", metavar="@FILE|TEXT", help="request body: TEXT, @FILE, or @- for stdin"
    )
    parser.add_argument("--engine", choices=("embedded", "opa"), default="embedded")
    parser.add_argument("--opa-url", metavar="URL", help="OPA server (with --engine opa)")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="policy engine timeout in seconds"
    )
    parser.add_argument("method", metavar="METHOD")
    parser.add_argument("url", metavar="URL")
    parser.set_defaults(handler=run_check)
    return parser


def parse_header(text: str) -> tuple[str, str]:
    """Split a curl-style `'Name: value'` header; the name must be an HTTP token."""
    from proxy.check import is_token

    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not is_token(name):
        raise UsageError(f"invalid --header {text!r}: expected 'Name: value'")
    return name, value.strip()


def read_body(data: str | None) -> bytes:
    """The request body from `--data`: literal text, `@FILE`, or `@-` (standard input)."""
    if data is None:
        return b""
    if not data.startswith("@"):
        return data.encode("utf-8")
    name = data[1:]
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --data file {name!r}: {exc.strerror or exc}") from None


def _quiet_logs() -> None:
    # stdout carries exactly one JSON document; library events go to stderr, warnings and up.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def run_check(args: argparse.Namespace) -> int:
    """Handler of `sharewall check`: print the decision JSON and return the exit status."""
    _quiet_logs()
    try:
        return asyncio.run(_check(args))
    except UsageError as exc:
        print(f"sharewall check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _check(args: argparse.Namespace) -> int:
    # Imported here so that `sharewall --help` does not load regorus and the inspector.
    from proxy.check import CheckInputError, check_call, is_token, parse_target
    from proxy.decide import Decider, backstop_for
    from proxy.engines import create_engine
    from sharewall.recipients import RecipientIndex
    from sharewall.registry_file import RegistryFileError, load_registry_file
    from sharewall.taxonomy import load_taxonomy

    try:
        snapshot = load_registry_file(args.registry_file)
    except RegistryFileError as exc:
        raise UsageError(str(exc)) from None
    taxonomy = load_taxonomy()
    if not taxonomy.is_purpose(args.purpose):
        # A typo is the caller's mistake, not a decision: the proxy would deny it
        # PURPOSE_UNKNOWN, but `check` is asked about a purpose someone means to declare.
        known = ", ".join(sorted(taxonomy.purposes))
        raise UsageError(f"unknown --purpose {args.purpose!r}; known purposes: {known}")
    try:
        parse_target(args.url)  # fail fast, before an engine is started
    except CheckInputError as exc:
        raise UsageError(str(exc)) from None
    if not is_token(args.method.strip()):
        raise UsageError(f"invalid HTTP method {args.method!r}")
    headers = [parse_header(h) for h in args.header]
    body = read_body(args.data)
    if args.engine == "opa" and not args.opa_url:
        raise UsageError("--engine opa needs --opa-url")

    engine = create_engine(args.engine, opa_url=args.opa_url, timeout=args.timeout)
    try:
        decider = Decider(engine, timeout=backstop_for(args.timeout))
        # A snapshot the engine refused leaves the decider without one: decide() then answers
        # a fault decision (exit 4), as the proxy would answer 503.
        await decider.set_snapshot(snapshot)
        try:
            decision = await check_call(
                decider,
                RecipientIndex(snapshot),
                method=args.method,
                url=args.url,
                headers=headers,
                body=body,
                purpose=args.purpose,
                source_workload=args.source,
                source_namespace=args.namespace,
            )
        except CheckInputError as exc:
            raise UsageError(str(exc)) from None
    finally:
        await engine.close()

    if not snapshot.is_source_bound and (args.source or args.namespace):
        print(
            f"sharewall check: note: source binding is off ({args.registry_file} declares no "
            "workloads): the source is recorded, not enforced",
            file=sys.stderr,
        )
    document = decision.as_dict()
    document["source"] = {"workload": args.source, "namespace": args.namespace}
    document.update(snapshot.source_binding())
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    if decision.fault is not None:
        return EXIT_FAULT
    return EXIT_ALLOW if decision.allow else EXIT_DENY
