"""Purposes bound to workloads, on realistic calls: tests/corpus/workloads/ decided through
`proxy.check.check_call` (the path `sharewall check` uses) against examples/registry-workloads.yaml.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from sharewall.registry_file import load_registry_file

_REPORT_PATH = Path(__file__).resolve().parent.parent / "bench" / "corpus_report.py"


def _corpus_module():
    # The corpus loader of tests/test_corpus.py (bench/corpus_report.py), loaded once.
    if "corpus_report" not in sys.modules:
        spec = importlib.util.spec_from_file_location("corpus_report", _REPORT_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["corpus_report"] = module
        spec.loader.exec_module(module)
    return sys.modules["corpus_report"]


corpus = _corpus_module()
WORKLOADS_REGISTRY = corpus.ROOT / "examples" / "registry-workloads.yaml"
CASES = corpus.load_cases(corpus.CORPUS_DIR / "workloads")
CODE = "PURPOSE_NOT_ALLOWED_FOR_SOURCE"


@pytest.fixture(scope="module")
def bound() -> dict:
    return asyncio.run(corpus.decide_cases(CASES, registry_file=WORKLOADS_REGISTRY))


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same calls against the same registry without its `workloads:` list."""
    doc = yaml.safe_load(WORKLOADS_REGISTRY.read_text())
    del doc["workloads"]
    path = tmp_path_factory.mktemp("unbound") / "registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    return asyncio.run(corpus.decide_cases(CASES, registry_file=path))


def test_workloads_example_binds_sources() -> None:
    bound = load_registry_file(WORKLOADS_REGISTRY)
    assert bound.is_source_bound
    assert {w.status for w in bound.workloads} == {"approved", "suspended", "proposed"}
    assert any(w.recipients is None for w in bound.workloads)
    assert not load_registry_file(corpus.SAMPLE_REGISTRY).is_source_bound


def test_corpus_exercises_source_binding_both_ways() -> None:
    assert len(CASES) >= 10
    assert sum(CODE in c.expect.reasons for c in CASES) >= 6
    assert sum(c.expect.action == "allow" for c in CASES) >= 3


_CASE_PARAMS = [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", _CASE_PARAMS)
def test_case_gets_the_expected_decision(case, bound) -> None:
    decision = bound[case.id]
    assert decision.fault is None
    assert (decision.action, set(decision.reason_codes)) == (
        case.expect.action,
        set(case.expect.reasons),
    ), case.description
    assert set(decision.categories) == set(case.expect.categories), case.description


@pytest.mark.parametrize("case", _CASE_PARAMS)
def test_without_workloads_the_source_changes_nothing(case, unbound) -> None:
    # Today's behaviour: without workloads every case is decided as if source binding did not
    # exist, i.e. the expected reasons minus the source one.
    decision = unbound[case.id]
    expected = set(case.expect.reasons) - {CODE}
    assert set(decision.reason_codes) == expected, case.description
    assert decision.action == ("deny" if expected else "allow")
