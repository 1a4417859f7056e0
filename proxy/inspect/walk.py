"""Walk a decoded tree (JSON, or JSON found inside a string) field by field, keeping context.

This is the hot loop of inspection: a 256 KB batch has ~10,000 fields. `_walk_object`,
`_walk_fields`, `_walk_array` and `_visit_scalar` (a form's, a query's or a header's value) have a
compiled twin in `_native.c` (the native fast path, `native.py`), which calls this module's other
functions: a change to one of these is made in both, and tests/proxy/test_inspect_native.py
compares the two paths. What a key means (its
`KeyInfo`, its location suffix) and what an object's key set gives its fields (sibling context)
are worked out once per key set and reused for every object with the same keys (every element of
a batch); scalars that cannot matter are skipped inline, without a call or a location string.
"""

from __future__ import annotations

import re
from functools import lru_cache

import orjson

from proxy.inspect import categories as cat
from proxy.inspect.credentials import AUTH_OBJECTS
from proxy.inspect.encoded import (
    LONG_BASE64,
    MIN_BASE64,
    binary_head,
    decode_base64_text,
    enter_layer,
    jwt_claims,
    looks_base64,
)
from proxy.inspect.fields import (
    CONTAINER_RULES,
    KEY_ONLY_RULES,
    LIST_CONTAINER_RULES,
    MEMO_MAX_LENGTH,
    is_lat_lng_pair,
    judge_str,
    key_only,
    scan_container_key,
    scan_id_value,
    scan_scalar,
)
from proxy.inspect.free_text import scan_string
from proxy.inspect.keys import (
    CHANNEL_KEYS,
    MASK,
    PAIR_LABELS,
    STICKY,
    Ctx,
    KeyInfo,
    Rule,
    any_identifier_like,
    is_identifier_like,
    is_sms_channel,
    key_info,
    sibling_context,
)
from proxy.inspect.phone import is_phone_value, is_valid_compact
from proxy.inspect.scan import Scan
from proxy.inspect.split import MAX_CODE_LENGTH, scan_split_numbers

# The key info of a phone number used as a key: its object is about that subscriber.
_SUBSCRIBER = KeyInfo(MASK, (), MASK, None, False, Ctx.MOBILE, Ctx.NONE)
_PLAIN_KEY = re.compile(r"[A-Za-z_$@][A-Za-z0-9_\-:.]{0,63}")
_NOT_PERSON_OR_EMPLOYER = Ctx.NOT_PERSON | Ctx.EMPLOYER
_PHONE_RULE = Rule.PHONE
_PHONE = cat.PHONE
_DIAL_CODE = Ctx.DIAL_CODE
_TOP_OR_ROOT = Ctx.TOP | Ctx.ROOT
_CHANNEL = Ctx.CHANNEL
_SMS = Ctx.SMS
_PAIR = Ctx.PAIR

# One field's plan: (location suffix, key info, rule, values never read).
_FieldPlan = tuple[str, KeyInfo, "str | None", bool]
# Key set → (sibling context flags, one plan per key in order). Only key sets without
# identifier-like keys are kept (a key that is a phone number or an e-mail is never cached).
_OBJECT_PLANS: dict[tuple[str, ...], tuple[int, tuple[_FieldPlan, ...]]] = {}
_OBJECT_PLANS_MAX = 4096


@lru_cache(maxsize=8192)
def _key_suffix(key: str) -> str:
    # A key that is not a plain name (`Mei Tan`, `Köln`) may be data itself: it is not shown.
    return f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{MASK}]"


def child_location(location: str, key: str) -> str:
    """`$.a` + `b` → `$.a.b`; keys that are not plain names are masked: `$.a[*]`."""
    return location + _key_suffix(key)


def child_context(ctx: int, info: KeyInfo | None, keys: tuple[str, ...]) -> int:
    """The context of an object: sticky flags from above, its key's flags, its own keys' flags."""
    return _inner_context(ctx, info, sibling_context(keys))


def _inner_context(ctx: int, info: KeyInfo | None, siblings: int) -> int:
    # `_native.c` has its twin (`inner_context`): a change here is made there too.
    flags = (ctx & STICKY) | siblings
    if ctx & _TOP_OR_ROOT and (
        ctx & Ctx.ROOT or (info is not None and info.squashed in AUTH_OBJECTS)
    ):
        flags |= Ctx.TOP  # the body's top level, or its `auth`/`credentials` object
    if info is not None:
        flags |= info.parent_flags
        if info.parent_flags & _NOT_PERSON_OR_EMPLOYER:
            flags &= ~Ctx.PERSON  # `product.name`, `company.name` are not a person's name
    return flags


def _object_plan(keys: tuple[str, ...]) -> tuple[int, tuple[_FieldPlan, ...]]:
    infos = [key_info(key) for key in keys]
    plan = (
        sibling_context(keys),
        tuple(
            (_key_suffix(key), info, info.rule, info.is_negative)
            for key, info in zip(keys, infos, strict=True)
        ),
    )
    if len(_OBJECT_PLANS) >= _OBJECT_PLANS_MAX:
        _OBJECT_PLANS.clear()  # bounded: a payload of random keys must not grow it forever
    _OBJECT_PLANS[keys] = plan
    return plan


def walk(
    scan: Scan,
    node: object,
    location: str,
    info: KeyInfo | None,
    ctx: int,
    depth: int,
    *,
    in_list: bool = False,
) -> None:
    """Scan `node` (dict, list or scalar) found at `location` under the key `info`."""
    kind = type(node)
    if kind is dict:
        _walk_object(scan, node, location, info, ctx, depth, in_list)  # type: ignore[arg-type]
    elif kind is list:
        _walk_array(scan, node, location, info, ctx, depth, in_list)  # type: ignore[arg-type]
    else:
        _visit_scalar(scan, node, location, info, ctx, depth)


def _visit_scalar(
    scan: Scan, node: object, location: str, info: KeyInfo | None, ctx: int, depth: int
) -> None:
    scan.count_field()
    if node is None:
        return
    if info is not None and info.is_negative:
        if type(node) is str and node and (node[0] == "+" or "@" in node):
            scan_id_value(scan, location, info, node)
        return
    if type(node) is not str:
        if info is not None and info.rule is not None:
            scan_scalar(scan, location, info, node, ctx)  # type: ignore[arg-type]
        return
    # Under an unrelated key only identifiers count; none is shorter than 7 characters except
    # an e-mail address.
    if (info is None or info.rule is None) and len(node) < 7 and "@" not in node:  # type: ignore[arg-type]
        return
    _visit_str(scan, node, location, info, ctx, depth)  # type: ignore[arg-type]


def _visit_str(
    scan: Scan, node: str, location: str, info: KeyInfo | None, ctx: int, depth: int
) -> None:
    if (
        node[:1] in "{["
        and node[-1:] in "}]"
        and _walk_embedded(scan, node, location, info, ctx, depth)
    ):
        return
    if (
        len(node) >= MIN_BASE64
        and " " not in node
        and "." not in node
        and _walk_base64(scan, node, location, info, ctx, depth)
    ):
        return
    scan_scalar(scan, location, info, node, ctx)


def _walk_base64(
    scan: Scan, node: str, location: str, info: KeyInfo | None, ctx: int, depth: int
) -> bool:
    """A base64 / base64url field that decodes to text or JSON: its content under the same key.

    Ids, digests and binary blobs never decode to text: they are judged as they are.
    """
    if len(node) > LONG_BASE64 and binary_head(node):
        # What `decode_base64_text` would answer after the alphabet test of every character:
        # a long value is told by its first 48 bytes (a bench's `xxx…` padding, a blob).
        return False
    if not looks_base64(node):
        return False
    memo_key = ("base64", node)
    decoded = scan.memo.get(memo_key, False)
    if decoded is False:
        decoded = decode_base64_text(node, scan.limits.max_decompressed_bytes)
        scan.memo[memo_key] = decoded  # type: ignore[assignment]
    if decoded is None:
        return False
    if enter_layer(scan):
        try:
            walk(scan, decoded, location, info, ctx, depth + 1)
        finally:
            scan.layers -= 1
    return True


def scan_jwt_claims(scan: Scan, location: str, token: str, ctx: int) -> None:
    """The claims of a JWT are data about its subject: walk them like a person's record."""
    claims = jwt_claims(token)
    if not isinstance(claims, dict):
        return
    if claims.get("iss") in scan.limits.own_token_issuers:
        scan.add(cat.SECRET, location, "jwt:own_issuer")  # ours, wherever it goes
    if enter_layer(scan):
        try:
            walk(scan, claims, location, None, ctx | Ctx.PERSON, scan.layers)
        finally:
            scan.layers -= 1


def _walk_embedded(
    scan: Scan, node: str, location: str, info: KeyInfo | None, ctx: int, depth: int
) -> bool:
    """JSON sent as a string field (webhook `payload`, Segment `properties` as text)."""
    try:
        nested = orjson.loads(node)
    except orjson.JSONDecodeError:
        return False
    if isinstance(nested, dict | list):
        walk(scan, nested, location, info, ctx, depth + 1)
        return True
    return False


def _walk_object(
    scan: Scan, node: dict, location: str, info: KeyInfo | None, ctx: int, depth: int, in_list: bool
) -> None:
    if depth > scan.limits.max_depth and scan.too_deep(depth):
        return
    if node and not in_list and info is not None and info.rule in CONTAINER_RULES:
        scan_container_key(scan, location, info, ctx)
    keys = tuple(node)
    plan = _OBJECT_PLANS.get(keys)
    if plan is None:
        if any_identifier_like(keys):
            _walk_object_keyed_by_identifiers(scan, node, location, info, ctx, depth)
            return
        plan = _object_plan(keys)
    siblings, fields = plan
    _walk_fields(scan, node, location, fields, _inner_context(ctx, info, siblings), depth + 1)


def _walk_fields(
    scan: Scan,
    node: dict,
    location: str,
    fields: tuple[_FieldPlan, ...],
    inner: int,
    depth: int,
) -> None:
    """The fields of one object, `fields` being the plan of its key set, `inner` its context."""
    if inner & _CHANNEL and not inner & _SMS:
        inner = channel_context(node, fields, inner)
    if inner & _PAIR:
        walk_pair(scan, node, location, fields, inner, depth)
        return
    memo = scan.memo
    split_hint = inner & _DIAL_CODE
    # Scalars are handled inline (no call, no location string) when they cannot matter: this
    # loop runs for every field of every batch. The field count is `Scan.count_field()` inlined.
    for (suffix, key_kind, rule, negative), value in zip(fields, node.values(), strict=True):
        kind = type(value)
        if kind is dict:
            _walk_object(scan, value, location + suffix, key_kind, inner, depth, False)
            continue
        if kind is list:
            _walk_array(scan, value, location + suffix, key_kind, inner, depth, False)
            continue
        counted = scan.fields = scan.fields + 1
        if counted >= scan.next_check:
            scan.checkpoint()
        if value is None:
            continue
        if negative:
            if kind is str and value and (value[0] == "+" or "@" in value):
                scan_id_value(scan, location + suffix, key_kind, value)
            continue
        if kind is str:
            if not value:
                continue  # nothing to judge, not even a key-only rule
            if value[0] == "+" and len(value) <= MAX_CODE_LENGTH:
                split_hint = True  # `+65` alone: the rest of the number may be a sibling
            if rule is None and len(value) < 7 and "@" not in value:
                continue
            if (
                value[0] in "{["
                and value[-1] in "}]"
                and _walk_embedded(scan, value, location + suffix, key_kind, inner, depth)
            ):
                continue
            if (
                len(value) >= MIN_BASE64
                and " " not in value  # the gate of `looks_base64`, inlined: text is skipped
                and "." not in value
                and _walk_base64(scan, value, location + suffix, key_kind, inner, depth)
            ):
                continue
            if rule == _PHONE_RULE and value[0] == "+" and is_valid_compact(value):
                # What `judge_str` finds for a valid `+<digits>` number under a phone key, without
                # a memo entry per number (a batch's numbers are all different).
                scan.add(_PHONE, location + suffix, "phone")
            elif rule in KEY_ONLY_RULES:
                key_only(scan, location + suffix, rule, inner)
            elif len(value) > MEMO_MAX_LENGTH:
                judge_str(scan, location + suffix, rule, value, inner, None)
            else:
                # Batches repeat values (sender ids, callback URLs, templates): judged once per
                # call, replayed at each new location.
                memo_key = (rule, inner, value)
                known = memo.get(memo_key)
                if known is None:
                    judge_str(scan, location + suffix, rule, value, inner, memo_key)
                elif known:
                    where = location + suffix
                    for category, detector in known:
                        scan.add(category, where, detector)
        elif rule is not None:
            scan_scalar(scan, location + suffix, key_kind, value, inner)
    if split_hint:
        scan_split_numbers(
            scan,
            [
                (location + suffix, key_kind, value)
                for (suffix, key_kind, _, _), value in zip(fields, node.values(), strict=True)
            ],
        )


def walk_pair(
    scan: Scan,
    node: dict,
    location: str,
    fields: tuple[_FieldPlan, ...],
    inner: int,
    depth: int,
) -> None:
    """An object whose label names the field its `value` holds: HubSpot's `{"property":
    "mobilephone", "value": "6591234567"}`, Marketing Cloud's and Cognito's `{"name": "Email
    Address", "value": …}`. The value is judged as that field's; the label, a field's name, is
    not judged. A label naming no field we know (`{"name": "Jan", "value": 12}`, a chart's
    point) leaves the object an ordinary one. Both walkers call this for `Ctx.PAIR` objects.
    """
    label: tuple[str, KeyInfo] | None = None
    for (suffix, key_kind, _, _), value in zip(fields, node.values(), strict=True):
        if (
            key_kind.squashed in PAIR_LABELS
            and type(value) is str
            and len(value) <= 64
            and not is_identifier_like(value)
        ):
            named = key_info(value)
            if named.rule is not None:
                label = (suffix, named)
                break
    if label is None:
        _walk_fields(scan, node, location, fields, inner & ~_PAIR, depth)
        return
    label_suffix, named = label
    for (suffix, key_kind, _, _), value in zip(fields, node.values(), strict=True):
        if suffix == label_suffix:
            scan.count_field()  # the field's name, not data
        elif key_kind.squashed == "value":
            walk(scan, value, location + suffix, named, inner, depth)
        else:
            walk(scan, value, location + suffix, key_kind, inner, depth)


def channel_context(node: dict, fields: tuple[_FieldPlan, ...], inner: int) -> int:
    """`inner` with SMS when a channel key of the object says SMS (`"ChannelType": "SMS"`).

    Called by both walkers for an object with a channel key (`Ctx.CHANNEL`) not yet an SMS's.
    """
    for (_, key_kind, _, _), value in zip(fields, node.values(), strict=True):
        if key_kind.squashed in CHANNEL_KEYS and is_sms_channel(value):
            return inner | _SMS
    return inner


def _walk_object_keyed_by_identifiers(
    scan: Scan, node: dict, location: str, info: KeyInfo | None, ctx: int, depth: int
) -> None:
    # A map keyed by phone numbers or e-mails (bulk lookup results, per-recipient variables).
    names = tuple(k for k in node if not is_identifier_like(k))
    inner = child_context(ctx, info, names)
    for key, value in node.items():
        if not is_identifier_like(key):
            walk(scan, value, location + _key_suffix(key), key_info(key), inner, depth + 1)
            continue
        scan.count_field()
        masked = f"{location}[{MASK}]"
        scan_string(scan, masked, key, is_text=False)
        is_msisdn = is_phone_value(key, scan.regions, keyed=key.isdigit() and len(key) >= 10)
        if is_msisdn:
            scan.add(cat.PHONE, masked, "phone")
        # What is filed under a phone number is about that subscriber (an HLR result per number).
        walk(scan, value, masked, _SUBSCRIBER if is_msisdn else None, inner, depth + 1)


def _walk_array(
    scan: Scan, node: list, location: str, info: KeyInfo | None, ctx: int, depth: int, in_list: bool
) -> None:
    if not node or (depth > scan.limits.max_depth and scan.too_deep(depth)):
        return
    if info is not None:
        rule = info.rule
        if not in_list and rule in LIST_CONTAINER_RULES:
            scan_container_key(scan, location, info, ctx)
        elif rule == Rule.COORDINATES and len(node) == 2 and is_lat_lng_pair(node[0], node[1]):
            scan.add(cat.LOCATION_PRECISE, location, "latlng")  # GeoJSON [lng, lat]
    depth += 1
    # A batch is a list of objects with one key set: its plan and context are looked up once
    # (what `_walk_object` does for an element of a list, without the repeated work).
    same_keys: tuple[str, ...] | None = None
    fields: tuple[_FieldPlan, ...] = ()
    inner = 0
    object_depth_ok = depth <= scan.limits.max_depth
    for index, item in enumerate(node):
        kind = type(item)
        if kind is dict:
            if object_depth_ok and item:
                keys = tuple(item)
                if keys == same_keys:
                    _walk_fields(scan, item, f"{location}[{index}]", fields, inner, depth + 1)
                    continue
                plan = _OBJECT_PLANS.get(keys)
                if plan is not None:
                    same_keys, (siblings, fields) = keys, plan
                    inner = _inner_context(ctx, info, siblings)
                    _walk_fields(scan, item, f"{location}[{index}]", fields, inner, depth + 1)
                    continue
            _walk_object(scan, item, f"{location}[{index}]", info, ctx, depth, True)
        elif kind is list:
            _walk_array(scan, item, f"{location}[{index}]", info, ctx, depth, True)
        else:
            _visit_scalar(scan, item, f"{location}[{index}]", info, ctx, depth)
