"""Identifiers embedded in any string: phone numbers, e-mails, IPs, cards, IBANs, SSNs, secrets."""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.inspect import categories as cat
from proxy.inspect.address import GATE as ADDRESS_GATE
from proxy.inspect.address import has_postal_address
from proxy.inspect.credentials import may_hold_secret, secret_kind
from proxy.inspect.encoded import JWT_SHAPE, strip_invisible
from proxy.inspect.identifiers import (
    EMAIL_RE,
    FILE_SUFFIXES,
    is_card_number,
    is_iban,
    is_iccid,
    is_us_ssn,
)
from proxy.inspect.network import IPV4_RE, is_public_ip
from proxy.inspect.phone import (
    ascii_digits,
    compact,
    is_possible_international,
    is_valid_international,
    is_valid_national,
)
from proxy.inspect.scan import Scan

# One cheap pass finds "numeric tokens" (digits with separators, maybe a leading plus); each is
# then classified in Python. A single simple pattern is several times faster in `re` than an
# alternation of lookbehind-guarded patterns, and most strings have no token at all.
_NUMERIC_TOKEN = re.compile(r"[+\uff0b\d][\d \u00a0().\-\u2010\u2011\u2012\u2013\u2014]{5,28}\d")
# The same pattern for ASCII text (most payloads), where it finds the same tokens: about twice as
# fast in `re`, whose Unicode classes cost a lookup per character.
_NUMERIC_TOKEN_ASCII = re.compile(r"[+0-9][0-9 ().\-]{5,28}[0-9]")
_SSN_IN = re.compile(r"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-])")
_IBAN_GATE = re.compile(r"[A-Z][A-Z]\d\d")  # `[A-Z]{2}` is 3x slower in `re` than this
_IBAN_IN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# A number right after one of these words is a reference, not a phone ("order 8812 2291").
_REFERENCE_WORDS = frozenset(
    [
        "order",
        "invoice",
        "inv",
        "ref",
        "reference",
        "code",
        "otp",
        "pin",
        "id",
        "no",
        "nr",
        "#",
        "tracking",
        "account",
        "acct",
        "txn",
        "transaction",
        "booking",
        "parcel",
        "awb",
        "receipt",
        "ticket",
        "case",
        "pnr",
        "sku",
        "serial",
        "amount",
        "total",
    ]
)
_WORD_BEFORE = re.compile(r"(#|\w+)\W{0,3}$")
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_MAX_NATIONAL = 32
_KEEP_DIGITS = str.maketrans("", "", " \u00a0().-\u2010\u2011\u2012\u2013\u2014")
# The native pre-scan (`native.install`): `prescan(value, is_text)` is False when no detector of
# `scan_string` can fire on `value`. None: the pure-Python path, every string scanned in full.
prescan: Callable[[str, bool], bool] | None = None


def scan_string(scan: Scan, location: str, value: str, *, is_text: bool) -> None:
    """Add findings for identifiers inside `value`.

    `is_text` (a message body, a text/* body) also looks for national-format phone numbers with
    phonenumbers' matcher, which rejects dates and times, for IBANs inside sentences and for
    postal addresses typed into the text;
    elsewhere only explicit international numbers (`+…`, `00…`) count as phones. Format characters
    (zero-width spaces, bidi marks) are removed first: they hide nothing from us.
    """
    if prescan is not None and not prescan(value, is_text):
        return
    if not value.isascii():
        value = strip_invisible(value)
    if "@" in value and any(m[1].lower() not in FILE_SUFFIXES for m in EMAIL_RE.finditer(value)):
        scan.add(cat.EMAIL, location, "email")
    if may_hold_secret(value):
        kind = secret_kind(value)
        if kind:
            scan.add(cat.SECRET, location, kind)
        if "eyJ" in value:
            _scan_jwts(scan, location, value)
    national: list[tuple[int, int]] = []
    tokens = _NUMERIC_TOKEN_ASCII if value.isascii() else _NUMERIC_TOKEN
    # Most strings hold no token: one `search` is cheaper than starting `finditer`.
    first = tokens.search(value)
    for match in tokens.finditer(value, first.start()) if first is not None else ():
        start = match.start()
        if start and (value[start - 1].isalnum() or value[start - 1] in "_+"):
            continue  # inside a word or an id (`INV-2024…`, `a1b2…`)
        token = match.group()
        if token[0] in "+\uff0b":
            # A `+` says it is a number: a possible one counts (`+1 555 867 5310`).
            number = compact(token)
            if is_valid_international(number[1:]) or is_possible_international(number[1:]):
                scan.add(cat.PHONE, location, "phone")
            continue
        if token[:2] == "00" and token[2:3] != "0" and _is_dialled_international(value, match):
            scan.add(cat.PHONE, location, "phone")
            continue
        if "." in token and token.count(".") >= 3:
            for ip in IPV4_RE.findall(token):
                if is_public_ip(ip):
                    scan.add(cat.IP_ADDRESS, location, "ip")
                    break
            continue
        if (
            token.count("-") >= 2  # an SSN has two dashes: skip the search otherwise
            and _SSN_IN.search(token)
            and is_us_ssn(_SSN_IN.search(token)[0], formatted_only=True)
        ):
            scan.add(cat.GOVERNMENT_ID, location, "ssn")
            continue
        digits = token.translate(_KEEP_DIGITS)
        if 12 <= len(digits) <= 20 and digits.isdecimal():
            if is_card_number(digits):
                scan.add(cat.PAYMENT, location, "card")
                continue
            if is_iccid(digits):
                scan.add(cat.DEVICE_ID, location, "iccid")
                continue
        if len(digits) >= 7:
            national.append((start, match.end()))
    if is_text:
        region = scan.limits.default_region
        for start, end in national[:_MAX_NATIONAL]:
            if _is_national_phone(value, start, end, region):
                scan.add(cat.PHONE, location, "phone:text")
                break
        for match in _IBAN_IN.finditer(value) if _IBAN_GATE.search(value) else ():
            if is_iban(match.group()):
                scan.add(cat.PAYMENT, location, "iban")
                break
        # `might_hold_address`, inlined: it runs for every message body.
        if (
            "#" in value or "/F" in value or ADDRESS_GATE.search(value) is not None
        ) and has_postal_address(value):
            scan.add(cat.POSTAL_ADDRESS, location, "address:text")
    elif 15 <= len(value) <= 42 and value[:2].isalpha() and value[2:4].isdigit() and is_iban(value):
        scan.add(cat.PAYMENT, location, "iban")


_BARE_INTERNATIONAL = re.compile(r"(?<![\d+\-.])\d{10,15}(?![\d\-.])")


def scan_bare_numbers(scan: Scan, location: str, value: str) -> None:
    """International numbers written without `+` (`6591234567`) in a string of a schema-less
    format (a GraphQL literal, a protobuf string), where nothing else says what they are."""
    for match in _BARE_INTERNATIONAL.finditer(value):
        if is_valid_international(match.group()):
            scan.add(cat.PHONE, location, "phone:text")
            return


def _is_dialled_international(text: str, match: re.Match[str]) -> bool:
    """`0065 9123 4567`: the `00` international prefix dialled before a valid number.

    Only digits and spaces, ten digits at least, and not part of a longer number or decimal.
    """
    token = match.group()
    end = match.end()
    if any(ch in token for ch in ".()") or (end < len(text) and text[end] in ".,"):
        return False
    number = compact(token)
    return len(number) >= 11 and is_valid_international(number[1:])


def _scan_jwts(scan: Scan, location: str, value: str) -> None:
    # The claims of a token are data about its subject (`phone_number`, `email`).
    from proxy.inspect.walk import scan_jwt_claims  # walk imports this module

    for match in JWT_SHAPE.finditer(value):
        scan_jwt_claims(scan, location, match.group(), 0)


def _is_national_phone(text: str, start: int, end: int, region: str) -> bool:
    """A nationally written number in free text.

    phonenumbers' `PhoneNumberMatcher` costs ~200 µs a candidate here; this is the same metadata
    validity check, then the rejections we need: decimals, dates, times, references.
    """
    token = text[start:end]
    digits = token.translate(_KEEP_DIGITS)
    if not digits.isdecimal() or not is_valid_national(ascii_digits(digits), region):
        return False
    if token.count(".") == 1 or _DATE_LIKE.search(token):
        return False  # a decimal amount or a date
    if end < len(text) and text[end] in ".,:" and text[end + 1 : end + 2].isdigit():
        return False  # part of a larger number (`1 234 567,89`, a time)
    if _is_inside_url(text, start):
        return False  # a path or query segment of a link (`https://acme.example/t/8812-2291`)
    before = _WORD_BEFORE.search(text, max(0, start - 24), start)
    return before is None or before[1].lower() not in _REFERENCE_WORDS


def _is_inside_url(text: str, start: int) -> bool:
    """Whether the token at `start` belongs to a link written in the text."""
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    prefix = text[word_start:start]
    return "://" in prefix or prefix.startswith("www.")
