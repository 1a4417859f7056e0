"""The JSON Patch (RFC 6902) from one pod to another, for the webhook's answer.

Written for what injection does (keys added or changed, list items inserted before or appended
after the existing ones, items changed in place), so a patch reads like the change: `add
/spec/initContainers/0`, `add /spec/containers/0/env/-`. Anything else falls back to replacing
the whole value, which is always right. `jsonpatch.make_patch` gives the same result about 50
times slower (5 ms a pod, on the API server's clock for every pod creation).
"""

from __future__ import annotations

from typing import Any


def _pointer(path: str, key: str | int) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _same_item(old: Any, new: Any) -> bool:
    # List items of a pod are keyed by name (containers, env, volumes, mounts): same name, same
    # item, even if injection changed what is inside.
    if old == new:
        return True
    return (
        isinstance(old, dict)
        and isinstance(new, dict)
        and "name" in old
        and old.get("name") == new.get("name")
    )


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[dict[str, Any]]) -> None:
    extra = len(new) - len(old)
    if extra >= 0:
        # Inserted before the existing items (our init containers), or appended after them.
        for offset in (0, extra) if extra else (0,):
            if all(_same_item(o, new[i + offset]) for i, o in enumerate(old)):
                if offset:
                    ops += [
                        {"op": "add", "path": _pointer(path, i), "value": new[i]}
                        for i in range(offset)
                    ]
                for i, item in enumerate(old):
                    _diff(item, new[i + offset], _pointer(path, i + offset), ops)
                if not offset:
                    ops += [{"op": "add", "path": f"{path}/-", "value": v} for v in new[len(old) :]]
                return
    ops.append({"op": "replace", "path": path, "value": new})


def _diff(old: Any, new: Any, path: str, ops: list[dict[str, Any]]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        ops += [{"op": "remove", "path": _pointer(path, k)} for k in old if k not in new]
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": _pointer(path, key), "value": value})
            else:
                _diff(old[key], value, _pointer(path, key), ops)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
    else:
        ops.append({"op": "replace", "path": path, "value": new})


def make_patch(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations that turn `old` into `new` (both JSON documents)."""
    ops: list[dict[str, Any]] = []
    _diff(old, new, "", ops)
    return ops
