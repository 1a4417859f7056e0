"""The decision corpus: every realistic call in tests/corpus/ gets the decision a reviewer expects.

Each case goes through `proxy.check.check_call` (the path `sharewall check` uses) on the
embedded engine with the sample registry `examples/registry.yaml`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from sharewall.registry_file import load_registry_file
from sharewall.taxonomy import load_taxonomy

_REPORT_PATH = Path(__file__).resolve().parent.parent / "bench" / "corpus_report.py"


def _load_corpus_module():
    # The loader lives beside the precision/recall report so both read the cases one way.
    spec = importlib.util.spec_from_file_location("corpus_report", _REPORT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("corpus_report", module)
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus_module()
CASES = corpus.load_cases()
# Reason codes that `check` can never produce: it always inspects, and it cannot describe a
# transparently captured connection (what it connected to). It does check destinations as the
# proxy does (an IP literal or a localhost name is DESTINATION_FORBIDDEN), without DNS.
# PURPOSE_NOT_ALLOWED_FOR_SOURCE needs a registry that declares workloads, which the sample does
# not: tests/test_corpus_workloads.py exercises it.
_NOT_REACHABLE_BY_CHECK = {
    "UNINSPECTED_HIGH_RISK",
    "DESTINATION_MISMATCH",
    "DESTINATION_UNIDENTIFIED",
    "PURPOSE_NOT_ALLOWED_FOR_SOURCE",
}


@pytest.fixture(scope="module")
def decisions() -> dict:
    """Every case decided once, on one engine and one snapshot (as one `check` run would)."""
    return asyncio.run(corpus.decide_cases(CASES))


def test_corpus_is_large_and_uses_only_taxonomy_ids() -> None:
    taxonomy = load_taxonomy()
    assert len(CASES) >= 60
    for case in CASES:
        assert case.expect.action in {"allow", "deny"}, case.id
        assert (case.expect.action == "allow") == (not case.expect.reasons), case.id
        assert all(taxonomy.is_reason_code(r) for r in case.expect.reasons), case.id
        assert all(taxonomy.is_category(c) for c in case.expect.categories), case.id
        assert case.purpose is None or case.purpose == "sales" or taxonomy.is_purpose(case.purpose)


def test_corpus_exercises_every_reason_code_check_can_produce() -> None:
    expected = set().union(*(case.expect.reasons for case in CASES))
    reachable = set(load_taxonomy().reason_codes) - _NOT_REACHABLE_BY_CHECK
    assert reachable - expected == set()


def test_corpus_has_traps_that_carry_no_personal_data() -> None:
    clean_allows = [c for c in CASES if c.expect.action == "allow" and not c.expect.categories]
    assert len(clean_allows) >= 15


def test_sample_registry_has_every_kind_and_status() -> None:
    snapshot = load_registry_file(corpus.SAMPLE_REGISTRY)
    taxonomy = load_taxonomy()
    assert {r.kind for r in snapshot.recipients} == set(taxonomy.recipient_kinds)
    assert {r.status for r in snapshot.recipients} == set(taxonomy.recipient_statuses)
    assert any(r.tls_origination for r in snapshot.recipients)
    assert any(
        r.kind in taxonomy.high_risk_kinds and not r.inspect_tls for r in snapshot.recipients
    )


async def test_sample_registry_has_a_tunnel_only_high_risk_recipient() -> None:
    # `check` always inspects, so the proxy's plain CONNECT tunnel is decided here directly.
    from proxy.decide import Decider
    from proxy.decision import Call
    from proxy.engines import create_engine
    from proxy.inspect.model import Inspection
    from sharewall.recipients import RecipientIndex

    snapshot = load_registry_file(corpus.SAMPLE_REGISTRY)
    recipient = RecipientIndex(snapshot).resolve("ingest.qwiqi-labs.example", 443)
    assert recipient is not None and not recipient.inspect_tls
    engine = create_engine("embedded")
    try:
        decider = Decider(engine)
        assert await decider.set_snapshot(snapshot)
        tunnel = Call(
            method="CONNECT",
            scheme="https",
            host="ingest.qwiqi-labs.example",
            port=443,
            path="",
            inspected=False,
            tls_upstream=True,
            recipient_id=recipient.id,
            purpose="service_improvement",
        )
        decision = await decider.decide(tunnel, Inspection())
    finally:
        await engine.close()
    assert (decision.action, decision.reason_codes) == ("deny", ("UNINSPECTED_HIGH_RISK",))


_CASE_PARAMS = [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", _CASE_PARAMS)
def test_case_gets_the_expected_decision(case, decisions) -> None:
    decision = decisions[case.id]
    assert decision.fault is None
    assert (decision.action, set(decision.reason_codes)) == (
        case.expect.action,
        set(case.expect.reasons),
    ), case.description


@pytest.mark.parametrize("case", _CASE_PARAMS)
def test_case_finds_exactly_the_expected_categories(case, decisions) -> None:
    assert set(decisions[case.id].categories) == set(case.expect.categories), case.description
