"""A phone number split across sibling fields: a country code in one, the national number in
the next (`{"cc": "+65", "num": "91234567"}`, `{"a": "+65 9123", "b": "4567"}`).

The walker calls this only for an object with a short `+…` value or a dialling-code key, so the
common object costs nothing. Only fragments made of digits and separators are joined, in the
order sent, never across an id, an amount or a timestamp (negative keys), never a decimal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.inspect import categories as cat
from proxy.inspect.keys import DIAL_CODE_KEYS, KeyInfo
from proxy.inspect.phone import compact, is_valid_international
from proxy.inspect.scan import Scan

_FRAGMENT = re.compile(r"\+?\d[\d \-()]{0,17}")
# A value that may start a split number: `+65`, `+852`, `+65 9123`.
MAX_CODE_LENGTH = 9


def scan_split_numbers(scan: Scan, fields: Sequence[tuple[str, KeyInfo | None, object]]) -> None:
    """Join consecutive numeric fragments (location, key, value) that begin with a code."""
    fragments: list[tuple[str, str, bool]] = []
    for location, info, value in fields:
        is_code_key = info is not None and info.squashed in DIAL_CODE_KEYS
        if info is not None and info.is_negative and not is_code_key:
            continue
        if type(value) is int and value >= 0:
            text = str(value)
        elif type(value) is str:
            text = value.strip()
        else:
            continue
        if len(text) <= 18 and _FRAGMENT.fullmatch(text):
            fragments.append((location, text, is_code_key))
    for index, (_, first, is_code_key) in enumerate(fragments[:-1]):
        if not (first[0] == "+" or is_code_key) or len(compact(first)) > MAX_CODE_LENGTH:
            continue
        number = compact(first).lstrip("+")
        for location, part, _ in fragments[index + 1 : index + 3]:
            if "+" in part:
                break
            number += compact(part)
            if is_valid_international(number):
                scan.add(cat.PHONE, location, "phone:split")
                break
