"""Walk a decoded tree (JSON, or JSON found inside a string) field by field, keeping context."""

from __future__ import annotations

import re
from functools import lru_cache

import orjson

from proxy.inspect import categories as cat
from proxy.inspect.fields import is_lat_lng_pair, scan_container_key, scan_scalar
from proxy.inspect.free_text import scan_string
from proxy.inspect.keys import (
    MASK,
    STICKY,
    Ctx,
    KeyInfo,
    Rule,
    any_identifier_like,
    is_identifier_like,
    key_info,
    sibling_context,
)
from proxy.inspect.phone import is_phone_value
from proxy.inspect.scan import Scan

# The key info of a phone number used as a key: its object is about that subscriber.
_SUBSCRIBER = KeyInfo(MASK, (), MASK, None, False, Ctx.MOBILE, Ctx.NONE)
_PLAIN_KEY = re.compile(r"[A-Za-z_$@][A-Za-z0-9_\-:.]{0,63}")


@lru_cache(maxsize=8192)
def _key_suffix(key: str) -> str:
    # A key that is not a plain name (`Mei Tan`, `Köln`) may be data itself: it is not shown.
    return f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{MASK}]"


def child_location(location: str, key: str) -> str:
    """`$.a` + `b` → `$.a.b`; keys that are not plain names are masked: `$.a[*]`."""
    return location + _key_suffix(key)


def child_context(ctx: int, info: KeyInfo | None, keys: tuple[str, ...]) -> int:
    """The context of an object: sticky flags from above, its key's flags, its own keys' flags."""
    flags = (ctx & STICKY) | sibling_context(keys)
    if info is not None:
        flags |= info.parent_flags
        if info.parent_flags & (Ctx.NOT_PERSON | Ctx.EMPLOYER):
            flags &= ~Ctx.PERSON  # `product.name`, `company.name` are not a person's name
    return flags


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
    if node is None or (info is not None and info.is_negative):
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
    if node[:1] in "{[" and node[-1:] in "}]":
        # JSON sent as a string field (webhook `payload`, Segment `properties` as text).
        try:
            nested = orjson.loads(node)
        except orjson.JSONDecodeError:
            nested = None
        if isinstance(nested, dict | list):
            walk(scan, nested, location, info, ctx, depth + 1)
            return
    scan_scalar(scan, location, info, node, ctx)


def _walk_object(
    scan: Scan, node: dict, location: str, info: KeyInfo | None, ctx: int, depth: int, in_list: bool
) -> None:
    if depth > scan.limits.max_depth and scan.too_deep(depth):
        return
    if node and not in_list:
        scan_container_key(scan, location, info, ctx)
    keys = tuple(node)
    if any_identifier_like(keys):
        _walk_object_keyed_by_identifiers(scan, node, location, info, ctx, depth)
        return
    inner = child_context(ctx, info, keys)
    depth += 1
    # Scalars are handled inline (no call, no location string) when they cannot matter: this
    # loop runs for every field of every batch.
    for key, value in node.items():
        kind = type(value)
        key_kind = key_info(key)
        if kind is dict or kind is list:
            walk(scan, value, location + _key_suffix(key), key_kind, inner, depth)
            continue
        scan.count_field()
        if value is None or key_kind.is_negative:
            continue
        if kind is str:
            if key_kind.rule is None and len(value) < 7 and "@" not in value:
                continue
            _visit_str(scan, value, location + _key_suffix(key), key_kind, inner, depth)
        elif key_kind.rule is not None:
            scan_scalar(scan, location + _key_suffix(key), key_kind, value, inner)


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
    if not in_list:
        scan_container_key(scan, location, info, ctx)
    if (
        info is not None
        and info.rule == Rule.COORDINATES
        and len(node) == 2
        and is_lat_lng_pair(node[0], node[1])
    ):
        scan.add(cat.LOCATION_PRECISE, location, "latlng")  # GeoJSON [lng, lat]
    for index, item in enumerate(node):
        walk(scan, item, f"{location}[{index}]", info, ctx, depth + 1, in_list=True)
