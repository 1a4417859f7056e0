"""`sharewall ca create`: the interception CA a proxy mints its leaf certificates from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CERT_FILE = "ca.pem"
KEY_FILE = "ca.key"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `ca` subcommand (`ca create`)."""
    ca = subparsers.add_parser(
        "ca",
        help="make the interception CA of the proxy",
        description="Interception CA for `sharewall proxy --ca-cert/--ca-key`.",
    )
    sub = ca.add_subparsers(dest="ca_command", required=True)
    create = sub.add_parser(
        "create",
        help="write a new CA key and certificate",
        description=(
            f"Write {KEY_FILE} (EC P-256, mode 0600) and {CERT_FILE} (self-signed, CA:TRUE with "
            "path length 0, key usage keyCertSign and cRLSign) into --out. Apps trust "
            f"{CERT_FILE}; the proxy gets both files."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    create.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory to write into"
    )
    create.add_argument(
        "--name", default="sharewall interception CA", help="the certificate's common name"
    )
    create.add_argument(
        "--days", type=int, default=365, help="validity in days (rotate before it ends)"
    )
    create.add_argument(
        "--force", action="store_true", help="replace an existing key and certificate"
    )
    create.set_defaults(handler=run_create)
    return ca


def run_create(args: argparse.Namespace) -> int:
    """Handler of `sharewall ca create`; one line on stderr and exit 2 on any mistake."""
    from proxy.certs import generate_ca

    out: Path = args.out
    cert, key = out / CERT_FILE, out / KEY_FILE
    if not 1 <= args.days <= 3650:
        return _fail("--days must be from 1 to 3650")
    existing = [p for p in (cert, key) if p.exists()]
    if existing and not args.force:
        return _fail(f"{existing[0]} already exists (use --force to replace it)")
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        generate_ca(cert, key, args.name, valid_days=args.days)
    except OSError as exc:
        return _fail(f"cannot write into {out}: {exc.strerror or exc}")
    print(f"--ca-cert {cert} --ca-key {key}")
    return 0


def _fail(message: str) -> int:
    print(f"sharewall ca create: {message}", file=sys.stderr)
    return 2
