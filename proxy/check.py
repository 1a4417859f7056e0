"""Decide one described HTTP call offline: `sharewall check` and the corpus, through the proxy's pipeline.

The call is built into an `Exchange` by the same `new_exchange()` and decided by the same
`decide_exchange()` as a call the sidecar receives in absolute form: the URL is parsed by the
proxy's parser (`sharewall.hosts`), the headers are filtered as the proxy filters them
(`X-Sharewall-*`, `Proxy-Authorization`, hop-by-hop fields are neither sent nor inspected), the
body is cut at the inspection limit, and the policy sees the redacted path. `--purpose` plays
the sidecar's `--default-purpose`: an `X-Sharewall-Purpose` header, as in the proxy, wins.
Names are not resolved (offline); IP literals and `localhost` are checked as the proxy checks
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.decision import Decision
from proxy.exchange import Source, new_exchange
from proxy.inspect.model import DEFAULT_LIMITS, InspectionLimits
from proxy.pipeline import decide_exchange, offline_resolver
from sharewall.hosts import BadAuthority, Target, parse_url

if TYPE_CHECKING:  # the runtime import of these is not needed here
    from proxy.decide import Decider
    from sharewall.recipients import RecipientIndex

__all__ = ["CheckInputError", "Target", "check_call", "is_token", "parse_target"]

# RFC 9110 §5.6.2 token characters: what a method or a header name may be made of.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class CheckInputError(ValueError):
    """A described call that cannot be checked (bad URL, method or header); one-line message."""


def is_token(text: str) -> bool:
    """Whether `text` is a non-empty HTTP token (a valid method or header field name)."""
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def parse_target(url: str) -> Target:
    """Parse an absolute http(s) URL exactly as the proxy parses a request target."""
    try:
        return parse_url(url.strip())
    except BadAuthority as exc:
        raise CheckInputError(f"invalid URL {url!r}: {exc}") from None


async def check_call(
    decider: Decider,
    index: RecipientIndex,
    *,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    purpose: str | None,
    source_workload: str | None = None,
    source_namespace: str | None = None,
    limits: InspectionLimits = DEFAULT_LIMITS,
) -> Decision:
    """Decide one call as the proxy would; raise `CheckInputError` on bad input."""
    method = method.strip().upper()
    if not is_token(method):
        raise CheckInputError(f"invalid HTTP method {method!r}")
    target = parse_target(url)
    # The proxy reads the body up to the inspection limit and streams the rest uninspected.
    truncated = len(body) > limits.max_body_bytes
    ex = new_exchange(
        entry="check",
        method=method,
        scheme=target.scheme,
        host=target.host,
        port=target.port,
        path=target.path,
        raw_headers=list(headers),
        body=body[: limits.max_body_bytes] if truncated else body,
        body_truncated=truncated,
        index=index,
        source=Source(source_workload, source_namespace),
        default_purpose=purpose,
    )
    return await decide_exchange(ex, decider, resolver=offline_resolver(), limits=limits)
