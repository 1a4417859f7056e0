"""The native fast path of inspection: used when it was built, never required.

`proxy/inspect/_native.c` is compiled at install by `hatch_build.py` (gcc; skipped with a warning
when there is none). It has two parts:

- the walker's hot loops (`walk._walk_object`, `_walk_fields`, `_walk_array`, `_visit_scalar`) in C: the same steps in
  the same order, calling walk.py's own functions for everything the loops do not inline, so
  the rules stay in one place (Python);
- a pre-scan over a string's characters that tells `free_text.scan_string` (and the walker,
  before it judges a value under no known key) when none of its detectors can fire: most
  strings of a call (ids, URLs, sentences without numbers). Whenever it cannot rule a string
  out, the string is scanned in full.

So both paths give the same findings, places, detectors and problems;
tests/proxy/test_inspect_native.py checks that on the corpus and on generated inputs.

`SHAREWALL_INSPECT_NATIVE=0` forces the pure-Python path; it is read once, when inspection is
first imported. `install()` switches paths in process (the differential test and the benchmark).
"""

from __future__ import annotations

import os
from types import ModuleType
from urllib.parse import unquote_to_bytes

import structlog

from proxy.inspect import form, free_text, keys, phone, scan, walk
from proxy.inspect.model import Finding

ENV_SWITCH = "SHAREWALL_INSPECT_NATIVE"
# The `VERSION` of `_native.c` this Python code was written against: a stale build left in the
# tree (another version of the C source) is not used.
_VERSION = 14
# scan.py's and walk.py's own functions, put back by `install(False)`.
_PYTHON_FINDINGS = scan._findings
_PYTHON_LOOPS = {
    "_walk_object": walk._walk_object,
    "_walk_fields": walk._walk_fields,
    "_walk_array": walk._walk_array,
    "_visit_scalar": walk._visit_scalar,
}


log = structlog.get_logger("sharewall.inspect")


def _callbacks() -> dict[str, object]:
    """What the compiled loops call: the very functions and tables walk.py's loops use."""
    return {
        "any_identifier_like": walk.any_identifier_like,
        "_walk_object_keyed_by_identifiers": walk._walk_object_keyed_by_identifiers,
        "_object_plan": walk._object_plan,
        "_walk_embedded": walk._walk_embedded,
        "_walk_base64": walk._walk_base64,
        "_inner_context": walk._inner_context,
        "_OBJECT_PLANS": walk._OBJECT_PLANS,
        "is_valid_compact": walk.is_valid_compact,
        "key_only": walk.key_only,
        "judge_str": walk.judge_str,
        "scan_scalar": walk.scan_scalar,
        "scan_container_key": walk.scan_container_key,
        "is_lat_lng_pair": walk.is_lat_lng_pair,
        "scan_split_numbers": walk.scan_split_numbers,
        "KEY_ONLY_RULES": walk.KEY_ONLY_RULES,
        "CONTAINER_RULES": walk.CONTAINER_RULES,
        "LIST_CONTAINER_RULES": walk.LIST_CONTAINER_RULES,
        "MEMO_MAX_LENGTH": walk.MEMO_MAX_LENGTH,
        "PHONE_RULE": walk._PHONE_RULE,
        "PHONE_GENERIC_RULE": walk.Rule.PHONE_GENERIC,
        "COORDINATES_RULE": walk.Rule.COORDINATES,
        "PHONE_CATEGORY": walk._PHONE,
        "LOCATION_PRECISE": walk.cat.LOCATION_PRECISE,
        "DIAL_CODE": walk._DIAL_CODE,
        "MAX_CODE_LENGTH": walk.MAX_CODE_LENGTH,
        "MIN_BASE64": walk.MIN_BASE64,
        "LONG_BASE64": walk.LONG_BASE64,
        # The content rule's finding, inlined when the pre-scan rules the text out.
        "CONTENT_RULE": walk.Rule.CONTENT,
        "CONTENT_CATEGORY": walk.cat.CONTENT,
        "ERROR": walk.Ctx.ERROR,
        # A body as short as an SMS keyword is judged by `fields._content` (`STOP` is consent).
        "OPT_KEYWORD_MAX": keys.OPT_KEYWORD_MAX,
        # A string under a never-read key that may be an id's number or address.
        "scan_id_value": walk.scan_id_value,
        # `ChannelType: SMS` beside an object's fields makes it a text message's.
        "channel_context": walk.channel_context,
        "CHANNEL": walk.Ctx.CHANNEL,
        # A label and a `value` beside it: the object is walked by `walk.walk_pair`.
        "walk_pair": walk.walk_pair,
        "PAIR": walk.Ctx.PAIR,
        "SMS": walk.Ctx.SMS,
        # What `_inner_context` combines (compiled too; the Python function for odd flags).
        "STICKY": walk.STICKY,
        "TOP_OR_ROOT": walk._TOP_OR_ROOT,
        "ROOT": walk.Ctx.ROOT,
        "TOP": walk.Ctx.TOP,
        "NOT_PERSON_OR_EMPLOYER": walk._NOT_PERSON_OR_EMPLOYER,
        "PERSON": walk.Ctx.PERSON,
        "AUTH_OBJECTS": walk.AUTH_OBJECTS,
        # The field count and the findings live in slots of `Scan`, used in place.
        "Scan": walk.Scan,
        # `is_valid_compact`'s table of country codes by first three digits.
        "PHONE_PREFIXES": phone._BY_PREFIX,
        # `scan._findings` makes the `Finding`s of a call through their slots (and their categories).
        "Finding": Finding,
    }


def _load() -> tuple[ModuleType | None, str]:
    """The native module, configured, or None and why not."""
    try:
        from proxy.inspect import _native  # type: ignore[attr-defined]
    except ImportError:
        return None, "not built"
    version = getattr(_native, "VERSION", None)
    if version != _VERSION:
        # Another version of the C source was built here: rebuild with `python hatch_build.py`.
        return None, f"stale build (version {version}, this code needs {_VERSION})"
    try:
        _native.configure(_callbacks())
    except (
        AttributeError,
        KeyError,
        TypeError,
    ) as error:  # the Python side changed shape: stay in Python
        return None, f"not configured ({type(error).__name__})"
    return _native, "built"


_MODULE, _WHY = _load()
_active = False


def is_available() -> bool:
    """Whether the native module was built and loaded (whatever the switch says)."""
    return _MODULE is not None


def is_active() -> bool:
    """Whether inspection currently uses the native path."""
    return _active


def status() -> str:
    """A line that says which path inspection uses, and why (for logs and benchmarks)."""
    if _active:
        return "native"
    if _MODULE is not None:
        return f"fallback: native built, switched off ({ENV_SWITCH}=0 or install(False))"
    return f"fallback: native {_WHY}"


def enabled_by_environment() -> bool:
    """What `SHAREWALL_INSPECT_NATIVE` asks for: anything but 0/false/no/off means "if built"."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def install(enabled: bool) -> bool:
    """Use the native path (when built) or the pure-Python one; True when native is now used."""
    global _active
    if enabled and _MODULE is None and _WHY != "not built":
        log.warning("inspect.native_unusable", reason=_WHY)
    use = enabled and _MODULE is not None
    free_text.prescan = _MODULE.prescan if use and _MODULE is not None else None
    for name, loop in _PYTHON_LOOPS.items():
        setattr(walk, name, getattr(_MODULE, name.lstrip("_")) if use else loop)
    scan._findings = _MODULE.findings if use and _MODULE is not None else _PYTHON_FINDINGS
    form.unquote_ascii = _MODULE.percent_decode if use and _MODULE is not None else unquote_to_bytes
    _active = use
    return use
