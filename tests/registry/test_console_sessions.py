"""The console's sessions without a browser: sign-in, cookie flags, CSRF, roles, sign-out."""

from __future__ import annotations

import re


async def sign_in(client, token: str, headers: dict | None = None):
    form = await client.get("/ui/sign-in", headers=headers or {})
    csrf = re.search(r'name=csrf value="([^"]+)"', await form.text()).group(1)
    return await client.post(
        "/ui/sign-in",
        data={"csrf": csrf, "token": token},
        headers=headers or {},
        allow_redirects=False,
    )


async def test_root_redirects_to_the_console_and_pages_need_a_session(client):
    resp = await client.get("/", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/ui/")
    resp = await client.get("/ui/flows", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/sign-in")


async def test_sign_in_sets_a_strict_http_only_session_cookie(client, tokens):
    resp = await sign_in(client, tokens["security"])
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/")
    cookie = resp.headers["Set-Cookie"]
    assert "sw_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    page = await client.get("/ui/")
    assert page.status == 200 and "sec-carol (security)" in await page.text()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


async def test_the_cookie_is_secure_behind_tls(client, tokens):
    resp = await sign_in(client, tokens["security"], {"X-Forwarded-Proto": "https"})
    assert "Secure" in resp.headers["Set-Cookie"]


async def test_api_writes_with_the_cookie_need_the_csrf_token(client, tokens):
    await sign_in(client, tokens["security"])
    page = await (await client.get("/ui/flows")).text()
    csrf = re.search(r'"csrf":"([^"]+)"', page).group(1)
    body = {"state": "acknowledged"}
    resp = await client.post("/v1/flows/nope/triage", json=body)
    assert resp.status == 403 and (await resp.json())["type"].endswith("/csrf")
    resp = await client.post("/v1/flows/nope/triage", json=body, headers={"X-CSRF-Token": csrf})
    assert resp.status == 404  # past the CSRF check and the role check: no such flow
    assert (await client.get("/v1/flows")).status == 200  # reads need no token


async def test_bad_and_proxy_tokens_cannot_sign_in(client, tokens):
    resp = await sign_in(client, "sw_not-a-token")
    assert resp.status == 401 and "Unknown or revoked token" in await resp.text()
    resp = await sign_in(client, tokens["proxy"])
    assert resp.status == 403 and "proxy token cannot sign in" in await resp.text()
    assert "sw_session" not in resp.headers.get("Set-Cookie", "")


async def test_a_forged_sign_in_form_is_refused(client, tokens):
    await client.get("/ui/sign-in")
    resp = await client.post(
        "/ui/sign-in", data={"csrf": "forged", "token": tokens["security"]}, allow_redirects=False
    )
    assert resp.status == 403


async def test_sign_out_ends_the_session(client, tokens):
    await sign_in(client, tokens["engineer"])
    page = await (await client.get("/ui/")).text()
    csrf = re.search(r'name=csrf value="([^"]+)"', page).group(1)
    resp = await client.post("/ui/sign-out", data={"csrf": csrf}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/sign-in")
    client.session.cookie_jar.clear()
    resp = await client.get("/ui/", allow_redirects=False)
    assert resp.status == 303


async def test_an_engineer_gets_no_security_only_page_actions_but_reads(client, tokens):
    await sign_in(client, tokens["engineer"])
    assert (await client.get("/ui/approvals")).status == 200
    assert (await client.get("/v1/datamap")).status == 200


async def _session_of(client, token: str) -> str:
    resp = await sign_in(client, token)
    assert resp.status == 303
    session_id = resp.cookies["sw_session"].value
    client.session.cookie_jar.clear()
    return session_id


async def _is_signed_in(client, session_id: str) -> bool:
    resp = await client.get(
        "/ui/", headers={"Cookie": f"sw_session={session_id}"}, allow_redirects=False
    )
    client.session.cookie_jar.clear()
    return resp.status == 200


async def test_one_token_signing_in_again_and_again_drops_only_its_own_oldest(client, tokens):
    """A script signing in in a loop must not push the other reviewers' sessions out."""
    from registry.api.sessions import MAX_SESSIONS_PER_TOKEN

    reviewer = await _session_of(client, tokens["security"])
    first = await _session_of(client, tokens["engineer"])
    for _ in range(MAX_SESSIONS_PER_TOKEN):
        latest = await _session_of(client, tokens["engineer"])
    assert not await _is_signed_in(client, first)
    assert await _is_signed_in(client, latest)
    assert await _is_signed_in(client, reviewer)


async def test_an_oversized_sign_in_form_is_refused_unread(client):
    """The form is read before the throttle can tell a valid token: its size is bounded."""
    resp = await sign_in(client, "sw_" + "x" * 64 * 1024)
    assert resp.status == 413
    assert (await resp.json())["type"].endswith("/payload-too-large")


async def test_a_sign_in_form_with_a_non_ascii_csrf_field_is_refused_not_a_crash(client, tokens):
    await client.get("/ui/sign-in")
    resp = await client.post(
        "/ui/sign-in", data={"csrf": "é", "token": tokens["security"]}, allow_redirects=False
    )
    assert resp.status == 403


async def test_an_oversized_sign_out_form_is_refused_unread(client):
    resp = await client.post("/ui/sign-out", data={"csrf": "x" * 64 * 1024}, allow_redirects=False)
    assert resp.status == 413
