"""The `sharewall` root command: it registers the proxy, check, ca, registry and injector subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported as one line (exit 2) like every other mistake."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sharewall", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # Each subcommand module registers itself; imports stay lazy so `check` starts fast.
    from proxy import check_cli

    check_cli.add_parser(sub)
    try:
        from proxy import proxy_cli
    except ImportError:  # pragma: no cover - before the proxy lands
        proxy_cli = None
    if proxy_cli is not None:
        proxy_cli.add_parser(sub)
    from proxy import ca_cli, capture_cli

    capture_cli.add_parser(sub)
    ca_cli.add_parser(sub)
    try:
        from registry import cli as registry_cli
    except ImportError:  # pragma: no cover - before the registry service lands
        registry_cli = None
    if registry_cli is not None:
        registry_cli.add_parser(sub)
    from injector import cli as injector_cli

    injector_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sharewall` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
