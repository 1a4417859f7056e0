"""Phone numbers: a fast validity check on phonenumbers' metadata, and matching in free text.

`phonenumbers.parse()` + `is_valid_number()` cost ~45 µs a number; an inspector sees thousands of
numbers in a batch. We validate a national significant number against one precompiled regex per
region (the union of the region's number-type patterns, which is what `is_valid_number` tests),
about 1 µs. Free text uses the same check (see `free_text.py`) rather than `PhoneNumberMatcher`,
which costs ~200 µs a candidate.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache

from proxy.package_init import register_without_init

# The metadata and its data only: not the formatter, matcher and short-number tables its
# package `__init__` imports (~0.4 MB of an idle sidecar), nor `phonenumberutil` (parsing and
# formatting we do not call, ~0.5 MB), whose public `COUNTRY_CODE_TO_REGION_CODE` is this very
# map of the generated data (a test checks it is).
register_without_init("phonenumbers")
from phonenumbers.data import _COUNTRY_CODE_TO_REGION_CODE as COUNTRY_CODE_TO_REGION_CODE  # noqa: E402
from phonenumbers.phonemetadata import PhoneMetadata  # noqa: E402

from proxy.inspect.encoded import strip_invisible  # noqa: E402

# The number types `is_valid_number` accepts (anything but UNKNOWN).
_TYPE_DESCS = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)
_NON_GEO_CODES = frozenset({800, 808, 870, 878, 881, 882, 883, 888, 979})

# Separators people and APIs put inside numbers (ASCII and common unicode dashes/spaces).
_SEPARATORS = (
    " \t\u00a0\u2000\u2001\u2002\u2003\u2009\u202f().-\u2010\u2011\u2012\u2013\u2014\u2212/\u00b7"
)
_STRIP_TABLE = str.maketrans("", "", _SEPARATORS)
_PLUS_CHARS = ("+", "\uff0b")  # ASCII and fullwidth plus


class _RegionPlan:
    """The validity test of one region: possible lengths and the union of type patterns.

    The union is compiled on the first national number of the region: an international number
    is checked by `_by_length`'s per-country unions, which only need the source (`+1` alone
    would compile 25 region patterns it never runs: ~30 ms of start-up and their memory).
    """

    __slots__ = ("_compiled", "lengths", "national_prefix", "source")

    def __init__(self, meta: PhoneMetadata) -> None:
        patterns = []
        for name in _TYPE_DESCS:
            desc = getattr(meta, name, None)
            if desc is not None and desc.national_number_pattern:
                patterns.append(desc.national_number_pattern)
        self.source = "(?:" + "|".join(patterns) + ")" if patterns else None
        self._compiled: re.Pattern[str] | None = None
        self.lengths = frozenset(meta.general_desc.possible_length or ())
        self.national_prefix = meta.national_prefix or ""

    def is_valid_nsn(self, nsn: str) -> bool:
        if self.source is None or len(nsn) not in self.lengths:
            return False
        if self._compiled is None:
            self._compiled = re.compile(self.source)
        return self._compiled.fullmatch(nsn) is not None


@cache
def _region_plan(region: str) -> _RegionPlan | None:
    meta = PhoneMetadata.metadata_for_region(region)
    return _RegionPlan(meta) if meta is not None else None


@cache
def example_numbers(region: str) -> tuple[str, str] | None:
    """A mobile example number of `region` from its metadata, (national, E.164); None if none.

    National is the national significant number alone: where a national prefix is dialled
    differs by number type (Colombia's mobiles take none), and the inspector takes both."""
    meta = PhoneMetadata.metadata_for_region(region)
    number = meta.mobile.example_number if meta is not None and meta.mobile else None
    if number is None:
        return None
    return number, f"+{meta.country_code}{number}"


def _country_plans(code: int) -> tuple[_RegionPlan, ...]:
    if code in _NON_GEO_CODES:
        meta = PhoneMetadata.metadata_for_nongeo_region(code)
        return (_RegionPlan(meta),) if meta is not None else ()
    plans = (_region_plan(r) for r in COUNTRY_CODE_TO_REGION_CODE.get(code, ()))
    return tuple(p for p in plans if p is not None)


def ascii_digits(value: str) -> str:
    """Map unicode decimal digits (fullwidth, Arabic-Indic, ...) to ASCII; other characters kept."""
    if value.isascii():
        return value
    out = []
    for ch in value:
        if ch in _PLUS_CHARS:
            out.append("+")
            continue
        digit = unicodedata.decimal(ch, None)
        out.append(str(digit) if digit is not None else ch)
    return "".join(out)


def compact(value: str) -> str:
    """The number without separators, with ASCII digits, and `tel:` / `00` prefixes as `+`."""
    if not value.isascii():
        value = strip_invisible(value)
    value = ascii_digits(value.strip())
    if value[:4].lower() == "tel:":
        value = value[4:].split(";", 1)[0]  # RFC 3966 parameters (";ext=", ";phone-context=")
    value = value.translate(_STRIP_TABLE)
    if value.startswith("00") and value[2:3] != "0":
        value = "+" + value[2:]
    return value


def _by_length(plans: tuple[_RegionPlan, ...]) -> dict[int, re.Pattern[str]]:
    """National number length → one pattern: the union of the regions that allow that length.

    `+1` is 25 regions: one `fullmatch` of the union instead of up to 25 tries in Python.
    """
    patterns: dict[int, list[str]] = {}
    for plan in plans:
        if plan.source is None:
            continue
        for length in plan.lengths:
            group = patterns.setdefault(length, [])
            if plan.source not in group:
                group.append(plan.source)
    return {length: re.compile("|".join(group)) for length, group in patterns.items()}


# The first three digits of an international number → (length of its country code, the check
# by national number length); (0, {}) when no country code starts it. At most 1,000 entries.
_BY_PREFIX: dict[str, tuple[int, dict[int, re.Pattern[str]]]] = {}


@cache
def _country_check(code: int) -> dict[int, re.Pattern[str]]:
    return _by_length(_country_plans(code))


def _prefix_entry(prefix: str) -> tuple[int, dict[int, re.Pattern[str]]]:
    entry = _BY_PREFIX.get(prefix)
    if entry is None:
        entry = (0, {})
        for size in (1, 2, 3):
            code = int(prefix[:size])
            if _country_plans(code):
                entry = (size, _country_check(code))
                break
        if prefix.isascii():  # other decimal digits are rare: not worth a cache entry
            _BY_PREFIX[prefix] = entry
    return entry


def is_valid_international(digits: str) -> bool:
    """True when `digits` (country code + national number, no `+`) is a valid number."""
    if not 7 <= len(digits) <= 15 or not digits.isdecimal():
        return False
    size, check = _prefix_entry(digits[:3])
    if not size:
        return False
    pattern = check.get(len(digits) - size)
    return pattern is not None and pattern.fullmatch(digits[size:]) is not None


@cache
def _possible_lengths(code: int) -> frozenset[int]:
    return frozenset().union(*(plan.lengths for plan in _country_plans(code)))


def is_possible_international(digits: str) -> bool:
    """True when `digits` has the shape of a number of its country code: a national number of a
    length the country's plan allows, valid or not.

    For a number that says it is one (`+…`, or under a phone key): reserved and fictional
    ranges are still numbers, and they are the ones API documentation uses (`+1 555 867 5310`,
    Ofcom's drama range `+44 7700 900000`). In the North American plan the area code and the
    exchange cannot start with 0 or 1.
    """
    if not 8 <= len(digits) <= 15 or not digits.isdecimal():
        return False
    size, _ = _prefix_entry(digits[:3])
    if not size:
        return False
    code, national = int(digits[:size]), digits[size:]
    if len(national) not in _possible_lengths(code):
        return False
    return code != 1 or (national[0] not in "01" and national[3] not in "01")


def is_valid_compact(value: str) -> bool:
    """A valid number written `+` and ASCII digits (how APIs send them): the walker's fast path.

    `_native.c` has its twin (it reads `_BY_PREFIX` and calls this function on a miss).

    False says nothing (`+65 9123 4567` is valid too): the caller then judges the value in full.
    """
    return (
        value[:1] == "+"
        and value.isascii()
        and value[1:].isdigit()
        and is_valid_international(value[1:])
    )


def is_valid_national(digits: str, region: str) -> bool:
    """True when `digits` is a valid number written nationally in `region` (trunk prefix allowed)."""
    plan = _region_plan(region)
    if plan is None or not digits.isdecimal():
        return False
    if plan.is_valid_nsn(digits):
        return True
    prefix = plan.national_prefix
    return bool(prefix) and digits.startswith(prefix) and plan.is_valid_nsn(digits[len(prefix) :])


def is_phone_value(value: str, regions: Sequence[str], *, keyed: bool) -> bool:
    """True when `value` is a valid phone number.

    `keyed=False` (a value under an unrelated key) accepts only explicit international numbers
    (`+…`, `00…`, `tel:+…`). `keyed=True` (under a phone-like key) also accepts national numbers in
    `regions` and of the North American plan (ten digits, +1 implied), international numbers
    written without their `+` (MessageBird, Vonage), and
    numbers that are possible but not valid (documentation's `+1 555` numbers): of 11 digits at
    least without a `+`.
    """
    if not value or len(value) > 40:
        return False
    if value[0] == "+" and value.isascii() and value[1:].isdigit():
        number = value  # already compact (the usual API form): skip `compact()`
    else:
        number = compact(value)
    if number.startswith("+"):
        digits = number[1:]
        return is_valid_international(digits) or (keyed and is_possible_international(digits))
    if not keyed or not number.isdecimal() or len(number) < 6:
        return False
    if len(number) == 10 and is_possible_international("1" + number):
        # Ten digits shaped as a North American number (`"to": "4165550123"`, how apps in the
        # US and Canada write one): +1 is one plan of 25 regions, not the `US` region alone,
        # whose metadata leaves out Toronto and Jamaica (read as nothing, or as Malaysia's +60).
        return True
    if any(is_valid_national(number, region) for region in regions):
        return True
    if len(number) < 10:
        return False
    return is_valid_international(number) or (
        len(number) >= 11 and is_possible_international(number)
    )


def is_phone_int(value: int, regions: Sequence[str]) -> bool:
    """A JSON number under a phone-like key (`"to": 6591234567`)."""
    return value > 0 and is_phone_value(str(value), regions, keyed=True)
