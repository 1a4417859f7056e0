"""The `sharewall` root command: it registers the proxy, check, ca, registry and injector subcommands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

# Subcommand name -> the module whose `add_parser` registers it, in `--help` order. Only the
# module of the command being run is imported, so `sharewall proxy` never loads the registry
# service's database stack (SQLAlchemy, sqlmodel, Alembic) nor the injector.
COMMANDS: dict[str, str] = {
    "check": "proxy.check_cli",
    "proxy": "proxy.proxy_cli",
    "capture-rules": "proxy.capture_cli",
    "ca": "proxy.ca_cli",
    "registry": "registry.cli",
    "inject": "injector.cli",
    "injector": "injector.cli",
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, its width found as `shutil.get_terminal_size` finds it.

    argparse imports shutil for the width in every formatter it builds, which `add_argument`
    and `add_subparsers` do while the parser is built; shutil loads bz2 and lzma: 0.35 MB of
    every sidecar, for a help text it never prints."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2  # argparse's own margin
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """$COLUMNS, else the terminal's width, else 80 (`shutil.get_terminal_size`'s order)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported as one line (exit 2) like every other mistake."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named by argv (its first word, the root command taking no options)."""
    if argv and argv[0] in COMMANDS:
        return argv[0]
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The root parser: with `command`, only that subcommand's module; else every subcommand."""
    parser = _Parser(prog="sharewall", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [COMMANDS[command]] if command else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).add_parser(sub)
    return parser


def keep_unused_modules_out() -> None:
    """Keep greenlet and typing_extensions out of a proxy process (call first, before
    structlog and msgspec are imported). Not for processes that run the registry.

    structlog imports greenlet whenever it is installed (its deprecated `threadlocal` module
    picks greenlet-local storage), and the image has it for the registry's SQLAlchemy asyncio.
    The proxy runs no greenlets and keeps its log context in contextvars: 1.2 MB of a
    sidecar's RSS for nothing; `import greenlet` fails here.

    msgspec takes typing_extensions when it is installed (the registry's libraries bring it)
    for its `get_type_hints` and `Required`, and Python 3.11's `typing` otherwise, which the
    proxy's schema (no TypedDict, no typing_extensions type) reads the same: ~0.35 MB. It is
    kept out only while msgspec is imported, since aiohttp (`--engine opa`) needs it later.
    """
    sys.modules.setdefault("greenlet", None)  # type: ignore[arg-type] # None: import fails
    if "typing_extensions" in sys.modules or "msgspec" in sys.modules:
        return  # too late to make a difference
    sys.modules["typing_extensions"] = None  # type: ignore[assignment] # None: import fails
    try:
        import msgspec  # noqa: F401
    finally:
        del sys.modules["typing_extensions"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sharewall` console script; returns the process exit code."""
    if argv is None:
        argv = sys.argv[1:]
    command = _command_of(argv)
    if command == "proxy":
        keep_unused_modules_out()
    parser = build_parser(command)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
