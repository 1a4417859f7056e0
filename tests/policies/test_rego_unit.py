"""Run every Rego unit test (`test_*` rules in `*_test.rego`) through the real regorus engine."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import regorus

from sharewall.taxonomy import TAXONOMY_RELPATH, load_taxonomy, policy_dir

POLICY_DIR = policy_dir()
# Decided by the proxy before the policy runs, so it has no Rego rule and no Rego test.
DECIDED_IN_PYTHON = {"DESTINATION_FORBIDDEN", "DESTINATION_MISMATCH", "DESTINATION_UNIDENTIFIED"}

_PACKAGE_RE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE_RE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


def _test_files() -> list[Path]:
    return sorted(POLICY_DIR.rglob("*_test.rego"))


def _policy_files() -> list[Path]:
    return sorted(POLICY_DIR.rglob("*.rego"))


def _discover() -> list[tuple[str, str]]:
    """(package, rule) of every `test_*` rule, found by reading the test files."""
    found = []
    for path in _test_files():
        text = path.read_text()
        package = _PACKAGE_RE.search(text)
        assert package, f"{path}: no package line"
        found.extend(
            (package.group(1), rule) for rule in dict.fromkeys(_TEST_RULE_RE.findall(text))
        )
    return found


TESTS = _discover()


@pytest.fixture(scope="module")
def engine() -> regorus.Engine:
    engine = regorus.Engine()
    for path in _policy_files():
        engine.add_policy_from_file(str(path))
    taxonomy = orjson.loads((POLICY_DIR / TAXONOMY_RELPATH).read_bytes())
    engine.add_data_json(orjson.dumps({"sharewall": {"taxonomy": taxonomy}}).decode())
    return engine


def test_rego_tests_are_discovered() -> None:
    assert len(TESTS) >= 24, TESTS


@pytest.mark.parametrize(("package", "rule"), TESTS, ids=[f"{p}.{r}" for p, r in TESTS])
def test_rego_unit_test_passes(engine: regorus.Engine, package: str, rule: str) -> None:
    result = engine.eval_rule_as_json(f"data.{package}.{rule}")
    assert orjson.loads(result) is True, f"{package}.{rule} evaluated to {result}"


def test_every_reason_code_has_a_firing_and_a_non_firing_rego_test() -> None:
    """Each policy reason code is named by a `test_deny_…` test and checked by some `test_allow_…`."""
    sources = "\n".join(path.read_text() for path in _test_files())
    rules = [rule for _, rule in TESTS]
    missing = []
    for code in load_taxonomy().reason_codes:
        if code in DECIDED_IN_PYTHON:
            continue
        slug = code.lower()
        if not any(r.startswith("test_deny_") and slug in r for r in rules):
            missing.append(f"{code}: no test_deny_…{slug}…")
        if not any(r.startswith("test_allow_") and slug in r for r in rules):
            missing.append(f"{code}: no test_allow_…{slug}…")
        if f'"{code}"' not in sources:
            missing.append(f"{code}: never expected in a decision")
    assert not missing, missing


def test_a_failing_rego_test_is_reported_as_failing(engine: regorus.Engine) -> None:
    """The runner itself: a wrong expectation must not pass as true."""
    engine = engine.clone()
    engine.add_policy(
        "probe_test.rego",
        "package sharewall.probe_test\n"
        "test_deny_probe if { data.sharewall.egress.decision.allow with input as {} }\n",
    )
    result = engine.eval_rule_as_json("data.sharewall.probe_test.test_deny_probe")
    assert orjson.loads(result) is not True
