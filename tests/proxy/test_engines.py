"""Policy engines: the real regorus engine on a decision table, snapshot swaps, and every fault
(undefined result, engine error, timeout, thread misuse, failing OPA) ending in a deny."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from call_facts import make_call

from proxy.decide import Decider
from proxy.decision import Call, build_policy_input
from proxy.engines import (
    ENGINE_ERROR,
    ENGINE_TIMEOUT,
    ENGINE_UNDEFINED,
    SNAPSHOT_NOT_LOADED,
    EngineError,
    PolicyEngine,
    create_engine,
)
from proxy.engines.embedded import EmbeddedEngine
from proxy.engines.opa import OpaEngine
from proxy.inspect.model import BODY_TOO_LARGE, Finding, Inspection
from sharewall.snapshot import Grant, Recipient, Snapshot, Workload
from sharewall.taxonomy import TAXONOMY_RELPATH, policy_dir

TODAY = "2026-06-01"


def make_snapshot(*, twilio_status: str = "approved", revision: str = "") -> Snapshot:
    recipients = (
        Recipient(
            id="twilio",
            name="Twilio Inc.",
            kind="ott_provider",
            status=twilio_status,
            regions=("SG",),
            hosts=("api.twilio.com",),
            grants=(
                Grant(
                    purpose="service_delivery",
                    categories=("contact.phone_number", "comms.content"),
                ),
                Grant(purpose="marketing", categories=("contact.phone_number", "contact.email")),
                Grant(
                    purpose="billing", categories=("contact.phone_number",), expires="2026-05-31"
                ),
            ),
        ),
        Recipient(
            id="zendesk",
            name="Zendesk",
            kind="vendor",
            status="approved",
            regions=("US",),
            hosts=("acme.zendesk.com",),
            tls_origination=True,
            grants=(
                Grant(purpose="customer_support", categories=("contact.email", "contact.name")),
                Grant(purpose="troubleshooting", categories=("contact.email",)),
            ),
        ),
        Recipient(
            id="adnet",
            name="Ad network",
            kind="advertiser",
            status="approved",
            regions=("SG",),
            hosts=("ads.example.com",),
            grants=(Grant(purpose="advertising", categories=("contact.email",)),),
        ),
    )
    snapshot = Snapshot(version=3, recipients=recipients)
    return snapshot.replace(revision=revision) if revision else snapshot.with_revision()


def make_inspection(*categories: str, problems: tuple[str, ...] = ()) -> Inspection:
    return Inspection(
        findings=tuple(Finding(c, f"json:$.f{i}", "test") for i, c in enumerate(categories)),
        problems=problems,
    )


def policy_input(call: Call, inspection: Inspection) -> dict[str, Any]:
    return build_policy_input(call, inspection, date=TODAY)


# (call overrides, categories, problems, expected reason codes); allow iff no codes.
DECISION_TABLE = [
    pytest.param({}, ("contact.phone_number", "comms.content"), (), [], id="allow: twilio send"),
    pytest.param({}, (), (), [], id="allow: no personal data"),
    pytest.param(
        {"recipient_id": None}, ("contact.email",), (), ["UNKNOWN_RECIPIENT"], id="deny: unknown"
    ),
    pytest.param({"purpose": None}, (), (), ["PURPOSE_UNDECLARED"], id="deny: purpose undeclared"),
    pytest.param({"purpose": "gossip"}, (), (), ["PURPOSE_UNKNOWN"], id="deny: purpose unknown"),
    pytest.param(
        {"purpose": "billing"},
        ("contact.phone_number",),
        (),
        ["PURPOSE_NOT_APPROVED"],
        id="deny: grant expired yesterday",
    ),
    pytest.param(
        {},
        ("contact.phone_number", "payment.account_number"),
        (),
        ["CATEGORY_NOT_APPROVED"],
        id="deny: card number not granted",
    ),
    pytest.param(
        {},
        ("contact.phone_number", "mobile.sms_consent"),
        (),
        ["CATEGORY_NOT_APPROVED", "SMS_CONSENT_TO_THIRD_PARTY"],
        id="deny: sms consent to a cpaas",
    ),
    pytest.param(
        {"purpose": "marketing"},
        ("contact.phone_number",),
        (),
        ["MOBILE_INFO_FOR_MARKETING"],
        id="deny: phone for marketing though granted",
    ),
    pytest.param(
        {"scheme": "http", "tls_upstream": False},
        ("contact.phone_number",),
        (),
        ["PERSONAL_DATA_IN_CLEARTEXT"],
        id="deny: cleartext",
    ),
    pytest.param(
        {"recipient_id": "zendesk", "scheme": "http", "purpose": "customer_support"},
        ("contact.email",),
        (),
        [],
        id="allow: plain http upgraded by tls origination",
    ),
    pytest.param(
        {"recipient_id": "zendesk", "purpose": "troubleshooting"},
        ("contact.email",),
        (),
        ["CROSS_BORDER_PURPOSE"],
        id="deny: troubleshooting abroad",
    ),
    pytest.param(
        {"recipient_id": "adnet", "purpose": "advertising", "inspected": False},
        (),
        (),
        ["UNINSPECTED_HIGH_RISK"],
        id="deny: tunnel to advertiser",
    ),
    pytest.param({"inspected": False}, (), (), [], id="allow: tunnel to ott provider"),
    pytest.param(
        {}, (), (BODY_TOO_LARGE,), ["INSPECTION_INCOMPLETE"], id="deny: inspection incomplete"
    ),
]


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedEngine]:
    engine = EmbeddedEngine()
    await engine.set_snapshot(make_snapshot())
    yield engine
    await engine.close()


@pytest.mark.parametrize(("overrides", "categories", "problems", "codes"), DECISION_TABLE)
async def test_embedded_engine_decides_the_table(
    embedded: EmbeddedEngine,
    overrides: dict[str, Any],
    categories: tuple[str, ...],
    problems: tuple[str, ...],
    codes: list[str],
) -> None:
    call, inspection = make_call(**overrides), make_inspection(*categories, problems=problems)
    decision = await embedded.evaluate(policy_input(call, inspection))
    assert sorted({r["code"] for r in decision["reasons"]}) == codes
    assert decision["allow"] is (not codes)
    assert decision["action"] == ("deny" if codes else "allow")


async def test_new_snapshot_replaces_the_old_one_for_later_evaluations(
    embedded: EmbeddedEngine,
) -> None:
    document = policy_input(make_call(), make_inspection("contact.phone_number"))
    assert (await embedded.evaluate(document))["allow"] is True

    await embedded.set_snapshot(make_snapshot(twilio_status="suspended"))

    decision = await embedded.evaluate(document)
    assert [r["code"] for r in decision["reasons"]] == ["RECIPIENT_INACTIVE"]
    assert embedded.revision == make_snapshot(twilio_status="suspended").revision


async def test_engine_without_snapshot_raises_snapshot_not_loaded() -> None:
    engine = create_engine("embedded")
    assert not engine.is_ready
    with pytest.raises(EngineError) as caught:
        await engine.evaluate(policy_input(make_call(), make_inspection()))
    assert caught.value.code == SNAPSHOT_NOT_LOADED


def test_create_engine_rejects_unknown_kinds_and_opa_without_url() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("wasm")
    with pytest.raises(ValueError, match="OPA URL"):
        create_engine("opa")
    assert isinstance(create_engine("opa", opa_url="http://127.0.0.1:8181"), PolicyEngine)


def _policy_dir_with(tmp_path: Path, rego: str) -> Path:
    """A policies folder holding the real taxonomy and a stand-in decision rule."""
    (tmp_path / TAXONOMY_RELPATH).parent.mkdir(parents=True)
    shutil.copy(policy_dir() / TAXONOMY_RELPATH, tmp_path / TAXONOMY_RELPATH)
    (tmp_path / "sharewall" / "egress").mkdir(parents=True)
    (tmp_path / "sharewall" / "egress" / "decision.rego").write_text(rego)
    return tmp_path


STAND_IN_POLICIES = [
    pytest.param(
        'package sharewall.egress\n\ndecision := {"allow": true} if input.never_set\n',
        id="undefined decision",
    ),
    pytest.param(
        'package sharewall.egress\n\ndecision := {"allow": true, "action": "allow", '
        '"reasons": [{"code": "X", "message": "m"}]}\n',
        id="allow with a reason",
    ),
    pytest.param(
        'package sharewall.egress\n\ndecision := {"allow": "yes", "action": "allow", "reasons": []}\n',
        id="allow not a boolean",
    ),
    pytest.param('package sharewall.egress\n\ndecision := "allow"\n', id="not an object"),
]


@pytest.mark.parametrize("rego", STAND_IN_POLICIES)
async def test_undefined_or_malformed_policy_result_is_a_deny_fault(
    tmp_path: Path, rego: str
) -> None:
    decider = Decider(EmbeddedEngine(_policy_dir_with(tmp_path, rego)))
    assert await decider.set_snapshot(make_snapshot())

    decision = await decider.decide(make_call(), make_inspection("contact.phone_number"))

    assert decision.action == "deny"
    assert not decision.allow
    assert decision.fault == ENGINE_UNDEFINED
    assert decision.reasons == ()


async def test_undefined_decision_raises_engine_undefined_from_the_engine(tmp_path: Path) -> None:
    engine = EmbeddedEngine(_policy_dir_with(tmp_path, STAND_IN_POLICIES[0].values[0]))
    await engine.set_snapshot(make_snapshot())
    with pytest.raises(EngineError) as caught:
        await engine.evaluate(policy_input(make_call(), make_inspection()))
    assert caught.value.code == ENGINE_UNDEFINED


def test_broken_policy_fails_at_start_with_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as caught:
        EmbeddedEngine(_policy_dir_with(tmp_path, "package sharewall.egress\n\ndecision := {\n"))
    assert caught.value.code == ENGINE_ERROR
    assert "Stack backtrace" not in str(caught.value)


async def test_engine_used_from_another_thread_is_an_engine_error(
    embedded: EmbeddedEngine,
) -> None:
    document = policy_input(make_call(), make_inspection("contact.phone_number"))
    outcome: list[BaseException | dict[str, Any]] = []

    def evaluate_elsewhere() -> None:
        try:
            outcome.append(embedded.evaluate_sync(document))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=evaluate_elsewhere)
    worker.start()
    worker.join(timeout=10)

    assert len(outcome) == 1
    assert isinstance(outcome[0], EngineError)
    assert outcome[0].code == ENGINE_ERROR
    # The owning thread is unaffected.
    assert (await embedded.evaluate(document))["allow"] is True


def _unsendable_drops(errors: list[BaseException], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Drop the last references to `errors` on another thread; pyo3's complaints meanwhile.

    An error travels between threads (an `asyncio.to_thread` result, a cyclic-GC pass run by
    whichever thread allocates): if its traceback held a regorus engine, the engine would be
    released off its own thread, which pyo3 refuses ("Engine is unsendable, but is being dropped
    on another thread", reported through `sys.unraisablehook`).
    """
    seen: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
    worker = threading.Thread(target=errors.clear)
    worker.start()
    worker.join(timeout=10)
    assert not errors
    return [s for s in seen if "unsendable" in s]


def test_a_broken_policy_error_holds_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    try:
        EmbeddedEngine(_policy_dir_with(tmp_path, "package sharewall.egress\n\ndecision := {\n"))
    except EngineError as exc:
        errors.append(exc)
    assert _unsendable_drops(errors, monkeypatch) == []


async def test_an_evaluation_error_outliving_its_engine_holds_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = EmbeddedEngine(_policy_dir_with(tmp_path, STAND_IN_POLICIES[0].values[0]))
    await engine.set_snapshot(make_snapshot())
    errors: list[BaseException] = []
    try:
        await engine.evaluate(policy_input(make_call(), make_inspection()))
    except EngineError as exc:
        errors.append(exc)
    await engine.set_snapshot(make_snapshot())  # the engine that failed is replaced...
    await engine.close()  # ...and every engine let go, on this thread
    assert _unsendable_drops(errors, monkeypatch) == []


async def test_an_engine_never_closed_and_freed_on_another_thread_leaves_it_its_engines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cyclic GC frees an unreachable EmbeddedEngine on whichever thread it runs: its regorus
    # engines wait for their own thread instead of being dropped there.
    engine = EmbeddedEngine()
    await engine.set_snapshot(make_snapshot())
    orphans: list[Any] = [engine]
    del engine
    assert _unsendable_drops(orphans, monkeypatch) == []
    # Their thread lets them go the next time it uses an engine (and nothing complains).
    later = EmbeddedEngine()
    await later.set_snapshot(make_snapshot())
    await later.close()


def test_a_policy_evaluator_load_error_holds_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sharewall.policy import PolicyError, PolicyEvaluator

    errors: list[BaseException] = []
    broken = _policy_dir_with(tmp_path, "package sharewall.egress\n\ndecision := {\n")
    try:
        PolicyEvaluator(make_snapshot(), broken)
    except PolicyError as exc:
        errors.append(exc)
    assert errors and _unsendable_drops(errors, monkeypatch) == []


class RaisingEngine(EmbeddedEngine):
    """The real engine, except that evaluating blows up like a bug would."""

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")


class EngineErrorEngine(EmbeddedEngine):
    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        raise EngineError(ENGINE_ERROR, "sidecar gone")


class SleepingEngine(EmbeddedEngine):
    """Answers, but only after the decider's patience has run out."""

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return await super().evaluate(policy_input)


class RejectingEngine(EmbeddedEngine):
    """Accepts its first snapshot, refuses the next ones."""

    async def set_snapshot(self, snapshot: Snapshot) -> None:
        if self.is_ready:
            raise EngineError(ENGINE_ERROR, "snapshot refused")
        await super().set_snapshot(snapshot)


@pytest.mark.parametrize(
    ("engine_type", "fault"),
    [
        pytest.param(RaisingEngine, ENGINE_ERROR, id="unexpected exception"),
        pytest.param(EngineErrorEngine, ENGINE_ERROR, id="engine error"),
        pytest.param(SleepingEngine, ENGINE_TIMEOUT, id="sleeps past the timeout"),
    ],
)
async def test_failing_engine_gives_a_fault_decision_never_an_allow(
    engine_type: type[EmbeddedEngine], fault: str
) -> None:
    decider = Decider(engine_type(), timeout=0.2)
    await decider.set_snapshot(make_snapshot())
    call = make_call()

    started = time.monotonic()
    decision = await decider.decide(call, make_inspection("contact.phone_number"))

    assert time.monotonic() - started < 2
    assert decision.fault == fault
    assert decision.action == "deny" and not decision.allow
    assert decision.recipient_id == "twilio"
    assert decision.categories == ("contact.phone_number",)
    # A fault is not cached: the next call asks the engine again.
    assert len(decider.cache) == 0


async def test_decider_without_snapshot_answers_snapshot_not_loaded() -> None:
    decider = Decider(EmbeddedEngine())
    decision = await decider.decide(make_call(), make_inspection())
    assert not decider.has_snapshot and not decider.is_ready
    assert decision.fault == SNAPSHOT_NOT_LOADED
    assert decision.action == "deny"


async def test_refused_snapshot_keeps_the_previous_one() -> None:
    decider = Decider(RejectingEngine())
    first = make_snapshot()
    assert await decider.set_snapshot(first) is True

    assert await decider.set_snapshot(make_snapshot(twilio_status="revoked")) is False

    assert decider.snapshot is first
    decision = await decider.decide(make_call(), make_inspection("contact.phone_number"))
    assert decision.allow


async def test_decider_from_a_foreign_thread_fails_closed(embedded: EmbeddedEngine) -> None:
    decider = Decider(embedded)
    await decider.set_snapshot(make_snapshot())
    decisions = []

    def decide_elsewhere() -> None:
        decisions.append(
            asyncio.run(decider.decide(make_call(), make_inspection("contact.phone_number")))
        )

    worker = threading.Thread(target=decide_elsewhere)
    worker.start()
    worker.join(timeout=10)

    assert decisions[0].fault == ENGINE_ERROR
    assert not decisions[0].allow


# ---- OPA engine against a stand-in OPA server (its failure modes) ----


OPA_FAILURE = "storage_write_conflict_error: stand-in failure"


class StandInOpa:
    """An aiohttp server answering OPA's data API the way a broken or healthy OPA would."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.queries = 0
        self.pushed: list[Any] = []
        self.evaluator = EmbeddedEngine()

    async def query(self, request: web.Request) -> web.Response:
        self.queries += 1
        body = await request.json()
        if self.mode == "undefined":
            return web.json_response({})
        if self.mode == "error":
            return web.json_response({"code": "internal_error", "message": OPA_FAILURE}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(3)
        return web.json_response({"result": await self.evaluator.evaluate(body["input"])})


def _snapshot_from_policy_data(data: dict[str, Any]) -> Snapshot:
    return Snapshot(
        version=data["version"],
        revision=data["revision"],
        recipients=tuple(Recipient.from_data(r) for r in data["recipients"].values()),
        workloads=tuple(
            Workload.from_data(w) for names in data["workloads"].values() for w in names.values()
        ),
    )


@pytest.fixture
async def stand_in_opa() -> AsyncIterator[tuple[StandInOpa, str]]:
    opa = StandInOpa()
    app = web.Application()

    async def put_registry(request: web.Request) -> web.Response:
        data = await request.json()
        opa.pushed.append(data)
        if opa.mode == "error":
            return web.json_response({"code": "internal_error", "message": OPA_FAILURE}, status=500)
        await opa.evaluator.set_snapshot(_snapshot_from_policy_data(data))
        return web.Response(status=204)

    app.router.add_post("/v1/data/sharewall/egress/decision", opa.query)
    app.router.add_put("/v1/data/sharewall/registry", put_registry)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield opa, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_opa_engine_pushes_the_snapshot_and_returns_the_decision(
    stand_in_opa: tuple[StandInOpa, str],
) -> None:
    opa, url = stand_in_opa
    snapshot = make_snapshot()
    engine = OpaEngine(url, timeout=1.0)
    decider = Decider(engine)
    try:
        assert await decider.set_snapshot(snapshot)
        decision = await decider.decide(
            make_call(purpose="marketing"), make_inspection("contact.phone_number")
        )
    finally:
        await engine.close()
    assert opa.pushed == [snapshot.policy_data()]
    assert decision.reason_codes == ("MOBILE_INFO_FOR_MARKETING",)
    assert decision.fault is None


@pytest.mark.parametrize(
    ("mode", "fault"),
    [
        pytest.param("undefined", ENGINE_UNDEFINED, id="OPA answers {}"),
        pytest.param("error", ENGINE_ERROR, id="OPA answers 500"),
        pytest.param("slow", ENGINE_TIMEOUT, id="OPA too slow"),
    ],
)
async def test_failing_opa_gives_a_fault_decision(
    stand_in_opa: tuple[StandInOpa, str], mode: str, fault: str
) -> None:
    opa, url = stand_in_opa
    # Room for the client's one retry of a 500 (0.3 s backoff) but not for a 3 s answer.
    engine = OpaEngine(url, timeout=1.0)
    decider = Decider(engine)
    try:
        assert await decider.set_snapshot(make_snapshot())
        opa.mode = mode
        started = time.monotonic()
        decision = await decider.decide(make_call(), make_inspection("contact.phone_number"))
        elapsed = time.monotonic() - started
    finally:
        await engine.close()
    assert decision.fault == fault
    assert not decision.allow
    # Retries included, the engine's bound holds.
    assert elapsed < 2.5


async def test_unreachable_opa_is_an_engine_error_and_refuses_the_snapshot() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    engine = OpaEngine(f"http://127.0.0.1:{port}", timeout=0.5)
    decider = Decider(engine)
    try:
        assert await decider.set_snapshot(make_snapshot()) is False
        with pytest.raises(EngineError) as caught:
            await OpaEngine(f"http://127.0.0.1:{port}", push_data=False).evaluate({})
        assert caught.value.code == SNAPSHOT_NOT_LOADED
        decision = await decider.decide(make_call(), make_inspection())
    finally:
        await engine.close()
    assert decision.fault == SNAPSHOT_NOT_LOADED


async def test_opa_following_a_bundle_is_queried_without_a_push(
    stand_in_opa: tuple[StandInOpa, str],
) -> None:
    opa, url = stand_in_opa
    await opa.evaluator.set_snapshot(make_snapshot())  # as if OPA had loaded the bundle
    engine = OpaEngine(url, timeout=1.0, push_data=False)
    try:
        await engine.set_snapshot(make_snapshot())
        result = await engine.evaluate(policy_input(make_call(), make_inspection()))
    finally:
        await engine.close()
    assert opa.pushed == []
    assert result["allow"] is True


async def test_a_refused_push_is_an_engine_error_with_opas_message(
    stand_in_opa: tuple[StandInOpa, str],
) -> None:
    opa, url = stand_in_opa
    opa.mode = "error"
    engine = OpaEngine(url, timeout=1.0)
    try:
        with pytest.raises(EngineError) as caught:
            await engine.set_snapshot(make_snapshot())
    finally:
        await engine.close()
    assert caught.value.code == ENGINE_ERROR
    assert OPA_FAILURE in caught.value.detail
    assert not engine.is_ready


@pytest.mark.parametrize("url", ["ftp://opa.test/", "http://opa.test/v1/", "http://:8181"])
def test_an_opa_url_the_client_cannot_address_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="invalid OPA URL"):
        OpaEngine(url)


def test_the_opa_engine_is_opa_python_clients_and_loaded_only_when_chosen() -> None:
    """The design card's client (`opa_client.AsyncOpaClient`), which the embedded engine never
    loads: building an embedded engine imports neither it nor aiohttp; building the opa one does."""
    script = (
        "import sys\n"
        "from sharewall.cli import keep_unused_modules_out\n"
        "keep_unused_modules_out()\n"  # as `sharewall proxy` does first
        "from proxy.engines import create_engine\n"
        "create_engine('embedded')\n"
        "before = sorted(m for m in ('opa_client', 'aiohttp') if m in sys.modules)\n"
        "engine = create_engine('opa', opa_url='http://127.0.0.1:8181')\n"
        "from opa_client import AsyncOpaClient\n"
        "client = [v for v in vars(engine).values() if isinstance(v, AsyncOpaClient)]\n"
        "print(before, len(client), client[0].root_url)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["[]", "1", "http://127.0.0.1:8181/v1"]


def test_a_proxy_process_on_an_unreachable_opa_starts_and_refuses_calls_503(tmp_path) -> None:
    """`sharewall proxy --engine opa` (the real process, with what it keeps out of itself):
    it starts, is not ready and refuses every call 503 while OPA cannot take the snapshot."""
    import requests
    from proxy_harness import REGISTRY_YAML, ProxyProcess, free_port

    proxy = ProxyProcess(
        tmp_path,
        [
            "--registry-file",
            str(REGISTRY_YAML),
            "--engine",
            "opa",
            "--opa-url",
            f"http://127.0.0.1:{free_port()}",  # nothing listens there
        ],
    )
    try:
        with proxy.session() as http:
            answer = http.post(
                "http://api.twilio.com/2010-04-01/Messages.json",
                json={"To": "+6591234567"},
                timeout=10,
            )
        assert answer.status_code == 503, answer.text
        assert answer.json()["fault"] in {"snapshot_not_loaded", "engine_error"}
        with requests.Session() as admin:
            admin.trust_env = False  # the admin port directly, not through the proxy
            ready = admin.get(f"{proxy.admin_url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert proxy.lines_where(lambda line: line.get("event") == "engine.snapshot_rejected")
    finally:
        assert proxy.stop() == 0


# ---- the real OPA binary, when there is one: same table, same answers ----

OPA = shutil.which("opa")


@pytest.fixture(scope="module")
def opa_server() -> Iterator[str]:
    if OPA is None:
        pytest.skip("no opa binary on PATH")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policies = policy_dir()
    process = subprocess.Popen(
        [
            OPA,
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{port}",
            "--ignore=*_test.rego",
            str(policies),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("opa did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.opa
@pytest.mark.parametrize(("overrides", "categories", "problems", "codes"), DECISION_TABLE)
async def test_opa_and_embedded_engines_give_the_same_decisions(
    opa_server: str,
    embedded: EmbeddedEngine,
    overrides: dict[str, Any],
    categories: tuple[str, ...],
    problems: tuple[str, ...],
    codes: list[str],
) -> None:
    engine = OpaEngine(opa_server, timeout=2.0)
    try:
        await engine.set_snapshot(make_snapshot())
        document = policy_input(
            make_call(**overrides), make_inspection(*categories, problems=problems)
        )
        from_opa = await engine.evaluate(document)
    finally:
        await engine.close()
    assert from_opa == await embedded.evaluate(document)
    assert sorted({r["code"] for r in from_opa["reasons"]}) == codes


@pytest.mark.opa
def test_rego_unit_tests_pass_in_opa() -> None:
    if OPA is None:
        pytest.skip("no opa binary on PATH")
    result = subprocess.run(
        [OPA, "test", str(policy_dir())], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _bound_snapshot() -> Snapshot:
    """`make_snapshot()` with purposes bound to one workload (service delivery via Twilio only)."""
    workload = Workload(
        namespace="messaging",
        name="sms-gateway",
        status="approved",
        purposes=("service_delivery",),
        recipients=("twilio",),
    )
    return make_snapshot().replace(workloads=(workload,)).with_revision()


SOURCE_TABLE = [
    pytest.param({}, [], id="allow: the bound workload, its purpose, its recipient"),
    pytest.param(
        {"source_workload": "campaigns"},
        ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"],
        id="deny: unregistered workload",
    ),
    pytest.param(
        {"source_namespace": "marketing"},
        ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"],
        id="deny: same name in another namespace",
    ),
    pytest.param(
        {"source_workload": None, "source_namespace": None},
        ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"],
        id="deny: no source",
    ),
    pytest.param(
        {"purpose": "marketing"},
        ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"],
        id="deny: a purpose the recipient holds but the workload may not declare",
    ),
    pytest.param(
        {"recipient_id": "zendesk", "purpose": "service_delivery"},
        ["PURPOSE_NOT_ALLOWED_FOR_SOURCE", "PURPOSE_NOT_APPROVED"],
        id="deny: a recipient outside its list",
    ),
]


@pytest.mark.parametrize(("overrides", "codes"), SOURCE_TABLE)
async def test_decider_binds_purposes_to_the_calling_workload(
    overrides: dict[str, Any], codes: list[str]
) -> None:
    decider = Decider(EmbeddedEngine())
    assert await decider.set_snapshot(_bound_snapshot())
    # The allowed call first: a cached allow must not answer for another source.
    assert (await decider.decide(make_call(), make_inspection())).action == "allow"
    decision = await decider.decide(make_call(**overrides), make_inspection())
    assert sorted(decision.reason_codes) == codes
    assert decision.action == ("deny" if codes else "allow")


async def test_without_workloads_the_source_is_not_bound() -> None:
    decider = Decider(EmbeddedEngine())
    assert await decider.set_snapshot(make_snapshot())
    decision = await decider.decide(
        make_call(source_workload="anything", source_namespace=None, purpose="marketing"),
        make_inspection(),
    )
    assert decision.action == "allow"


async def test_opa_engine_pushes_the_workloads_too(stand_in_opa: tuple[StandInOpa, str]) -> None:
    opa, url = stand_in_opa
    snapshot = _bound_snapshot()
    engine = OpaEngine(url, timeout=1.0)
    decider = Decider(engine)
    try:
        assert await decider.set_snapshot(snapshot)
        decision = await decider.decide(make_call(source_workload="campaigns"), make_inspection())
    finally:
        await engine.close()
    assert opa.pushed[0]["workloads"]["messaging"]["sms-gateway"]["purposes"] == [
        "service_delivery"
    ]
    assert decision.reason_codes == ("PURPOSE_NOT_ALLOWED_FOR_SOURCE",)


def _many(statuses: dict[int, str]) -> Snapshot:
    """Twilio and friends, plus 300 vendors (more than the engine's working set holds)."""
    vendors = tuple(
        Recipient(
            id=f"vendor-{i:03d}",
            name=f"Vendor {i}",
            kind="vendor",
            status=statuses.get(i, "approved"),
            regions=("SG",),
            hosts=(f"api.vendor{i}.example",),
            grants=(Grant(purpose="service_delivery", categories=("contact.phone_number",)),),
        )
        for i in range(300)
    )
    base = make_snapshot()
    return base.replace(recipients=base.recipients + vendors).with_revision()


async def test_the_engine_decides_as_with_the_whole_registry_loaded() -> None:
    """The embedded engine loads the recipients asked about; the answers are the full data's."""
    from proxy.engines.embedded import WORKING_SET_LIMIT
    from sharewall.policy import PolicyEvaluator

    engine = EmbeddedEngine()
    asked = [*range(0, 300, 7), *range(WORKING_SET_LIMIT + 5)]
    try:
        for generation, snapshot in enumerate((_many({}), _many({7: "suspended", 14: "revoked"}))):
            await engine.set_snapshot(snapshot)
            whole = PolicyEvaluator(snapshot)
            for i in asked if generation else asked[:60]:
                for rid in (f"vendor-{i:03d}", "twilio", "nobody"):
                    document = policy_input(
                        make_call(recipient_id=rid), make_inspection("contact.phone_number")
                    )
                    assert await engine.evaluate(document) == whole.decide(document), rid
    finally:
        await engine.close()
