"""What happens to a decided call: one table of decision x mode x destination -> outcome."""

from __future__ import annotations

import pytest

from proxy.decision import Decision, Reason
from proxy.outcome import REFUSAL_STATUS, Outcome, outcome_of

ALLOW = Decision(decision_id="d", action="allow")
DENY = Decision(
    decision_id="d", action="deny", reasons=(Reason("CATEGORY_NOT_APPROVED", "m", "x"),)
)
FAULT = Decision(decision_id="d", action="deny", fault="engine_timeout")
FORBIDDEN = Decision(
    decision_id="d", action="deny", reasons=(Reason("DESTINATION_FORBIDDEN", "m"),)
)
MISMATCH = Decision(decision_id="d", action="deny", reasons=(Reason("DESTINATION_MISMATCH", "m"),))


@pytest.mark.parametrize(
    ("decision", "mode", "has_destination", "expected"),
    [
        pytest.param(ALLOW, "enforce", True, Outcome.FORWARD, id="allowed: forwarded"),
        pytest.param(ALLOW, "report", True, Outcome.FORWARD, id="allowed in report mode"),
        pytest.param(DENY, "enforce", True, Outcome.BLOCK, id="denied: blocked"),
        pytest.param(DENY, "report", True, Outcome.WOULD_BLOCK, id="report mode: would-block"),
        pytest.param(DENY, "enforce", False, Outcome.BLOCK, id="blocked whatever DNS says"),
        pytest.param(FAULT, "enforce", True, Outcome.UNAVAILABLE, id="fault: 503"),
        pytest.param(FAULT, "report", True, Outcome.UNAVAILABLE, id="fault fails closed in report"),
        pytest.param(FORBIDDEN, "report", False, Outcome.BLOCK, id="forbidden stays in report"),
        pytest.param(MISMATCH, "report", True, Outcome.BLOCK, id="mismatch stays in report"),
        pytest.param(ALLOW, "enforce", False, Outcome.UNREACHABLE, id="allowed, unresolved: 502"),
        pytest.param(DENY, "report", False, Outcome.UNREACHABLE, id="would-block, unresolved"),
    ],
)
def test_outcome_of(decision: Decision, mode: str, has_destination: bool, expected: Outcome):
    outcome = outcome_of(decision, mode=mode, has_destination=has_destination)
    assert outcome is expected
    assert outcome.is_sent == (expected in (Outcome.FORWARD, Outcome.WOULD_BLOCK))
    if not outcome.is_sent:
        assert REFUSAL_STATUS[outcome] in (403, 502, 503)
