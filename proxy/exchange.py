"""One outbound call from the moment it is named to its outcome: the `Exchange` (mitmproxy's flow).

Lifecycle of an exchange, whichever way the call entered (absolute-form HTTP, CONNECT spliced
or intercepted, transparent capture, `sharewall check`):

1. **Named and built** by `new_exchange()` (the one constructor): the entry point gives the
   target (scheme, host, port, path), the client's raw headers and the body prefix it read;
   the builder filters the headers (exactly what goes upstream is what is inspected), picks the
   purpose (`X-Sharewall-Purpose`, else the CONNECT's, else the default), finds the recipient
   and works out whether the bytes leave over TLS (`tls_upstream`, TLS origination).
2. **Decided** by `proxy.pipeline.decide_exchange()`: destination check (resolved once, the
   checked address kept in `destination`), inspection, policy; sets `inspection`, `decision`
   and the timings. It never raises for a fault: a fault is a decision.
3. **Given an outcome** by `proxy.pipeline.outcome_of()`: forward, would-block (forward in
   report mode, logged), block (403), unavailable (503), unreachable (502). Report mode lives
   there, not in the transport.
4. **Carried out** by the entry point: a refusal is first made durable by
   `proxy.pipeline.commit_refusal()` (its record fsync'd to the spool; a spool that cannot
   take it turns the refusal into a 503), then `proxy.responses.rejection()` is written to
   the client; a forward goes to `proxy.upstream` (HTTP) or `proxy.tunnel` (splice). The entry
   point records the status it sent in `status`.
5. **Recorded** once by `proxy.pipeline.record_exchange()`: the `egress.decision` line, the
   spool and the sinks (a refusal's record is already written: `recorded`).

A transparent listener plugs in at step 1 with `entry="transparent"` and the kernel's original
destination in `connected_to`; steps 2-5 are the same calls.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from proxy.decision import Call, Decision, new_decision_id
from proxy.decision_log import redact_path
from proxy.http1 import Source
from proxy.upstream import filter_request_headers
from sharewall.hosts import format_authority

if TYPE_CHECKING:  # annotations only
    from proxy.destinations import Destination
    from proxy.inspect.model import Inspection
    from proxy.pipeline import Outcome
    from sharewall.recipients import RecipientIndex
    from sharewall.snapshot import Recipient

PURPOSE_HEADER = "x-sharewall-purpose"

# How the call reached us: "forward" (absolute-form HTTP), "connect" (a spliced CONNECT tunnel),
# "intercepted" (a request inside an intercepted CONNECT), "transparent" (redirected by the
# kernel), "check" (`sharewall check`, offline).
Entry = Literal["forward", "connect", "intercepted", "transparent", "check"]


class Timings:
    """Where the time of one exchange went (milliseconds; None: the stage did not run).

    A plain slotted class, made once per call: a dataclass's generated `__init__` (its default
    factory and defaulted arguments) cost ~1.5k instructions more.
    """

    __slots__ = ("inspect_ms", "policy_ms", "start", "upstream_ms")

    def __init__(self) -> None:
        self.start: float = _perf_counter()
        self.inspect_ms: float | None = None
        self.policy_ms: float | None = None
        self.upstream_ms: float | None = None

    def elapsed_ms(self) -> float:
        return (_perf_counter() - self.start) * 1000.0


_perf_counter = time.perf_counter


@dataclass(slots=True, eq=False)
class Exchange:
    """Everything known about one call; filled in stage by stage (see the module docstring)."""

    entry: Entry
    method: str
    scheme: str  # the scheme the app used: "http" or "https"
    host: str  # normalised (sharewall.hosts)
    port: int
    path: str  # path and query as the app sent them; redacted wherever it is shown
    headers: list[tuple[str, str]]  # filtered: exactly what goes upstream and is inspected
    body: bytes  # what was read of the body (up to the inspection limit)
    body_truncated: bool  # the body is longer than `body`: the rest is streamed, not inspected
    purpose: str | None
    source: Source
    recipient: Recipient | None
    inspected: bool  # False for a spliced tunnel (the payload is never seen)
    tls_upstream: bool  # the bytes leave the pod over TLS
    # Derived by new_exchange from the fields above (fields, not properties: each is read once
    # or twice a call, a property read costing ~0.6k instructions):
    upstream_scheme: str  # "https" when the bytes leave over TLS, else "http"
    upstream_port: int  # the port connected to: TLS origination moves a default-port call to 443
    tunnel: bool  # a CONNECT (spliced or intercepted), or captured TLS
    decision_id: str = field(default_factory=new_decision_id)
    connected_to: tuple[str, int] | None = None  # transparent: the kernel's original destination
    unidentified: str | None = None  # transparent: why nothing names the destination ("no_sni")
    # Filled in by the pipeline:
    inspection: Inspection | None = None
    decision: Decision | None = None
    destination_checked: bool = False
    destination: Destination | None = None  # the checked address to connect to
    unresolved: OSError | None = None  # the name did not resolve (decided anyway)
    outcome: Outcome | None = None
    status: int | None = None  # the status the client got (None: nothing was sent)
    recorded: bool = False  # its record is written (a refusal's, before the refusal left)
    timings: Timings = field(default_factory=Timings)

    @property
    def url(self) -> str:
        """The URL as the app addressed it (query included): what the inspector reads."""
        return _origin(self.scheme, self.host, self.port) + self.path

    def call(self) -> Call:
        """The facts the policy decides on (the path redacted: an OPA sidecar may log its input)."""
        # By position, in field order: made for every call (keywords cost ~0.5 us more).
        return Call(
            self.method,
            self.scheme,
            self.host,
            self.port,
            redact_path(self.path),
            self.inspected,
            self.tls_upstream,
            self.recipient.id if self.recipient is not None else None,
            self.purpose,
            self.source.workload,
            self.source.namespace,
            self.decision_id,
        )


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: str, port: int) -> str:
    """`scheme://authority` of `Exchange.url`: an app calls the same few origins, each made once
    (the URL in 1.8k instructions instead of 3.8k)."""
    return f"{scheme}://{format_authority(host, port, scheme)}"


# The order `new_exchange` passes an exchange's fields in (by position): checked on import.
_FIELD_ORDER = (
    "entry", "method", "scheme", "host", "port", "path", "headers", "body", "body_truncated",
    "purpose", "source", "recipient", "inspected", "tls_upstream", "upstream_scheme",
    "upstream_port", "tunnel", "decision_id", "connected_to",
    "unidentified", "inspection", "decision", "destination_checked", "destination", "unresolved",
    "outcome", "status", "recorded", "timings",
)  # fmt: skip
if tuple(f.name for f in fields(Exchange)) != _FIELD_ORDER:
    raise RuntimeError("new_exchange passes the fields of Exchange in another order")


class _LookUp:
    """The default of `new_exchange(purpose_header=...)`: read it from the raw headers."""


_LOOK_UP = _LookUp()


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header `name` (lower-case) in a raw header list."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def new_exchange(
    entry: Entry,
    method: str,
    scheme: str,
    host: str,
    port: int,
    path: str,
    *,
    raw_headers: list[tuple[str, str]],
    body: bytes = b"",
    body_truncated: bool = False,
    index: RecipientIndex | None,
    source: Source,
    default_purpose: str | None,
    purpose_header: str | _LookUp | None = _LOOK_UP,
    tunnel_purpose: str | None = None,
    decision_id: str | None = None,
    connected_to: tuple[str, int] | None = None,
    unidentified: str | None = None,
    spliced: bool = False,
    timings: Timings | None = None,
) -> Exchange:
    """Build the exchange of one call: the one place its facts are derived from what the app sent.

    The call's naming facts (`entry` ... `path`) may go by position: a call site passing more
    than fifteen keyword arguments is compiled into a dict built and unpacked per call (CPython
    3.11), about 8k instructions on the listener's path.

    `host` must be normalised (`sharewall.hosts`). `purpose_header` is the request's
    `X-Sharewall-Purpose` (None: it has none) when the caller has read its head already;
    by default it is looked up in `raw_headers`. The purpose is that header, else the
    CONNECT's (`tunnel_purpose`), else `default_purpose`. A CONNECT exchange (`entry="connect"`), and a captured TLS connection
    that is spliced (`spliced=True`), is never inspected and always leaves over TLS.
    Transparent capture gives `connected_to` (the original destination) and, when nothing
    names the destination, `unidentified` (why): the pipeline checks both.
    """
    if isinstance(purpose_header, _LookUp):
        purpose_header = first_header(raw_headers, PURPOSE_HEADER)
    recipient = index.resolve(host, port) if index is not None else None
    spliced = spliced or entry == "connect"
    tls_upstream = (
        spliced or scheme == "https" or (recipient is not None and recipient.tls_origination)
    )
    # TLS origination moves a default-port call to 443.
    upstream_port = 443 if port == 80 and tls_upstream and scheme == "http" else port
    if entry == "transparent":
        tunnel = scheme != "http"  # captured TLS (or not HTTP at all)
    else:
        tunnel = entry == "connect" or entry == "intercepted"
    # By position, in field order (entry ... unidentified, then the pipeline's fields, timings
    # last): made for every call, and eighteen keywords cost about as much as the rest.
    return Exchange(
        entry,
        method,
        scheme,
        host,
        port,
        path,
        filter_request_headers(raw_headers) if raw_headers else [],
        body,
        body_truncated,
        purpose_header or tunnel_purpose or default_purpose,
        source,
        recipient,
        not spliced,
        tls_upstream,
        "https" if tls_upstream else "http",
        upstream_port,
        tunnel,
        decision_id or new_decision_id(),
        connected_to,
        unidentified,
        None,
        None,
        False,
        None,
        None,
        None,
        None,
        False,
        timings or Timings(),
    )
