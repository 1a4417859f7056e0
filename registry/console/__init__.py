"""The reviewers' console at `/ui/`, served by the registry itself (same origin, no CDN).

Server side: sign-in with a registry token into a server-side session (`registry.api.sessions`),
sign-out, and one HTML page per view with the caller's name, role and CSRF token. Each page is
rendered in the browser by `static/console.js` from the JSON API (`/v1/...`), authenticated by
the session cookie: the API's own role checks and four-eyes rules apply, and every write
carries the CSRF token. No external asset: the script, the stylesheet and the chart (inline
SVG) are ours.
"""

from __future__ import annotations

import html
import secrets
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
import structlog
from aiohttp import web

from registry.api import auth, sessions
from registry.api.bodies import read_body
from registry.errors import ApiError
from registry.models import ROLES, TRIAGE_STATES
from registry.tokens import hash_token
from sharewall.taxonomy import load_taxonomy

log = structlog.get_logger("registry.console")

STATIC = Path(__file__).resolve().parent / "static"
SIGN_IN_CSRF_COOKIE = "sw_signin"
CONSOLE_FORM_MAX_BYTES = 4096
CONSOLE_ROLES = tuple(r for r in ROLES if r != "proxy")

# The views, in the navigation's order: (path, title, roles that see it).
PAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "Overview", ("security", "engineer", "admin")),
    ("flows", "Flows", ("security", "engineer")),
    ("approvals", "Approvals", ("security", "engineer", "admin")),
    ("recipients", "Recipients", ("security", "engineer", "admin")),
    ("datamap", "Data map", ("security", "engineer", "admin")),
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _page(title: str, body: str, *, status: int = 200, headers: dict | None = None) -> web.Response:
    doc = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · sharewall</title>"
        '<link rel=stylesheet href="/ui/static/console.css"></head>'
        f"<body>{body}</body></html>"
    )
    return web.Response(
        text=doc,
        status=status,
        content_type="text/html",
        headers={**_SECURITY_HEADERS, **(headers or {})},
    )


def _sign_in_page(
    request: web.Request, error: str = "", *, status: int = 200, headers: dict | None = None
) -> web.Response:
    token = secrets.token_urlsafe(24)
    message = (
        f"<p class=error role=alert id=sign-in-error>{html.escape(error)}</p>" if error else ""
    )
    body = (
        "<main class=sign-in><h1>sharewall</h1><p>Sign in with your registry token.</p>"
        f"{message}"
        '<form method=post action="/ui/sign-in">'
        f'<input type=hidden name=csrf value="{token}">'
        "<label>Token <input type=password name=token id=token autocomplete=off required "
        "autofocus></label>"
        "<button type=submit id=sign-in>Sign in</button></form></main>"
    )
    response = _page("Sign in", body, status=status, headers=headers)
    # Double-submit: the form's token must match this cookie (no session exists yet).
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE,
        token,
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=sessions.is_secure(request),
        max_age=3600,
    )
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    if auth.current_principal(request) is not None:
        raise web.HTTPSeeOther("/ui/")
    return _sign_in_page(request)


async def _small_form(request: web.Request) -> dict[str, str]:
    """A console form (a few short fields, urlencoded), read with a small cap (413 beyond).

    Forms are read before any credential is known, so never up to the 32 MiB of an upload.
    """
    raw = await read_body(request, CONSOLE_FORM_MAX_BYTES)
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Check the token (throttled per address: `auth.sign_in`), open a session, go to the overview."""
    form = await _small_form(request)
    submitted, expected = form.get("csrf", ""), request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(submitted.encode(), expected.encode()):
        return _sign_in_page(request, "The form expired; please sign in again.", status=403)
    secret = form.get("token", "").strip()
    try:
        principal = await auth.sign_in(request, secret)
    except ApiError as exc:
        return _sign_in_page(request, exc.detail or exc.title, status=429, headers=exc.headers)
    if principal is None:
        log.info("console.sign_in_failed")
        return _sign_in_page(request, "Unknown or revoked token.", status=401)
    if principal.role not in CONSOLE_ROLES:
        log.info("console.sign_in_refused", role=principal.role)
        return _sign_in_page(request, "A proxy token cannot sign in to the console.", status=403)
    session = request.app[sessions.SESSION_STORE].create(hash_token(secret))
    log.info("console.signed_in", actor=principal.owner, role=principal.role)
    response = web.HTTPSeeOther("/ui/")
    sessions.set_session_cookie(response, request, session.id)
    response.del_cookie(SIGN_IN_CSRF_COOKIE, path="/ui/")
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    session = request.get(sessions.CONSOLE_SESSION)
    form = await _small_form(request)
    if session is not None:
        if not session.csrf_matches(form.get("csrf", "")):
            raise ApiError(403, "csrf", "Forbidden", "sign-out needs the session's CSRF token")
        request.app[sessions.SESSION_STORE].drop(session.id)
    response = web.HTTPSeeOther("/ui/sign-in")
    sessions.clear_session_cookie(response, request)
    raise response


def _boot_data(principal: auth.Principal, csrf: str, page: str, arg: str) -> bytes:
    taxonomy = load_taxonomy()
    return orjson.dumps(
        {
            "user": principal.owner or principal.name,
            "token": principal.name,
            "role": principal.role,
            "csrf": csrf,
            "page": page,
            "arg": arg,
            "reason_codes": dict(taxonomy.reason_codes),
            "reason_policy": dict(taxonomy.reason_policy),
            "categories": sorted(taxonomy.categories),
            "purposes": sorted(taxonomy.purposes),
            "recipient_kinds": sorted(taxonomy.recipient_kinds),
            "triage_states": list(TRIAGE_STATES),
        }
    )


async def view(request: web.Request) -> web.StreamResponse:
    """A console view: the shell the script renders, for a signed-in caller."""
    principal = auth.current_principal(request)
    session = request.get(sessions.CONSOLE_SESSION)
    if principal is None or session is None:
        raise web.HTTPSeeOther("/ui/sign-in")
    page, _, arg = request.match_info.get("page", "").partition("/")
    known = {path: (title, roles) for path, title, roles in PAGES}
    if page not in known:
        raise web.HTTPNotFound()
    title, roles = known[page]
    if principal.role not in roles:
        raise ApiError(403, "forbidden-role", "Forbidden", f"{title} is not for {principal.role}")
    nav = "".join(
        f'<a href="/ui/{path}"{" aria-current=page" if path == page else ""}>{name}</a>'
        for path, name, seen_by in PAGES
        if principal.role in seen_by
    )
    who = html.escape(f"{principal.owner or principal.name} ({principal.role})")
    body = (
        f"<header><span class=brand>sharewall</span><nav>{nav}</nav>"
        f'<form method=post action="/ui/sign-out" class=sign-out>'
        f"<span class=who id=who>{who}</span>"
        f'<input type=hidden name=csrf value="{html.escape(session.csrf)}">'
        "<button type=submit id=sign-out>Sign out</button></form></header>"
        f'<main id=app data-page="{html.escape(page or "overview")}"><p>Loading…</p></main>'
        '<script type="application/json" id=boot>'
        + _boot_data(principal, session.csrf, page or "overview", arg)
        .decode()
        .replace("</", "<\\/")
        + "</script>"
        '<script src="/ui/static/console.js"></script>'
    )
    return _page(title, body)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if name not in {"console.js", "console.css"} or not path.is_file():
        raise web.HTTPNotFound()
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    return web.Response(
        body=path.read_bytes(),
        content_type=kind,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


async def root(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def install(app: web.Application) -> None:
    """Add the console's routes and its session store to the app."""
    app[sessions.SESSION_STORE] = sessions.SessionStore()
    r = app.router
    r.add_get("/", root)
    r.add_get("/ui", root)
    r.add_get("/ui/sign-in", sign_in_form)
    r.add_post("/ui/sign-in", sign_in)
    r.add_post("/ui/sign-out", sign_out)
    r.add_get("/ui/static/{name}", static)
    r.add_get("/ui/", view)
    r.add_get("/ui/{page:.+}", view)
