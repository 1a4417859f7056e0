"""`sharewall registry …`: serve, migrate, tokens, apply."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
from typing import Any

import orjson
import structlog

from registry import db
from registry.errors import ApiError
from registry.models import ROLES
from registry.settings import Settings
from sharewall.logs import configure_logging

DB_ENV = "SHAREWALL_REGISTRY_DB"
TOKEN_ENV = "SHAREWALL_TOKEN"  # noqa: S105 - the name of an environment variable

log = structlog.get_logger("registry.cli")


def _db_default() -> str:
    return os.environ.get(DB_ENV, db.DEFAULT_DB_URL)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) → (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _cli_actor():
    from registry.service import Actor

    with contextlib.suppress(Exception):
        return Actor(name=f"cli:{getpass.getuser()}", role="admin")
    return Actor(name="cli", role="admin")


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class CliError(Exception):
    """A mistake to report as one line on stderr; `code` is the exit status (2: a mistake)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _shown_url(url: str) -> str:
    """A database URL fit for an error line (no password)."""
    with contextlib.suppress(Exception):
        return db.normalise_url(url).render_as_string(hide_password=True)
    return url[:200]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    # asyncpg errors arrive as "<class 'asyncpg.exceptions.X'>: message".
    if line.startswith("<class "):
        line = line.split(": ", 1)[-1]
    return line[:300]


def _database_problem(exc: BaseException) -> str:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return _first_line(str(exc.orig))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _first_line(str(exc)) or type(exc).__name__


def _guard(handler: Any) -> Any:
    """Run a command so that every mistake is one line on stderr, never a traceback.

    Mistakes of the invocation or its environment (a bad or unreachable database, a port in
    use, an unknown revision, a missing file) exit 2; a refusal by the registry exits 1.
    """

    def run(args: argparse.Namespace) -> int:
        from alembic.util import CommandError
        from sqlalchemy.exc import SQLAlchemyError

        where = f"database {_shown_url(args.db)}" if getattr(args, "db", None) else "database"
        try:
            return handler(args)
        except CliError as exc:
            return _fail(str(exc), exc.code)
        except db.DatabaseUrlError as exc:
            return _fail(f"--db: {exc}", 2)
        except CommandError as exc:
            return _fail(f"migrations: {_first_line(str(exc))}", 2)
        except (SQLAlchemyError, OSError) as exc:
            return _fail(f"cannot use the {where}: {_database_problem(exc)}", 2)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # the last resort: still one line, never a traceback
            log.debug("cli.unexpected_error", exc_info=True)
            return _fail(f"unexpected {type(exc).__name__}: {_first_line(str(exc))}", 1)

    run.__name__ = getattr(handler, "__name__", "command")
    return run


# --------------------------------------------------------------------------- serve


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from registry.api.app import create_app
    from registry.api.server import RegistryRunner

    await db.run_migrations(settings.db_url)
    runner = RegistryRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    host, port = runner.addresses[0][:2]
    log.info("registry.listening", host=host, port=port, url=f"http://{host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("registry.stopping")
        await runner.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    db.normalise_url(args.db)  # a bad --db is a one-line mistake before anything starts
    configure_logging(args.log_level)
    host, port = args.listen
    settings = Settings(db_url=args.db, host=host, port=port, retention_days=args.retention_days)
    asyncio.run(_serve(settings))
    return 0


def _known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(db.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def cmd_migrate(args: argparse.Namespace) -> int:
    db.normalise_url(args.db)
    known = _known_revisions()
    if args.revision not in (*known, "head", "heads"):
        raise CliError(
            f"unknown migration revision {args.revision!r}; known: {', '.join(known)}, head"
        )
    asyncio.run(db.run_migrations(args.db, args.revision))
    print(f"database at revision {args.revision}")
    return 0


# --------------------------------------------------------------------------- tokens


async def _with_session(url: str, work):
    db.normalise_url(url)
    await db.run_migrations(url)
    engine = db.create_engine(url)
    try:
        async with db.create_sessionmaker(engine)() as session, session.begin():
            await db.begin_write(session)
            return await work(session)
    finally:
        await engine.dispose()


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from registry import tokens

    async def work(session):
        return await tokens.create_token(
            session, name=args.name, role=args.role, owner=args.owner, actor=_cli_actor().name
        )

    try:
        token, secret = asyncio.run(_with_session(args.db, work))
    except ApiError as exc:
        return _fail(exc.detail or exc.title, 2)
    print(secret)
    print(
        f"created token {token.id} ({token.name}, {token.role}, owner {token.owner}); "
        "store the secret now: it is not shown again",
        file=sys.stderr,
    )
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from registry import tokens

    async def work(session):
        return [tokens.token_view(t) for t in await tokens.list_tokens(session)]

    for t in asyncio.run(_with_session(args.db, work)):
        state = "revoked" if t["revoked_at"] else "active"
        last = t["last_used_at"].isoformat() if t["last_used_at"] else "never"
        print(f"{t['id']}\t{t['role']}\t{t['name']}\t{t['owner']}\t{state}\tlast used {last}")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from registry import tokens

    async def work(session):
        return await tokens.revoke_token(session, args.token_id, actor=_cli_actor().name)

    try:
        token = asyncio.run(_with_session(args.db, work))
    except ApiError as exc:
        return _fail(exc.detail or exc.title, 2)
    print(f"revoked token {token.id} ({token.name})")
    return 0


# --------------------------------------------------------------------------- apply


async def _apply_via_api(url: str, token: str, doc: dict[str, Any], dry_run: bool) -> dict:
    import aiohttp

    body = orjson.dumps({"recipients": doc["recipients"], "dry_run": dry_run})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(url.rstrip("/") + "/v1/apply", data=body, headers=headers) as resp,
    ):
        payload = await resp.read()
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            answer = {}
        if resp.status >= 400:
            raise ApiError(
                resp.status,
                str(answer.get("type", "http-error")).rsplit("/", 1)[-1],
                str(answer.get("title", resp.reason)),
                answer.get("detail"),
            )
        return answer


async def _apply_via_db(url: str, snapshot, dry_run: bool) -> dict:
    from registry.apply import apply_registry

    async def work(session):
        return await apply_registry(
            session, snapshot, _cli_actor(), dry_run=dry_run, bootstrap=True
        )

    return (await _with_session(url, work)).to_json()


def cmd_apply(args: argparse.Namespace) -> int:
    from registry.apply import render_diff
    from sharewall.registry_file import (
        RegistryFileError,
        dump_registry_document,
        load_registry_file,
    )

    try:
        snapshot = load_registry_file(args.file)
    except RegistryFileError as exc:
        return _fail(_first_line(str(exc)), 2)
    try:
        if args.url:
            token = args.token or os.environ.get(TOKEN_ENV)
            if not token:
                return _fail(f"--url needs --token (or ${TOKEN_ENV})", 2)
            doc = dump_registry_document(snapshot)
            result = asyncio.run(_apply_via_api(args.url, token, doc, args.dry_run))
        else:
            result = asyncio.run(_apply_via_db(args.db, snapshot, args.dry_run))
    except ApiError as exc:  # a refusal (4xx: the file, the token, the role) is a mistake
        code = 2 if exc.status < 500 else 1
        return _fail(f"{exc.status} {exc.title}: {exc.detail or exc.type_slug}", code)
    except OSError as exc:
        if args.url:
            return _fail(f"cannot reach the registry at {args.url}: {_database_problem(exc)}", 2)
        raise
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print("\n".join(render_diff(result)))
    return 0


# --------------------------------------------------------------------------- parser


def add_parser(subparsers: Any) -> None:
    """Register `sharewall registry` and its subcommands."""
    registry = subparsers.add_parser("registry", help="the registry service and its tools")
    sub = registry.add_subparsers(dest="registry_command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--db",
            default=_db_default(),
            help=f"database URL (default ${DB_ENV} or {db.DEFAULT_DB_URL})",
        )
        p.add_argument("--log-level", default="info")
        return p

    serve = with_db(sub.add_parser("serve", help="run migrations, then serve the API"))
    serve.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 8700),
        help="HOST:PORT (port 0: any free port, logged as registry.listening)",
    )
    serve.add_argument("--retention-days", type=int, default=Settings.retention_days)
    serve.set_defaults(handler=_guard(cmd_serve))

    migrate = with_db(sub.add_parser("migrate", help="bring the database schema up to date"))
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(handler=_guard(cmd_migrate))

    tokens = sub.add_parser("tokens", help="API tokens (direct database access)")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = with_db(tsub.add_parser("create", help="create a token; prints its secret once"))
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="the token's name")
    create.add_argument(
        "--owner",
        help="the person holding it (the audit actor; default: --name); four eyes compare "
        "owners, so two tokens of one owner count as one person",
    )
    create.set_defaults(handler=_guard(cmd_tokens_create))
    with_db(tsub.add_parser("list", help="list tokens")).set_defaults(
        handler=_guard(cmd_tokens_list)
    )
    revoke = with_db(tsub.add_parser("revoke", help="revoke a token by id"))
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(handler=_guard(cmd_tokens_revoke))

    apply = with_db(
        sub.add_parser(
            "apply",
            help="make the registry match a YAML registry file",
            description="Print the diff and apply it as one audited transaction "
            "(--dry-run: only print). Setting statuses other than proposed needs the "
            "security or admin role when applied through --url.",
        )
    )
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true")
    apply.add_argument("--url", help="registry URL (apply through the API)")
    apply.add_argument("--token", help=f"bearer token for --url (or ${TOKEN_ENV})")
    apply.add_argument("--json", action="store_true", help="print the diff as JSON")
    apply.set_defaults(handler=_guard(cmd_apply))
