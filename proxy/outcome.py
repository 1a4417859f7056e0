"""What happens to a decided call: the one mapping from decision, mode and faults to an outcome.

Report mode is one of the answers here (`WOULD_BLOCK`: the call is sent and logged as one the
policy denies), never a branch in a transport. Every refusal is rendered from its outcome by
`proxy.responses.rejection()` (Smokescreen's `rejectResponse`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.decision import Decision

# Proxy-side destination denials: they stay refused in report mode, since there is no checked
# address to connect to (or the app connected somewhere its name does not lead).
DESTINATION_CODES = frozenset(
    {"DESTINATION_FORBIDDEN", "DESTINATION_MISMATCH", "DESTINATION_UNIDENTIFIED"}
)


class Outcome(StrEnum):
    """What happens to a decided call."""

    FORWARD = "forward"  # allowed: sent upstream
    WOULD_BLOCK = "would_block"  # denied by the policy in report mode: sent, and logged as such
    BLOCK = "block"  # denied: 403 egress_blocked
    UNAVAILABLE = "unavailable"  # a fault inside sharewall: 503 egress_unavailable
    UNREACHABLE = "unreachable"  # decided to go, but the name did not resolve: 502

    @property
    def is_sent(self) -> bool:
        """The call goes upstream."""
        return self in SENT

    @property
    def is_refused_by_us(self) -> bool:
        """sharewall itself refused the call (recorded as a deny whatever the mode)."""
        return self in _REFUSED_BY_US


# The members as module names for what runs every call: in Python 3.11 `Outcome.FORWARD` goes
# through `EnumType.__getattr__` (~1.4k instructions; a call reads members about seven times).
_FORWARD = Outcome.FORWARD
_WOULD_BLOCK = Outcome.WOULD_BLOCK
_BLOCK = Outcome.BLOCK
_UNAVAILABLE = Outcome.UNAVAILABLE
_UNREACHABLE = Outcome.UNREACHABLE
# The outcomes that go upstream (`is_sent`), for a hot caller that tests `in SENT` itself.
SENT = (_FORWARD, _WOULD_BLOCK)  # a tuple: `in` compares identities (an Enum's hash is Python)
_REFUSED_BY_US = (_BLOCK, _UNAVAILABLE)
# The outcomes sharewall refuses itself (`is_refused_by_us`), for a hot caller, as `SENT`.
REFUSED_BY_US = _REFUSED_BY_US


def outcome_of(decision: Decision, *, mode: str, has_destination: bool) -> Outcome:
    """Map a decision, the proxy's mode and whether a checked address exists to the outcome.

    A fault fails closed in every mode (report mode relaxes the policy, never the proxy); a
    destination denial (`DESTINATION_CODES`) stays a block in report mode.
    """
    # Fields, not `Decision`'s properties, and no `reason_codes` tuple: this runs every call.
    if decision.fault is not None:
        return _UNAVAILABLE
    denied = decision.action != "allow"
    if denied:
        if mode != "report":
            return _BLOCK
        for reason in decision.reasons:
            if reason.code in DESTINATION_CODES:
                return _BLOCK
    if not has_destination:
        return _UNREACHABLE
    return _WOULD_BLOCK if denied else _FORWARD


# The status a refusal answers with (a sent call's status is the upstream's).
REFUSAL_STATUS = {Outcome.BLOCK: 403, Outcome.UNAVAILABLE: 503, Outcome.UNREACHABLE: 502}
