"""`application/x-www-form-urlencoded` bodies and URL query strings (bracket keys included)."""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_to_bytes

from proxy.inspect.encoded import unquote_repeated
from proxy.inspect.free_text import scan_string
from proxy.inspect.keys import (
    CHANNEL_KEYS,
    MASK,
    Ctx,
    is_identifier_like,
    is_sms_channel,
    key_info,
    sibling_context,
)
from proxy.inspect.model import TOO_MANY_FIELDS
from proxy.inspect.scan import Scan
from proxy.inspect.split import MAX_CODE_LENGTH, scan_split_numbers
from proxy.inspect.walk import walk

_SEGMENTS = re.compile(r"[^\[\].]+")
# Segments of the AWS query protocol that name no data, only the shape around it: its meaning
# is the segment before (`Message.Body.Text.Data` is a message text, `Destination.ToAddresses.
# member.1` a list of addresses, `MessageAttributes.entry.1.Value.StringValue` an attribute).
_STRUCTURAL = frozenset({"member", "entry", "data", "value", "stringvalue"})


def _segments(key: str) -> list[str]:
    # `user[phone]` → ["user", "phone"]; `to[0]` → ["to", "0"]; `to[]` → ["to"];
    # `Message.Body.Text.Data` → ["Message", "Body", "Text", "Data"].
    return _SEGMENTS.findall(key) or [key]


# A plain key (not itself an identifier) → its named segments (digits dropped; `*` for a segment
# that looks like data), the parent flags its bracket parents give, and whether a parent is a
# not-a-person object. Form and query keys repeat call after call (`To`, `Body`): worked out once.
_KeyPlan = tuple[tuple[str, ...], int, bool]
_KEY_PLANS: dict[str, _KeyPlan] = {}
_KEY_PLANS_MAX = 4096


def _key_plan(key: str) -> _KeyPlan:
    plan = _KEY_PLANS.get(key)
    if plan is not None:
        return plan
    named = [s for s in _segments(key) if not s.isdigit()]
    while len(named) > 1 and named[-1].lower() in _STRUCTURAL:
        named.pop()
    # A key that is itself an identifier is shown and classified as `*` (see keys.MASK).
    names = tuple(MASK if is_identifier_like(s) else s for s in named) or (MASK,)
    parent_flags = Ctx.NONE
    for parent in names[:-1]:
        parent_flags |= key_info(parent).parent_flags
    not_person = any(key_info(parent).parent_flags & Ctx.NOT_PERSON for parent in names[:-1])
    plan = (names, parent_flags, not_person)
    if not is_identifier_like(key):  # a key that may be personal data is never kept
        if len(_KEY_PLANS) >= _KEY_PLANS_MAX:
            _KEY_PLANS.clear()
        _KEY_PLANS[key] = plan
    return plan


def scan_pairs(scan: Scan, pairs: list[tuple[str, str]], prefix: str, ctx: int) -> None:
    """Scan decoded (key, value) pairs; a key's context is its bracket parents and all sibling keys."""
    plans = [_key_plan(key) for key, _ in pairs]
    # List comprehensions and a flag, not generators: this runs for every form and query.
    siblings = sibling_context(tuple([names[-1] for names, _, _ in plans]))
    split_hint = siblings & Ctx.DIAL_CODE
    if siblings & Ctx.CHANNEL and any(
        key_info(names[-1]).squashed in CHANNEL_KEYS and is_sms_channel(value)
        for (_, value), (names, _, _) in zip(pairs, plans, strict=True)
    ):
        siblings |= Ctx.SMS  # `Channel=sms`: the form is a text message's (see keys.CHANNEL_KEYS)
    for (key, value), (names, parent_flags, not_person) in zip(pairs, plans, strict=True):
        if value[:1] == "+" and len(value) <= MAX_CODE_LENGTH:
            split_hint = True  # `+65` alone: the rest of the number may be a sibling
        if key not in _KEY_PLANS and is_identifier_like(key):
            scan_string(scan, f"{prefix}:{MASK}", key, is_text=False)
            key = MASK
        field_ctx = ctx | siblings | parent_flags
        if len(names) == 1:
            field_ctx |= Ctx.TOP  # `api_key=…`, not `data[api_key]=…`
        if not_person:
            field_ctx &= ~Ctx.PERSON
        walk(scan, value, f"{prefix}:{key}", key_info(names[-1]), field_ctx, len(names))
    if split_hint:
        scan_split_numbers(
            scan,
            [
                (f"{prefix}:{key}", key_info(names[-1]), value)
                for (key, value), (names, _, _) in zip(pairs, plans, strict=True)
            ],
        )


def parse_pairs(text: str, scan: Scan, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """Decode a query string / form body; `+` is a space, as browsers and Twilio's SDKs send it."""
    try:
        pairs = _parse_qsl(text, encoding)
    except LookupError:  # an unknown charset (already reported by decode_text)
        pairs = _parse_qsl(text, "utf-8")
    if len(pairs) > scan.limits.max_fields:
        scan.problem(TOO_MANY_FIELDS)
        pairs = pairs[: scan.limits.max_fields]
    return pairs


def _parse_qsl(text: str, encoding: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=…, errors="replace")`.

    The same pairs, faster: an ASCII field (nearly all of them) is unquoted by one
    `unquote_to_bytes()` + `decode()`, which is what `unquote()` does to each ASCII run.
    """
    pairs = []
    for field in text.split("&") if text else ():
        if not field:
            continue
        name, _, value = field.partition("=")
        name = name.replace("+", " ")
        value = value.replace("+", " ")
        if "%" in name:
            name = _unquote(name, encoding)
        if "%" in value:
            value = _unquote(value, encoding)
        pairs.append((name, value))
    return pairs


# `unquote_to_bytes` of an ASCII str; the native fast path puts its compiled twin here
# (`native.install`): a Python call per `%` of every form and query field otherwise.
unquote_ascii = unquote_to_bytes


def _unquote(text: str, encoding: str) -> str:
    if text.isascii():
        text = unquote_ascii(text).decode(encoding, "replace")
    else:
        text = unquote(text, encoding=encoding, errors="replace")
    # Encoded twice (`%252B65…`): a value is what it says after every layer is undone.
    return unquote_repeated(text) if "%" in text else text


def scan_form(scan: Scan, text: str, ctx: int, *, encoding: str = "utf-8") -> None:
    """Scan a form body: each field is located as `form:<key as sent>`."""
    scan_pairs(scan, parse_pairs(text, scan, encoding), "form", ctx)
