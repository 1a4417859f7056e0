"""The console in headless Chromium (Debian's `chromium`, driven by Playwright; no download).

A real registry process, a real proxy process following it, and a browser: sign in, see the
blocked flow the proxy made, open it, triage it, approve a pending change after seeing its
impact; a CSRF-less write is refused, an engineer is refused on security actions, a proxy token
cannot sign in. A screenshot of each page is saved in the test's temporary folder.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests
from proxy_harness import PHONE, REGISTRY_YAML, ProxyProcess, free_port, pins
from registry_harness import RegistryProcess, api, wait_ready
from registry_harness import run_cli as _run
from test_impact_replay import UNKNOWN_HOST, ship_pending_facts

CHROMIUM = Path("/usr/bin/chromium")
EDIT_HOST = "api.editco.test"  # called through the proxy; the engineer's edit registers it
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium); `make test` as root "
        "installs it",
    ),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("console-registry")
    db_url = f"sqlite+aiosqlite:///{workdir / 'registry.sqlite'}"
    _run("registry", "apply", str(REGISTRY_YAML), "--db", db_url)
    names = {"proxy": "proxy-1", "security": "sec-carol", "engineer": "eng-alice"}
    tokens = {
        role: _run("registry", "tokens", "create", "--role", role, "--name", name, "--db", db_url)
        for role, name in names.items()
    }
    # The engineer's own security token: the same person, so four eyes bar it too.
    tokens["engineer-as-security"] = _run(
        "registry", "tokens", "create", "--role", "security", "--name", "sec-alice",
        "--owner", "eng-alice", "--db", db_url,
    )  # fmt: skip
    reg = RegistryProcess(workdir, db_url, free_port())
    reg.start()
    yield reg, tokens
    reg.stop()


@pytest.fixture(scope="module")
def blocked(registry, upstreams, tmp_path_factory):
    """A blocked call made through a real proxy following the registry; its decision id."""
    reg, tokens = registry
    workdir = tmp_path_factory.mktemp("console-proxy")
    proxy = ProxyProcess(
        workdir,
        [
            "--registry-url",
            reg.url,
            "--token",
            tokens["proxy"],
            "--default-purpose",
            "service_delivery",
            *pins(upstreams),
            "--resolve",
            f"{UNKNOWN_HOST}:{upstreams.http_port}:127.0.0.1",
            "--resolve",
            f"{EDIT_HOST}:{upstreams.http_port}:127.0.0.1",
        ],
    )
    session = requests.Session()
    session.trust_env = False
    try:
        wait_ready(proxy)
        session.proxies = {"http": proxy.url}
        url = f"http://api.vendor.test:{upstreams.http_port}/console-{uuid.uuid4().hex[:6]}"
        resp = session.post(url, json={"to": PHONE}, timeout=10)  # phone over plain HTTP
        assert resp.status_code == 403
        decision_id = resp.json()["decision_id"]
        for _ in range(3):  # calls to a host no recipient owns yet (the pending change's)
            session.post(f"http://{UNKNOWN_HOST}:{upstreams.http_port}/x", timeout=10)
        for _ in range(2):  # calls to the host the engineer's edit adds to its proposal
            session.post(f"http://{EDIT_HOST}:{upstreams.http_port}/x", timeout=10)
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        while time.monotonic() < deadline:
            found = api(reg, tokens["security"], "GET", f"/v1/flows/{decision_id}")
            if found.status_code == 200:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the blocked flow never reached the registry")
    finally:
        proxy.stop()
    ship_pending_facts(reg, tokens["proxy"], workdir / "spool")
    return decision_id


@pytest.fixture(scope="module")
def pending(registry):
    """A recipient an engineer proposed for the unknown host: awaiting approval."""
    reg, tokens = registry
    resp = api(
        reg,
        tokens["engineer"],
        "POST",
        "/v1/recipients",
        json={
            "id": "newco",
            "name": "NewCo Ltd",
            "kind": "vendor",
            "regions": ["SG"],
            "hosts": [UNKNOWN_HOST],
            "grants": [
                {
                    "purpose": "service_delivery",
                    "categories": ["contact.phone_number"],
                    "legal_basis": "contract",
                }
            ],
        },
    )
    assert resp.status_code == 201, resp.text
    return "newco"


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(browser, reg: RegistryProcess, token: str):
    context = browser.new_context()
    page = context.new_page()
    page.on("console", lambda m: print("CONSOLE", m.type, m.text))
    page.on("pageerror", lambda e: print("PAGEERROR", e))
    page.goto(f"{reg.url}/")
    assert page.url.endswith("/ui/sign-in")
    page.fill("#token", token)
    page.click("#sign-in")
    return context, page


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_a_reviewer_triages_a_real_blocked_flow_and_approves_a_change_after_its_impact(
    registry, blocked, pending, browser, tmp_path
):
    reg, tokens = registry
    context, page = sign_in(browser, reg, tokens["security"])
    cookie = next(c for c in context.cookies() if c["name"] == "sw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.wait_for_selector("#chart")
    assert "sec-carol (security)" in page.inner_text("#who")
    assert page.inner_text("#kpi-blocked .kpi") != "0"
    shot(page, tmp_path, "overview")

    page.goto(f"{reg.url}/ui/flows")
    row = page.wait_for_selector(f"tr[data-decision='{blocked}']")
    assert "PERSONAL_DATA_IN_CLEARTEXT" in row.inner_text()
    shot(page, tmp_path, "flows")

    page.click(f"tr[data-decision='{blocked}'] a")
    page.wait_for_selector("#reasons")
    reasons = page.inner_text("#reasons")
    assert "PERSONAL_DATA_IN_CLEARTEXT" in reasons
    assert "technical safeguards" in reasons  # the privacy-policy sentence behind the code
    assert "contact.phone_number" in page.inner_text("#findings")
    assert PHONE not in page.content()  # never the value
    shot(page, tmp_path, "flow")
    page.select_option("#triage-state", "acknowledged")
    page.fill("#triage-note", "test number, app fixed")
    page.click("#triage")
    page.wait_for_selector("#triage-message.notice")
    page.reload()
    page.wait_for_selector("#triage-current")
    assert page.inner_text("#triage-current").startswith("acknowledged by sec-carol")

    page.goto(f"{reg.url}/ui/approvals")
    page.wait_for_selector(f"#impact-{pending} .impact")
    impact = page.inner_text(f"#impact-{pending}")
    # newco is proposed (in the snapshot, inactive): approving it lets its 3 calls through.
    assert "3 would be let through" in impact and "RECIPIENT_INACTIVE" in impact
    shot(page, tmp_path, "approvals")
    page.fill(f"#note-{pending}", "DPA-2026-31 reviewed")
    page.click(f"#approve-{pending}")
    page.wait_for_selector(f"#result-{pending}.notice")
    live = api(reg, tokens["security"], "GET", f"/v1/recipients/{pending}").json()
    assert live["status"] == "approved"

    page.goto(f"{reg.url}/ui/recipients/{pending}")
    page.wait_for_selector("#audit")
    assert "DPA-2026-31 reviewed" in page.inner_text("#audit")
    shot(page, tmp_path, "recipient")
    page.goto(f"{reg.url}/ui/recipients")
    page.wait_for_selector("#recipients")
    shot(page, tmp_path, "recipients")
    page.goto(f"{reg.url}/ui/datamap")
    page.wait_for_selector("#datamap")
    assert page.query_selector("#datamap td.unused") is not None  # granted, never used
    shot(page, tmp_path, "datamap")

    # A write with the session cookie but without the CSRF token is refused.
    resp = page.request.post(f"{reg.url}/v1/flows/{blocked}/triage", data={"state": "escalated"})
    assert resp.status == 403 and resp.json()["type"].endswith("/csrf")

    page.click("#sign-out")
    page.wait_for_url("**/ui/sign-in")
    page.goto(f"{reg.url}/ui/flows")
    assert page.url.endswith("/ui/sign-in")  # the session is gone
    context.close()


def test_an_engineer_sees_but_may_not_triage_or_approve(registry, blocked, browser, tmp_path):
    reg, tokens = registry
    context, page = sign_in(browser, reg, tokens["engineer"])
    page.goto(f"{reg.url}/ui/flows/{blocked}")
    page.wait_for_selector("#reasons")
    assert page.query_selector("#triage") is None  # no security action offered
    # Even sent by hand with the session's CSRF token, the API refuses the role.
    status = page.evaluate(
        """async (id) => {
            const boot = JSON.parse(document.getElementById("boot").textContent);
            const r = await fetch(`/v1/flows/${id}/triage`, {method: "POST",
              headers: {"Content-Type": "application/json", "X-CSRF-Token": boot.csrf},
              body: JSON.stringify({state: "escalated"})});
            return [r.status, (await r.json()).type];
        }""",
        blocked,
    )
    assert status[0] == 403 and status[1].endswith("/forbidden-role")
    shot(page, tmp_path, "engineer-flow")
    page.goto(f"{reg.url}/ui/approvals")
    page.wait_for_selector("h1")
    assert page.query_selector("button[id^=approve-]") is None
    shot(page, tmp_path, "engineer-approvals")
    context.close()


def test_an_engineer_edits_its_proposal_and_a_reviewer_sees_the_edited_version_with_its_impact(
    registry, blocked, browser, tmp_path
):
    reg, tokens = registry
    engineer = tokens["engineer"]
    proposal = {
        "id": "editco",
        "name": "EditCo Ltd",
        "kind": "vendor",
        "regions": ["SG"],
        "hosts": ["api.editco-old.test"],
        "grants": [
            {
                "purpose": "service_delivery",
                "categories": ["contact.email"],
                "legal_basis": "contract",
            }
        ],
    }
    resp = api(reg, engineer, "POST", "/v1/recipients", json=proposal)
    assert resp.status_code == 201, resp.text
    first_version = resp.json()["version"]
    # A staged edit of a live recipient, made with the CLI's route, edited further below.
    resp = api(reg, engineer, "PATCH", "/v1/recipients/tunnel", json={"notes": "to inspect"})
    assert resp.status_code == 200, resp.text

    context, page = sign_in(browser, reg, engineer)
    page.goto(f"{reg.url}/ui/approvals")
    page.wait_for_selector("#impact-editco .impact")
    assert "0 would be let through" in page.inner_text("#impact-editco")
    assert page.query_selector("section[data-entity=editco] .badge.yours") is not None
    assert page.query_selector("#approve-editco") is None  # approving is not an engineer's
    page.click("#edit-editco")
    page.fill("#edit-editco-name", "EditCo Pte Ltd")
    page.fill("#edit-editco-regions", "SG Singapore")
    page.fill("#edit-editco-hosts", EDIT_HOST)
    page.fill("#edit-editco-grant-0-categories", "contact.email, contact.phone_number")
    page.click("#edit-editco-save")
    error = page.wait_for_selector("[data-field=regions].invalid .field-error")
    assert "ISO 3166" in error.inner_text()
    assert "422" in page.inner_text("#edit-editco-message")
    # Nothing typed is lost, and nothing was written.
    assert page.input_value("#edit-editco-name") == "EditCo Pte Ltd"
    assert page.input_value("#edit-editco-hosts") == EDIT_HOST
    assert api(reg, engineer, "GET", "/v1/recipients/editco").json()["version"] == first_version
    shot(page, tmp_path, "engineer-edit-refused")

    page.fill("#edit-editco-regions", "SG MY")
    page.click("#edit-editco-save")
    page.wait_for_selector("#saved-editco")
    card = "section[data-entity=editco]"
    page.wait_for_selector(f"{card} #impact-editco .impact")
    diff = page.inner_text(f"{card} table.diff")
    assert "EditCo Pte Ltd" in diff and EDIT_HOST in diff and "MY" in diff
    assert "contact.phone_number" in diff
    # The impact is the edited version's: the recorded calls to the new host go through.
    assert "2 would be let through" in page.inner_text("#impact-editco")
    shot(page, tmp_path, "engineer-edited")
    stored = api(reg, engineer, "GET", "/v1/recipients/editco").json()
    assert stored["status"] == "proposed"  # an edit stays pending
    assert stored["name"] == "EditCo Pte Ltd" and stored["hosts"] == [EDIT_HOST]
    assert stored["grants"][0]["categories"] == ["contact.email", "contact.phone_number"]

    # The staged edit of a live recipient: a grant widened, still pending, live unchanged.
    page.click("#edit-tunnel")
    page.fill("#edit-tunnel-notes", "to inspect; DPA pending")
    page.fill("#edit-tunnel-grant-0-categories", "contact.phone_number, comms.bogus")
    page.click("#edit-tunnel-save")
    error = page.wait_for_selector("#edit-tunnel-grant-0 [data-field=categories].invalid")
    assert "comms.bogus" in error.inner_text()
    # The notes went in with their own request; the refused grant edit waits in the form.
    assert "1 of 2 writes saved" in page.inner_text("#edit-tunnel-message")
    assert page.input_value("#edit-tunnel-notes") == "to inspect; DPA pending"
    page.fill("#edit-tunnel-grant-0-categories", "contact.phone_number, comms.content")
    page.click("#edit-tunnel-save")
    page.wait_for_selector("#saved-tunnel")
    assert "DPA pending" in page.inner_text("section[data-entity=tunnel] table.diff")
    assert "comms.content" in page.inner_text("section[data-entity=tunnel] table.diff")
    tunnel = api(reg, engineer, "GET", "/v1/recipients/tunnel").json()
    assert tunnel["status"] == "approved"
    assert tunnel["grants"][0]["categories"] == ["contact.phone_number"]  # live: as approved
    assert tunnel["pending_change"]["proposed"]["grants"][0]["categories"] == [
        "contact.phone_number",
        "comms.content",
    ]

    # A proposed workload: purposes and recipients edited in the same way.
    resp = api(
        reg,
        engineer,
        "POST",
        "/v1/workloads",
        json={"namespace": "billing", "name": "invoicer", "purposes": ["billing"]},
    )
    assert resp.status_code == 201, resp.text
    page.reload()
    page.click("#edit-billing_invoicer")
    page.check("#edit-billing_invoicer-purpose-customer_support")
    page.uncheck("#edit-billing_invoicer-any")
    page.fill("#edit-billing_invoicer-recipients", "vendor")
    page.click("#edit-billing_invoicer-save")
    page.wait_for_selector("#saved-billing_invoicer")
    # Its impact is computed against the live recipients it names (not a 422).
    page.wait_for_selector('[id="impact-billing/invoicer"] .impact')
    workload = api(reg, engineer, "GET", "/v1/workloads/billing/invoicer").json()
    assert workload["status"] == "proposed"
    assert workload["purposes"] == ["billing", "customer_support"]
    assert workload["recipients"] == ["vendor"]

    # Security actions stay refused, even sent by hand with the session's CSRF token.
    status = page.evaluate(
        """async (version) => {
            const boot = JSON.parse(document.getElementById("boot").textContent);
            const r = await fetch("/v1/recipients/editco/approve", {method: "POST",
              headers: {"Content-Type": "application/json", "X-CSRF-Token": boot.csrf,
                        "If-Match": `"${version}"`},
              body: JSON.stringify({note: "self-approved"})});
            return [r.status, (await r.json()).type];
        }""",
        stored["version"],
    )
    assert status[0] == 403 and status[1].endswith("/forbidden-role")
    # An edit without the CSRF token is refused too.
    resp = page.request.patch(f"{reg.url}/v1/recipients/editco", data={"name": "Nope"})
    assert resp.status == 403 and resp.json()["type"].endswith("/csrf")
    context.close()

    context, page = sign_in(browser, reg, tokens["security"])
    page.goto(f"{reg.url}/ui/approvals")
    page.wait_for_selector("#impact-editco .impact")
    card_text = page.inner_text("section[data-entity=editco]")
    assert "EditCo Pte Ltd" in card_text and f"version {stored['version']}" in card_text
    assert "2 would be let through" in page.inner_text("#impact-editco")
    assert page.query_selector("#edit-editco") is None  # editing is the authors'
    shot(page, tmp_path, "reviewer-sees-edit")
    context.close()

    # The author, signed in with their own security token, may not approve what they edited.
    context, page = sign_in(browser, reg, tokens["engineer-as-security"])
    page.goto(f"{reg.url}/ui/approvals")
    page.wait_for_selector("#approve-editco")
    page.click("#approve-editco")
    refused = page.wait_for_selector("#result-editco.error")
    assert "403" in refused.inner_text() and "Four eyes" in refused.inner_text()
    assert api(reg, engineer, "GET", "/v1/recipients/editco").json()["status"] == "proposed"
    shot(page, tmp_path, "author-refused-by-four-eyes")
    context.close()


def test_a_proxy_token_cannot_sign_in_and_failures_are_throttled(registry, browser, tmp_path):
    reg, tokens = registry
    context, page = sign_in(browser, reg, tokens["proxy"])
    assert "proxy token cannot sign in" in page.inner_text("#sign-in-error")
    shot(page, tmp_path, "proxy-refused")
    context.close()
    # Wrong tokens from one address: soon 429 with Retry-After (plain HTTP, same form).
    session = requests.Session()
    statuses = []
    for _ in range(15):
        form = session.get(f"{reg.url}/ui/sign-in", timeout=10)
        csrf = form.text.split('name=csrf value="')[1].split('"')[0]
        resp = session.post(
            f"{reg.url}/ui/sign-in",
            data={"csrf": csrf, "token": "sw_wrong"},
            allow_redirects=False,
            timeout=10,
        )
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert int(resp.headers["Retry-After"]) >= 1
            break
    assert statuses[0] == 401 and statuses[-1] == 429
