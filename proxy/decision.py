"""Decision values: the facts of one call, the policy input built from them, the outcome."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from proxy.inspect.model import Finding, Inspection

Action = Literal["allow", "deny"]
T = TypeVar("T")


# Random ids are drawn from the OS 256 at a time: one getrandom() syscall per 256 ids instead of
# one per id (two ids per call, each syscall ~1-5 us on a VM). The pool is emptied in a forked
# child, so that two processes never hand out the same ids.
_ID_BATCH = 256
_ids: list[str] = []
_ID_SLICES = tuple(slice(i, i + 32) for i in range(0, 32 * _ID_BATCH, 32))
os.register_at_fork(after_in_child=_ids.clear)


def new_decision_id() -> str:
    """A unique random id, 32 hex digits like uuid4().hex (ids are never ordered).

    128 bits from `os.urandom` per id, as uuid4 has (122), drawn in batches: it is paid on
    every call and cache hit. `list.pop` is atomic, so threads may share the pool.
    """
    try:
        return _ids.pop()
    except IndexError:
        digits = os.urandom(16 * _ID_BATCH).hex()
        _ids.extend(map(digits.__getitem__, _ID_SLICES))  # no comprehension, no slice objects
        return _ids.pop()


# Per class given a fast `__init__`: a function taking every field by position (no defaults).
_OF_FIELDS: dict[type, Callable[..., Any]] = {}


def _fast_frozen_init(cls: type[T]) -> type[T]:
    """Give a frozen slotted dataclass an `__init__` that stores its fields as plain slots do.

    The generated `__init__` of a frozen dataclass calls `object.__setattr__` per field (~700
    instructions each, and a `Call` and a `Decision` of twelve fields are made for every
    proxied call). This one turns the new instance into a twin class with the same slots and
    no `__setattr__` of its own, stores each field with an ordinary attribute store (the
    interpreter's slot store, ~30 instructions), and turns it back: a `Call` in 5.9k
    instructions instead of 10.6k. Same parameters and defaults (a `default_factory` runs
    when the argument is left out), same frozen, hashable, comparable value. Apply it on top
    of `@dataclass(frozen=True, slots=True)`; the twin's layout is checked here (CPython
    refuses the class change unless both have the same slots). `_OF_FIELDS[cls]` gets a
    function making the same value from every field by position, for the hottest caller.
    """
    twin = type(f"_{cls.__name__}Fields", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    probe = object.__new__(cls)
    object.__setattr__(probe, "__class__", twin)  # TypeError here: not the same layout
    probe.__class__ = cls
    params, body, scope = [], [], {"_cls": cls, "_twin": twin, "_set_class": object.__setattr__}
    for f in fields(cls):
        if f.default is not MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
            body.append(f"    self.{f.name} = {f.name}")
        elif f.default_factory is not MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_UNSET")
            body.append(
                f"    self.{f.name} = _factory_{f.name}() if {f.name} is _UNSET else {f.name}"
            )
        else:
            params.append(f.name)
            body.append(f"    self.{f.name} = {f.name}")
    scope["_UNSET"] = _UNSET
    scope["_new"] = object.__new__
    names = [f.name for f in fields(cls)]
    source = (
        f"def __init__(self, {', '.join(params)}):\n"
        "    _set_class(self, '__class__', _twin)\n"
        + "\n".join(body)
        + "\n    self.__class__ = _cls\n"
        # A twin from the start: no class call (its dispatch to a Python `__init__` costs
        # ~1.5k instructions) and one class change instead of two.
        + f"def _of_fields({', '.join(names)}):\n"
        "    self = _new(_twin)\n"
        + "".join(f"    self.{name} = {name}\n" for name in names)
        + "    self.__class__ = _cls\n"
        "    return self\n"
    )
    exec(source, scope)  # noqa: S102 - our own field names, as dataclasses itself does
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    _OF_FIELDS[cls] = scope["_of_fields"]
    return cls


_UNSET: Any = object()


@_fast_frozen_init
@dataclass(frozen=True, slots=True)
class Call:
    """What the proxy knows about one outbound call before asking the policy."""

    method: str
    scheme: str  # scheme the app used: "http" or "https"
    host: str
    port: int
    path: str
    inspected: bool  # False for a spliced CONNECT tunnel
    tls_upstream: bool  # the bytes leave the pod over TLS
    recipient_id: str | None
    purpose: str | None
    source_workload: str | None = None
    source_namespace: str | None = None
    request_id: str = field(default_factory=new_decision_id)


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    category: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.category:
            out["category"] = self.category
        return out


@_fast_frozen_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one call. A `fault` (engine down, timeout, no snapshot) is answered 503."""

    decision_id: str
    action: Action
    reasons: tuple[Reason, ...] = ()
    recipient_id: str | None = None
    purpose: str | None = None
    categories: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    problems: tuple[str, ...] = ()
    fault: str | None = None  # e.g. "engine_timeout", "engine_error", "snapshot_not_loaded"
    # The flags the policy saw (None when the policy did not run): the registry replays these.
    scheme: str | None = None
    tls_upstream: bool | None = None
    complete: bool | None = None

    @property
    def unavailable(self) -> bool:
        return self.fault is not None

    @property
    def allow(self) -> bool:
        return self.action == "allow" and self.fault is None

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """The decision JSON printed by `sharewall check` and shipped to the registry."""
        return {
            "decision_id": self.decision_id,
            "allow": self.allow,
            "action": self.action,
            "reasons": [r.as_dict() for r in self.reasons],
            "recipient_id": self.recipient_id,
            "purpose": self.purpose,
            "categories": list(self.categories),
            "findings": [f.as_dict() for f in self.findings],
            "fault": self.fault,
            "inspection": {
                "complete": not self.problems_incomplete,
                "problems": list(self.problems),
            },
        }

    @property
    def problems_incomplete(self) -> bool:
        return not Inspection(problems=self.problems).complete


# `Decision(...)` with all twelve fields by position, ~2k instructions cheaper: the decision
# cache's hit makes one for nearly every proxied call.
decision_of_fields: Callable[..., Decision] = _OF_FIELDS[Decision]


def policy_date(now: datetime | None = None) -> str:
    """The UTC day the policy compares grant expiry dates with (part of the cache key)."""
    return (now or datetime.now(UTC)).date().isoformat()


def build_policy_input(call: Call, inspection: Inspection, *, date: str) -> dict[str, Any]:
    """The policy input of DESIGN.md, plus `date` (UTC day) for grant expiry."""
    return {
        "request": {
            "id": call.request_id,
            "method": call.method,
            "scheme": call.scheme,
            "host": call.host,
            "port": call.port,
            "path": call.path,
            "inspected": call.inspected,
            "tls_upstream": call.tls_upstream,
        },
        "source": {"workload": call.source_workload, "namespace": call.source_namespace},
        "purpose": call.purpose,
        "recipient_id": call.recipient_id,
        "categories": sorted(inspection.categories),
        "findings": [f.as_dict() for f in inspection.findings],
        "inspection": inspection.as_policy_input(),
        "date": date,
    }
