"""Decide one described HTTP call offline: the path shared by `sharewall check` and the corpus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxy.decision import Call, Decision
from proxy.inspect import inspect_call
from proxy.inspect.model import DEFAULT_LIMITS, InspectionLimits

if TYPE_CHECKING:  # the runtime import of these is not needed here
    from proxy.decide import Decider
    from sharewall.recipients import RecipientIndex

DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 §5.6.2 token characters: what a method or a header name may be made of.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class CheckInputError(ValueError):
    """A described call that cannot be checked (bad URL, method or header); one-line message."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points: scheme, host (lower-case, no brackets), port and path with query."""

    scheme: str
    host: str
    port: int
    path: str


def is_token(text: str) -> bool:
    """Whether `text` is a non-empty HTTP token (a valid method or header field name)."""
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def parse_target(url: str) -> Target:
    """Split an absolute http(s) URL into the parts the policy input needs."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise CheckInputError(f"URL must be absolute http:// or https://, got {url!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CheckInputError(f"URL has no host: {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise CheckInputError(f"URL has an invalid port: {url!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=scheme, host=host, port=port, path=path)


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
    """Resolve, inspect and decide one call as the proxy would; raise `CheckInputError` on bad input.

    The call is always inspected (the payload is given); bytes leave over TLS when the URL is
    https or the recipient has `tls_origination` (the proxy upgrades plain HTTP for it).
    """
    method = method.strip().upper()
    if not is_token(method):
        raise CheckInputError(f"invalid HTTP method {method!r}")
    target = parse_target(url)
    recipient = index.resolve(target.host, target.port)
    inspection = inspect_call(method, url, list(headers), body, limits=limits)
    call = Call(
        method=method,
        scheme=target.scheme,
        host=target.host,
        port=target.port,
        path=target.path,
        inspected=True,
        tls_upstream=target.scheme == "https"
        or (recipient is not None and recipient.tls_origination),
        recipient_id=recipient.id if recipient is not None else None,
        purpose=purpose,
        source_workload=source_workload,
        source_namespace=source_namespace,
    )
    return await decider.decide(call, inspection)
