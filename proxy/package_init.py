"""Importing a library's parts without its package `__init__`, for the sidecar's idle memory.

Importing any submodule of a package runs the package's `__init__` first. Some libraries'
`__init__` imports everything they have: prometheus_client's brings its exposition server
(http.server, wsgiref, urllib.request, email: ~3 MB of an idle sidecar), phonenumbers' its
as-you-type formatter, matcher and short-number tables (~0.4 MB) that the proxy never calls.
`register_without_init` puts the package in `sys.modules` unexecuted: its submodules import on
their own, and the real `__init__` runs at the first attribute asked of the package itself
(`from phonenumbers import parse`), so other code in the process still sees the whole library.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import Any


def register_without_init(name: str) -> None:
    """Register package `name` without running its `__init__` (until an attribute needs it).

    A no-op when the package is imported already (then whole: nothing to save)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    package = importlib.util.module_from_spec(spec)
    lock = threading.Lock()

    def __getattr__(attr: str) -> Any:  # a module's attribute hook (PEP 562)
        with lock:
            if package.__dict__.get("__getattr__") is __getattr__:
                # Removed first: the `__init__`'s own `from . import x` must not come back here.
                del package.__dict__["__getattr__"]
                spec.loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = package
