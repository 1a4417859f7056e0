"""Decider: decisions through the real regorus engine, the decision cache, grant expiry."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from call_facts import make_call

from proxy.decide import DESTINATION_FORBIDDEN, Decider, destination_forbidden
from proxy.decision import Call
from proxy.decision_cache import DecisionCache, inspection_key
from proxy.engines.embedded import EmbeddedEngine
from proxy.http1 import Source
from proxy.inspect.model import MALFORMED_JSON, TIMED_OUT, Finding, Inspection
from sharewall.snapshot import Grant, Recipient, Snapshot
from sharewall.taxonomy import load_taxonomy


def make_snapshot(
    *categories: str, expires: str | None = None, status: str = "approved"
) -> Snapshot:
    """One CPaaS recipient in Singapore with one service_delivery grant of `categories`."""
    twilio = Recipient(
        id="twilio",
        name="Twilio Inc.",
        kind="ott_provider",
        status=status,
        regions=("SG",),
        hosts=("api.twilio.com",),
        grants=(
            Grant(
                purpose="service_delivery",
                categories=categories or ("contact.phone_number", "comms.content"),
                expires=expires,
            ),
        ),
    )
    return Snapshot(version=1, recipients=(twilio,)).with_revision()


def make_inspection(*categories: str, location: str = "form:To", problems=()) -> Inspection:
    return Inspection(
        findings=tuple(Finding(c, f"{location}.{i}", "test") for i, c in enumerate(categories)),
        problems=tuple(problems),
    )


@pytest.fixture
async def decider() -> Decider:
    decider = Decider(EmbeddedEngine())
    assert await decider.set_snapshot(make_snapshot())
    return decider


async def test_allowed_call_carries_its_facts(decider: Decider) -> None:
    inspection = make_inspection(
        "contact.phone_number", "comms.content", "contact.phone_number", problems=[MALFORMED_JSON]
    )
    decision = await decider.decide(make_call(), inspection)

    assert decision.allow and decision.action == "allow" and decision.fault is None
    assert decision.reasons == ()
    assert decision.categories == ("comms.content", "contact.phone_number")
    assert decision.findings == inspection.findings
    assert decision.problems == (MALFORMED_JSON,)
    assert (decision.recipient_id, decision.purpose) == ("twilio", "service_delivery")
    assert len(decision.decision_id) == 32


async def test_denied_call_has_reasons_with_taxonomy_messages(decider: Decider) -> None:
    decision = await decider.decide(
        make_call(), make_inspection("contact.phone_number", problems=[TIMED_OUT])
    )
    assert decision.action == "deny" and not decision.allow and decision.fault is None
    assert decision.reason_codes == ("INSPECTION_INCOMPLETE",)
    assert decision.reasons[0].message == load_taxonomy().reason_codes["INSPECTION_INCOMPLETE"]


async def test_same_facts_hit_the_cache_with_a_fresh_decision_id(decider: Decider) -> None:
    first = await decider.decide(make_call(), make_inspection("contact.phone_number"))
    # Different request id, host, path, method and finding locations: same decision facts.
    second = await decider.decide(
        make_call(host="eu.api.twilio.com", path="/other", method="PUT"),
        make_inspection("contact.phone_number", location="json:$.to"),
    )

    assert (decider.cache_misses, decider.cache_hits) == (1, 1)
    assert second.decision_id != first.decision_id
    assert second.action == first.action and second.reasons == first.reasons
    assert second.findings[0].location.startswith("json:$.to")


@pytest.mark.parametrize(
    ("call_overrides", "categories", "problems", "allowed"),
    [
        pytest.param({}, ("contact.email",), (), False, id="other categories"),
        pytest.param(
            {"purpose": "marketing"}, ("contact.phone_number",), (), False, id="other purpose"
        ),
        pytest.param(
            {"recipient_id": None}, ("contact.phone_number",), (), False, id="other recipient"
        ),
        pytest.param(
            {"source_workload": "billing"}, ("contact.phone_number",), (), True, id="other source"
        ),
        pytest.param(
            {"tls_upstream": False}, ("contact.phone_number",), (), False, id="no tls upstream"
        ),
        pytest.param({"inspected": False}, ("contact.phone_number",), (), True, id="not inspected"),
        pytest.param(
            {}, ("contact.phone_number",), (TIMED_OUT,), False, id="incomplete inspection"
        ),
    ],
)
async def test_different_decision_facts_miss_the_cache(
    decider: Decider,
    call_overrides: dict[str, Any],
    categories: tuple[str, ...],
    problems: tuple[str, ...],
    allowed: bool,
) -> None:
    first = await decider.decide(make_call(), make_inspection("contact.phone_number"))
    other = await decider.decide(
        make_call(**call_overrides), make_inspection(*categories, problems=problems)
    )

    assert (decider.cache_misses, decider.cache_hits) == (2, 0)
    assert first.allow
    assert other.allow is allowed


async def test_new_snapshot_empties_the_cache_and_changes_the_decision(decider: Decider) -> None:
    call, inspection = make_call(), make_inspection("contact.phone_number")
    assert (await decider.decide(call, inspection)).allow
    assert len(decider.cache) == 1

    assert await decider.set_snapshot(make_snapshot(status="suspended"))

    assert len(decider.cache) == 0
    decision = await decider.decide(call, inspection)
    assert decision.reason_codes == ("RECIPIENT_INACTIVE",)
    assert decider.cache_hits == 0


async def test_same_snapshot_revision_keeps_the_cache(decider: Decider) -> None:
    call, inspection = make_call(), make_inspection("contact.phone_number")
    await decider.decide(call, inspection)

    assert await decider.set_snapshot(make_snapshot())  # same content, same revision

    await decider.decide(call, inspection)
    assert decider.cache_hits == 1


@pytest.mark.parametrize(
    ("now", "codes"),
    [
        pytest.param(datetime(2026, 6, 30, 23, 59, tzinfo=UTC), (), id="last valid day"),
        pytest.param(
            datetime(2026, 7, 1, 0, 0, tzinfo=UTC), ("PURPOSE_NOT_APPROVED",), id="day after"
        ),
    ],
)
async def test_grant_expiry_follows_now(now: datetime, codes: tuple[str, ...]) -> None:
    decider = Decider(EmbeddedEngine())
    await decider.set_snapshot(make_snapshot("contact.phone_number", expires="2026-06-30"))
    call, inspection = make_call(), make_inspection("contact.phone_number")

    decision = await decider.decide(call, inspection, now=now)

    assert decision.reason_codes == codes


async def test_cached_decision_does_not_outlive_its_day() -> None:
    decider = Decider(EmbeddedEngine())
    await decider.set_snapshot(make_snapshot("contact.phone_number", expires="2026-06-30"))
    call, inspection = make_call(), make_inspection("contact.phone_number")

    on_last_day = await decider.decide(call, inspection, now=datetime(2026, 6, 30, 12, tzinfo=UTC))
    next_day = await decider.decide(call, inspection, now=datetime(2026, 7, 1, 12, tzinfo=UTC))

    assert on_last_day.allow
    assert next_day.reason_codes == ("PURPOSE_NOT_APPROVED",)


async def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    decider = Decider(EmbeddedEngine(), cache_size=2)
    await decider.set_snapshot(make_snapshot())
    phone, content, email = (
        make_inspection("contact.phone_number"),
        make_inspection("comms.content"),
        make_inspection("contact.email"),
    )
    call = make_call()
    await decider.decide(call, phone)
    await decider.decide(call, content)
    await decider.decide(call, phone)  # phone is now the most recently used
    await decider.decide(call, email)  # evicts content

    assert len(decider.cache) == 2
    await decider.decide(call, phone)
    assert decider.cache_hits == 2
    await decider.decide(call, content)
    assert decider.cache_misses == 4


class GatedEngine(EmbeddedEngine):
    """The real engine, holding each evaluation until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        result = await super().evaluate(policy_input)
        await self.gate.wait()
        return result


async def test_verdict_computed_before_a_snapshot_change_is_not_cached() -> None:
    engine = GatedEngine()
    decider = Decider(engine)
    await decider.set_snapshot(make_snapshot())
    call, inspection = make_call(), make_inspection("contact.phone_number")

    pending = asyncio.create_task(decider.decide(call, inspection))
    await asyncio.sleep(0)
    await decider.set_snapshot(make_snapshot(status="revoked"))
    engine.gate.set()
    await pending

    assert len(decider.cache) == 0
    assert (await decider.decide(call, inspection)).reason_codes == ("RECIPIENT_INACTIVE",)


def test_destination_forbidden_is_a_deny_with_the_taxonomy_message() -> None:
    call = make_call(host="metadata.internal", port=80)

    decision = destination_forbidden(call, "169.254.169.254")

    assert decision.action == "deny" and not decision.allow and decision.fault is None
    assert decision.reason_codes == (DESTINATION_FORBIDDEN,)
    assert decision.reasons[0].message == load_taxonomy().reason_codes[DESTINATION_FORBIDDEN]
    assert "169.254" not in decision.reasons[0].message
    assert decision.recipient_id == "twilio"
    assert decision.decision_id == call.request_id  # the call's one id


def test_cache_reset_with_an_empty_revision_always_clears() -> None:
    cache: DecisionCache[str] = DecisionCache(8)
    key = inspection_key(make_call(), make_inspection(), "2026-06-01")
    cache.reset("")
    cache.put(key, "verdict")
    cache.reset("")  # an unrevisioned snapshot may differ from the last one
    assert cache.get(key) is None
    cache.reset("abc")
    cache.put(key, "verdict")
    cache.reset("abc")
    assert cache.get(key) == "verdict"


def test_the_most_recently_used_entry_answers_as_any_other() -> None:
    """A hit on the newest entry (kept apart: nothing to move) answers its current value,
    counts as a hit, and leaves the least recently used order as a plain LRU has it."""
    cache: DecisionCache[str] = DecisionCache(2)
    a, b, c = (
        inspection_key(make_call(), make_inspection(*categories), "2026-06-01")
        for categories in (("contact.phone_number",), ("comms.content",), ("contact.email",))
    )
    cache.put(a, "a1")
    assert cache.get(a) == cache.get(a) == "a1"
    cache.put(a, "a2")  # stored again: the newest's value is the new one
    assert cache.get(a) == "a2"
    cache.put(b, "b")
    assert cache.get(a) == "a2"  # a moves back to the end: b is now the least recently used
    assert cache.get(a) == "a2"
    cache.put(c, "c")  # evicts b
    assert (cache.get(b), cache.get(a), cache.get(c)) == (None, "a2", "c")
    assert (cache.hits, cache.misses) == (7, 1)
    cache.put(a, "stale", generation=cache.generation - 1)  # dropped: c stays the newest
    assert cache.get(c) == "c" and cache.get(a) == "a2"
    cache.reset("next")
    assert cache.get(a) is None and cache.get(c) is None


async def test_an_inspector_error_is_a_fault_not_a_policy_denial(decider: Decider) -> None:
    from proxy.inspect.model import INSPECTOR_ERROR

    decision = await decider.decide(
        make_call(), make_inspection("contact.phone_number", problems=[INSPECTOR_ERROR])
    )
    assert decision.fault == INSPECTOR_ERROR
    assert decision.unavailable and not decision.allow
    assert decision.reasons == ()
    assert decision.problems == (INSPECTOR_ERROR,)


def test_calls_and_decisions_are_frozen_values_whichever_way_they_are_built() -> None:
    """Their fast `__init__` keeps the dataclass's contract: defaults, equality, hash, frozen."""
    import dataclasses

    from proxy.decision import Decision, decision_of_fields

    call = make_call()
    same = make_call(request_id=call.request_id)
    assert call == same and hash(call) == hash(same)
    assert make_call().request_id != call.request_id  # the default factory runs per call
    positional = Call(*(getattr(call, f.name) for f in dataclasses.fields(Call)))
    assert positional == call
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.host = "elsewhere.example"  # type: ignore[misc]

    decision = Decision("d1", "deny")
    assert (decision.reasons, decision.fault, decision.complete) == ((), None, None)
    faulted = dataclasses.replace(decision, fault="spool_unavailable")
    assert faulted.decision_id == "d1" and faulted.fault == "spool_unavailable"
    assert decision.fault is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.action = "allow"  # type: ignore[misc]

    # The cache hit's maker: every field by position, the same frozen value as the class's.
    every = ("d2", "deny", (), "twilio", "marketing", ("contact.phone_number",), (), (), None,
             "https", True, True)  # fmt: skip
    made = decision_of_fields(*every)
    assert type(made) is Decision
    assert made == Decision(*every) and hash(made) == hash(Decision(*every))
    assert tuple(getattr(made, f.name) for f in dataclasses.fields(Decision)) == every
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.action = "allow"  # type: ignore[misc]


def _exchange(**overrides: Any) -> Any:
    """An exchange of the Twilio call (absolute-form, resolved against the test snapshot)."""
    from proxy.exchange import Source, new_exchange
    from sharewall.recipients import RecipientIndex

    facts: dict[str, Any] = {
        "entry": "forward",
        "method": "POST",
        "scheme": "https",
        "host": "api.twilio.com",
        "port": 443,
        "path": "/2010-04-01/Accounts/AC1/Messages.json?To=%2B6591234567",
        "raw_headers": [("Content-Type", "application/json")],
        "index": RecipientIndex(make_snapshot()),
        "source": Source("sms-gateway", "messaging"),
        "default_purpose": "service_delivery",
    }
    facts.update(overrides)
    return new_exchange(**facts)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="allowed"),
        pytest.param({"scheme": "http", "port": 80}, id="cleartext"),
        pytest.param({"host": "example.com"}, id="no recipient"),
        pytest.param({"default_purpose": "marketing"}, id="other purpose"),
        pytest.param({"source": Source(None, None)}, id="no source"),
        pytest.param({"entry": "connect", "method": "CONNECT", "path": ""}, id="spliced"),
    ],
)
@pytest.mark.parametrize("categories", [(), ("contact.phone_number", "comms.content")])
async def test_a_cached_answer_is_what_decide_answers_on_a_hit(
    decider: Decider, overrides: dict[str, Any], categories: tuple[str, ...]
) -> None:
    """`Decider.cached(ex, ...)` reads the key of `decide(ex.call(), ...)` from the exchange."""
    ex, inspection = _exchange(**overrides), make_inspection(*categories)
    assert decider.cached(ex, inspection) is None  # nothing cached yet, no miss counted
    assert (decider.cache_hits, decider.cache_misses) == (0, 0)
    first = await decider.decide(ex.call(), inspection)  # the miss: the engine's answer
    on_hit = await decider.decide(ex.call(), inspection)
    cached = decider.cached(ex, inspection)

    assert (decider.cache_hits, decider.cache_misses) == (2, 1)
    assert cached == on_hit == first
    other = _exchange(**overrides)  # another call, the same facts: its own decision id
    assert decider.cached(other, inspection) == replace(first, decision_id=other.decision_id)


async def test_cached_leaves_problems_and_a_missing_snapshot_to_decide(decider: Decider) -> None:
    ex = _exchange()
    incomplete = make_inspection("contact.phone_number", problems=[TIMED_OUT])
    await decider.decide(ex.call(), incomplete)
    await decider.decide(ex.call(), incomplete)
    assert decider.cache_hits == 1
    assert decider.cached(ex, incomplete) is None  # decide() answers, from its cache

    assert Decider(EmbeddedEngine()).cached(ex, make_inspection()) is None
