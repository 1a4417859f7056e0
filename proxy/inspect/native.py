"""The native fast path of inspection: used when it was built, never required.

`proxy/inspect/_native.c` is compiled at install by `hatch_build.py` (gcc; skipped with a warning
when there is none). It only ever skips work whose outcome it has proved empty: a pre-scan over a
string's characters tells `free_text.scan_string` when none of its detectors can fire (most
strings of a call: ids, URLs, sentences without numbers). Whenever it cannot rule a string out,
the string is scanned in full, so both paths give the same findings, places and problems;
tests/proxy/test_inspect_native.py checks that on the corpus and on generated inputs.

`SHAREWALL_INSPECT_NATIVE=0` forces the pure-Python path; it is read once, when inspection is
first imported. `install()` switches paths in process (the differential test and the benchmark).
"""

from __future__ import annotations

import os
from types import ModuleType

from proxy.inspect import free_text

ENV_SWITCH = "SHAREWALL_INSPECT_NATIVE"
# The `VERSION` of `_native.c` this Python code was written against: a stale build left in the
# tree (another version of the C source) is not used.
_VERSION = 1


def _load() -> ModuleType | None:
    try:
        from proxy.inspect import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _native if getattr(_native, "VERSION", None) == _VERSION else None


_MODULE = _load()
_active = False


def is_available() -> bool:
    """Whether the native module was built and loaded (whatever the switch says)."""
    return _MODULE is not None


def is_active() -> bool:
    """Whether inspection currently uses the native path."""
    return _active


def enabled_by_environment() -> bool:
    """What `SHAREWALL_INSPECT_NATIVE` asks for: anything but 0/false/no/off means "if built"."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def install(enabled: bool) -> bool:
    """Use the native path (when built) or the pure-Python one; True when native is now used."""
    global _active
    use = enabled and _MODULE is not None
    free_text.prescan = _MODULE.prescan if use and _MODULE is not None else None
    _active = use
    return use
