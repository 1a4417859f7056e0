"""`sharewall registry …`: serve, migrate, tokens, apply."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import socket
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from registry import db
from registry.errors import ApiError
from registry.models import ROLES
from registry.settings import Settings
from registry.tokens import DEFAULT_GRACE_S, MAX_GRACE_S
from sharewall.logs import configure_logging

DB_ENV = "SHAREWALL_REGISTRY_DB"
TOKEN_ENV = "SHAREWALL_TOKEN"  # noqa: S105 - the name of an environment variable
URL_ENV = "SHAREWALL_REGISTRY_URL"
DEFAULT_URL = "http://127.0.0.1:8700"

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
    from registry.audit import Actor

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


def _check_listen(host: str, port: int) -> None:
    """A port in use or an unknown host is a one-line mistake, found before the app starts
    (so no database work is cut short by the failure)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


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
    host, port = args.listen
    _check_listen(host, port)
    configure_logging(args.log_level)
    settings = Settings(
        db_url=args.db,
        host=host,
        port=port,
        retention_days=args.retention_days,
        proxy_id_idle_days=args.proxy_id_idle_days,
    )
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
            session, name=args.name, role=args.role, owner=args.owner, actor=_cli_actor()
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

    now = datetime.now(UTC)
    for t in asyncio.run(_with_session(args.db, work)):
        if t["revoked_at"]:
            state = "revoked"
        elif t["expires_at"] is None:
            state = "active"
        elif t["expires_at"] <= now:
            state = "expired"
        else:
            state = f"expires {t['expires_at']:%Y-%m-%dT%H:%M:%SZ}"
        last = t["last_used_at"].isoformat() if t["last_used_at"] else "never"
        print(f"{t['id']}\t{t['role']}\t{t['name']}\t{t['owner']}\t{state}\tlast used {last}")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from registry import tokens

    async def work(session):
        return await tokens.revoke_token(session, args.token_id, actor=_cli_actor())

    try:
        token = asyncio.run(_with_session(args.db, work))
    except ApiError as exc:
        return _fail(exc.detail or exc.title, 2)
    print(f"revoked token {token.id} ({token.name})")
    return 0


def cmd_tokens_rotate(args: argparse.Namespace) -> int:
    from registry import tokens

    async def work(session):
        return await tokens.rotate_token(
            session, args.token_id, grace_seconds=args.grace, actor=_cli_actor()
        )

    try:
        old, token, secret = asyncio.run(_with_session(args.db, work))
    except ApiError as exc:
        return _fail(exc.detail or exc.title, 2)
    print(secret)
    if old.revoked_at is not None:
        fate = f"{old.id} is revoked"
    else:
        fate = f"{old.id}'s secret works until {old.expires_at:%Y-%m-%dT%H:%M:%SZ}"
    print(
        f"rotated token {old.id} ({old.name}) into token {token.id}, shipping as "
        f"{token.shipper_id}; {fate}; store the secret now: it is not shown again",
        file=sys.stderr,
    )
    return 0


# --------------------------------------------------------------------------- apply


async def _apply_via_api(url: str, token: str, doc: dict[str, Any], dry_run: bool) -> dict:
    import aiohttp

    body = orjson.dumps(
        {"recipients": doc["recipients"], "workloads": doc.get("workloads"), "dry_run": dry_run}
    )
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
    impact = None
    if args.dry_run and result.get("changed"):
        # What the change would do to the calls recorded over the last week, under the diff.
        try:
            impact = _impact(args, dump_registry_document(snapshot), args.days)
        except ApiError as exc:
            return _fail(f"impact: {exc.status} {exc.title}: {exc.detail or exc.type_slug}")
        except OSError as exc:
            return _fail(f"cannot reach the registry: {exc}")
    if args.json:
        out = {**result, "impact": impact} if impact is not None else result
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
    print("\n".join(render_diff(result)))
    if impact is not None:
        from registry.impact import render_impact

        print()
        print("\n".join(render_impact(impact)))
    return 0


# --------------------------------------------------------------------------- impact


def _refused(exc: ApiError) -> int:
    """The registry said no: a refusal (4xx: the input, the token, the role) exits 2."""
    return _fail(
        f"{exc.status} {exc.title}: {exc.detail or exc.type_slug}", 2 if exc.status < 500 else 1
    )


def _token(args: argparse.Namespace) -> str | None:
    return getattr(args, "token", None) or os.environ.get(TOKEN_ENV)


async def _impact_via_db(url: str, document: Any, days: int) -> dict[str, Any]:
    from registry.impact import candidate_snapshot, replay_window
    from registry.snapshot_builder import fetch_snapshot_rows, snapshot_document
    from sharewall.snapshot import Snapshot

    await db.run_migrations(url)
    engine = db.create_engine(url)
    try:
        async with db.create_sessionmaker(engine)() as session:
            live = Snapshot.from_data(snapshot_document(await fetch_snapshot_rows(session)))
        candidate = candidate_snapshot(live, document)
        return (await replay_window(engine, live, candidate, days)).to_json()
    finally:
        await engine.dispose()


def _impact(args: argparse.Namespace, document: Any, days: int) -> dict[str, Any]:
    """The impact of `document` through the API (`--url`) or on the database (`--db`)."""
    if args.url:
        from registry.client import call_api

        token = _token(args)
        if not token:
            raise ApiError(401, "unauthorized", "Unauthorized", f"--url needs ${TOKEN_ENV}")
        return call_api(
            args.url, token, "POST", "/v1/impact", body={"registry": document, "days": days}
        )
    return asyncio.run(_impact_via_db(args.db, document, days))


def cmd_impact(args: argparse.Namespace) -> int:
    from registry.impact import MAX_DAYS, render_impact
    from sharewall.registry_file import (
        RegistryFileError,
        decode_registry_text,
        read_registry_text,
    )

    if not 1 <= args.days <= MAX_DAYS:
        return _fail(f"--days must be 1..{MAX_DAYS}", 2)
    try:
        document = decode_registry_text(read_registry_text(args.file), source=args.file)
        result = _impact(args, document, args.days)
    except RegistryFileError as exc:
        return _fail(str(exc), 2)
    except ApiError as exc:
        return _refused(exc)
    except OSError as exc:
        return _fail(f"cannot reach the registry: {exc}", 2)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print("\n".join(render_impact(result)))
    return 0


# --------------------------------------------------------------------------- flows, triage


def _api(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    from registry.client import call_api

    token = _token(args)
    if not token:
        raise _Usage(f"set ${TOKEN_ENV} to a security or engineer token")
    return call_api(args.url, token, method, path, **kw)


class _Usage(Exception):
    """A command-line mistake: one line on stderr, exit 2."""


_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration(value: str) -> timedelta | None:
    """`90s`, `30m`, `24h`, `7d`, `2w` (or `0`) as a timedelta; None if it is not one."""
    text = value.strip().lower()
    if text == "0":
        return timedelta(0)
    if text[:-1].isdigit() and len(text) <= 12 and text[-1:] in _DURATION_UNITS:
        return timedelta(**{_DURATION_UNITS[text[-1]]: int(text[:-1])})
    return None


def parse_grace(value: str) -> int:
    """`--grace`: a duration (`0`, `90s`, `30m`, `1h`, `7d`) → whole seconds."""
    grace = _duration(value)
    if grace is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration (0, 90s, 30m, 1h, 7d), got {value!r}"
        )
    if grace.total_seconds() > MAX_GRACE_S:
        raise argparse.ArgumentTypeError(f"at most 7d ({MAX_GRACE_S} s), got {value!r}")
    return int(grace.total_seconds())


def parse_since(value: str) -> str:
    """`24h`, `30m`, `7d`, `2w` back from now, or an ISO 8601 time → ISO 8601 (UTC)."""
    back = _duration(value)
    if back is not None:
        return (datetime.now(UTC) - back).isoformat(timespec="seconds")
    try:
        then = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration (30m, 24h, 7d, 2w) or an ISO time, got {value!r}"
        ) from None
    return (then if then.tzinfo else then.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def flow_rows(flows: list[dict[str, Any]]) -> list[str]:
    """The readable table of `registry flows`."""
    header = ("TIME", "DECISION", "MODE", "SOURCE", "RECIPIENT", "PURPOSE", "REASONS", "STATE")
    rows = []
    for f in flows:
        source = f.get("source") or {}
        where = "/".join(x for x in (source.get("namespace"), source.get("workload")) if x)
        mode = "would-block" if f.get("would_block") else ("fault" if f.get("fault") else "block")
        reasons = ",".join(r["code"] for r in f.get("reasons") or []) or (f.get("fault") or "-")
        rows.append(
            (
                f["time"][:19].replace("T", " "),
                f["decision_id"],
                mode,
                where or "-",
                f.get("recipient_id") or f.get("host") or "-",
                f.get("purpose") or "-",
                reasons,
                (f.get("triage") or {}).get("state", "-"),
            )
        )
    return _table(header, rows)


def cmd_flows(args: argparse.Namespace) -> int:
    params = {"since": args.since, "limit": str(min(args.limit, 1000))}
    for name, value in (
        ("recipient_id", args.recipient),
        ("reason", args.reason),
        ("triage_state", args.state),
        ("source", args.source),
        ("category", args.category),
    ):
        if value:
            params[name] = value
    flows: list[dict[str, Any]] = []
    try:
        while len(flows) < args.limit:
            page = _api(args, "GET", "/v1/flows", params=params)
            flows.extend(page["flows"])
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    except _Usage as exc:
        return _fail(str(exc), 2)
    except ApiError as exc:
        return _refused(exc)
    except OSError as exc:
        return _fail(f"cannot reach the registry: {exc}", 2)
    flows = flows[: args.limit]
    if args.json:
        print(orjson.dumps(flows, option=orjson.OPT_INDENT_2).decode())
    elif not flows:
        print("no blocked flows")
    else:
        print("\n".join(flow_rows(flows)))
    return 0


def cmd_triage(args: argparse.Namespace) -> int:
    from registry.models import TRIAGE_STATES

    if args.state not in TRIAGE_STATES:
        return _fail(f"STATE must be one of {', '.join(TRIAGE_STATES)}", 2)
    body: dict[str, Any] = {"state": args.state}
    if args.note:
        body["note"] = args.note
    try:
        path = f"/v1/flows/{args.decision_id}/triage"
        if args.shipped_by is not None:
            path += f"?shipped_by={args.shipped_by}"
        flow = _api(args, "POST", path, body=body)
    except _Usage as exc:
        return _fail(str(exc), 2)
    except ApiError as exc:
        return _refused(exc)
    except OSError as exc:
        return _fail(f"cannot reach the registry: {exc}", 2)
    triage = flow["triage"]
    note = f": {triage['note']}" if triage.get("note") else ""
    print(f"{flow['decision_id']} {triage['state']} by {triage['by']}{note}")
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
    serve.add_argument(
        "--proxy-id-idle-days",
        type=int,
        default=Settings.proxy_id_idle_days,
        help="release proxy id bindings no shipment used for this many days "
        f"(default {Settings.proxy_id_idle_days}; 0: never)",
    )
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
    rotate = with_db(
        tsub.add_parser(
            "rotate",
            help="replace a token by a new secret of the same name, role and shipping identity "
            "(the old secret works on for --grace)",
        )
    )
    rotate.add_argument("token_id", type=int)
    rotate.add_argument(
        "--grace",
        type=parse_grace,
        default=DEFAULT_GRACE_S,
        help="how long the old secret still authenticates: 0 (revoked at once), 90s, 30m, 1h "
        "(the default), 7d (the most)",
    )
    rotate.set_defaults(handler=_guard(cmd_tokens_rotate))

    apply = with_db(
        sub.add_parser(
            "apply",
            help="make the registry match a YAML registry file",
            description="Print the diff and apply it as one audited transaction "
            "(--dry-run: only print). Applying never approves: added recipients and "
            "workloads are proposals and changes to live ones are pending changes a reviewer "
            "approves in the registry; suspending or revoking a live one through --url needs "
            "the security or admin role. Only the operator's bootstrap (--db) writes a "
            "not-yet-live entry approved when the file says so.",
        )
    )
    apply.add_argument("file", help="the registry file (format: docs/registry-file.md)")
    apply.add_argument("--dry-run", action="store_true", help="print the diff and impact only")
    apply.add_argument("--url", help="registry URL (apply through the API)")
    apply.add_argument("--token", help=f"bearer token for --url (or ${TOKEN_ENV})")
    apply.add_argument("--json", action="store_true", help="print the diff as JSON")
    apply.add_argument(
        "--days", type=int, default=7, help="with --dry-run: days of calls the impact replays"
    )
    apply.set_defaults(handler=_guard(cmd_apply))

    impact = with_db(
        sub.add_parser(
            "impact",
            help="which recorded calls a registry file would block or let through",
            description="Replay the calls recorded over the last --days with the registry "
            "file (a whole registry, one recipient mapping, or {change: {recipients: [...]}}) "
            f"and print the flips. Through --url with ${TOKEN_ENV}, or on --db.",
        )
    )
    impact.add_argument("file")
    impact.add_argument("--days", type=int, default=7)
    impact.add_argument("--url", help="registry URL (through POST /v1/impact)")
    impact.add_argument("--json", action="store_true", help="print the impact as JSON")
    impact.set_defaults(handler=_guard(cmd_impact))

    def with_url(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--url",
            default=os.environ.get(URL_ENV, DEFAULT_URL),
            help=f"registry URL (default ${URL_ENV} or {DEFAULT_URL}); token from ${TOKEN_ENV}",
        )
        return p

    flows = with_url(
        sub.add_parser("flows", help="blocked and would-block calls, newest first, as a table")
    )
    flows.add_argument(
        "--since", type=parse_since, default="24h", help="30m, 24h, 7d, 2w or an ISO time"
    )
    flows.add_argument("--recipient", help="recipient id")
    flows.add_argument("--reason", help="reason code, e.g. CATEGORY_NOT_APPROVED")
    flows.add_argument(
        "--state", help="triage state (new, acknowledged, false_positive, escalated)"
    )
    flows.add_argument("--source", help="source workload")
    flows.add_argument("--category", help="data category id")
    flows.add_argument("--limit", type=int, default=100, help="at most this many flows")
    flows.add_argument("--json", action="store_true", help="print the flows as JSON")
    flows.set_defaults(handler=_guard(cmd_flows))

    triage = with_url(sub.add_parser("triage", help="triage a blocked flow (security)"))
    triage.add_argument("decision_id")
    triage.add_argument("state", help="new, acknowledged, false_positive or escalated")
    triage.add_argument("--note", help="why (kept with the flow and in the audit trail)")
    triage.add_argument(
        "--shipped-by",
        type=int,
        help="the flow's shipped_by token id, when two proxies shipped the decision id",
    )
    triage.set_defaults(handler=_guard(cmd_triage))
