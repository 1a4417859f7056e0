"""The webhook's JSON Patch: applied by an independent RFC 6902 implementation (jsonpatch), it
gives exactly the target document, whatever changed."""

from __future__ import annotations

import jsonpatch
import pytest

from injector.patch import make_patch

CASES = {
    "added label with a slash": (
        {"metadata": {"labels": {"app": "a"}}},
        {"metadata": {"labels": {"app": "a", "sharewall.io/egress-proxy": "true"}}},
    ),
    "key with a tilde": ({"a": {}}, {"a": {"x~y/z": 1}}),
    "missing map": ({"metadata": {}}, {"metadata": {"annotations": {"k": "v"}}}),
    "items inserted before": (
        {"l": [{"name": "a", "x": 1}, {"name": "b"}]},
        {"l": [{"name": "p"}, {"name": "q"}, {"name": "a", "x": 2}, {"name": "b"}]},
    ),
    "items appended and changed": (
        {"l": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]},
        {"l": [{"name": "a", "env": [{"name": "X", "value": "2"}, {"name": "Y"}]}, {"name": "p"}]},
    ),
    "reordered": ({"l": [1, 2, 3]}, {"l": [3, 1, 2]}),
    "item removed": ({"l": [{"name": "a"}, {"name": "b"}]}, {"l": [{"name": "b"}]}),
    "key removed": ({"a": 1, "b": 2}, {"a": 1}),
    "type changed": ({"a": [1]}, {"a": {"b": 1}}),
    "same": ({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}),
}


@pytest.mark.parametrize(("old", "new"), CASES.values(), ids=CASES.keys())
def test_the_patch_turns_old_into_new(old, new) -> None:
    patch = make_patch(old, new)
    assert jsonpatch.apply_patch(old, patch) == new
    if old == new:
        assert patch == []


def test_an_insertion_reads_as_one_add() -> None:
    old = {"spec": {"initContainers": [{"name": "migrate"}]}}
    new = {"spec": {"initContainers": [{"name": "sharewall-proxy"}, {"name": "migrate"}]}}
    assert make_patch(old, new) == [
        {"op": "add", "path": "/spec/initContainers/0", "value": {"name": "sharewall-proxy"}}
    ]
