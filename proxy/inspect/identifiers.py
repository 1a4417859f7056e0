"""Identifier detectors with check digits or fixed shapes: e-mail, SHA-256, cards, IBAN, SSN,
IMEI/IMSI/ICCID, mobile advertising ids."""

from __future__ import annotations

import base64
import binascii
import re

# python-stdnum's validators are imported by the first value shaped like what they check, not
# at start: `stdnum.util`, which every one of them imports, loads pydoc, pkgutil and sysconfig
# and looks up ~250 characters by Unicode name (~1.3 MB of an idle proxy's memory,
# bench/README.md). The first such value pays the import (~15-25 ms here) once.

# Group 1 is the top-level domain (to tell `icon@2x.png` from an address).
EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.([A-Za-z]{2,24})(?![A-Za-z0-9\-])"
)
# An address whose top-level domain is one of these is a file's name: `icon@2x.png` is an image.
FILE_SUFFIXES = frozenset(
    ["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "pdf", "mp3", "mp4", "wav"]
)
_EMAIL_FULL = re.compile(
    r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}"
)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_B64_32 = re.compile(r"[A-Za-z0-9+/]{43}=")
# A mobile advertising id (IDFA, GAID/AAID, OAID) is a UUID in its 8-4-4-4-12 form.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SSN_FORMATTED = re.compile(r"\d{3}-\d{2}-\d{4}")
_DIGIT_SEPARATORS = str.maketrans("", "", " -")


def is_email(value: str) -> bool:
    """True when the whole value is an e-mail address (`mailto:` allowed)."""
    if value[:7].lower() == "mailto:":
        value = value[7:]
    return "@" in value and _EMAIL_FULL.fullmatch(value.strip()) is not None


def is_sha256(value: str) -> bool:
    """True for a SHA-256 digest written as 64 hex digits or as base64 (how marketing APIs hash)."""
    if len(value) == 64:
        return _HEX64.fullmatch(value) is not None
    if len(value) == 44 and _B64_32.fullmatch(value):
        try:
            return len(base64.b64decode(value, validate=True)) == 32
        except (binascii.Error, ValueError):
            return False
    return False


def _digits(value: str) -> str:
    return value.translate(_DIGIT_SEPARATORS)


def is_card_number(value: str) -> bool:
    """A payment card PAN: 13-19 digits, a known issuer range, and a valid Luhn check digit."""
    digits = _digits(value)
    if not digits.isdecimal() or not 13 <= len(digits) <= 19 or not _is_issuer_range(digits):
        return False
    from stdnum import luhn

    return luhn.is_valid(digits)


def _is_issuer_range(digits: str) -> bool:
    # ISO/IEC 7812 IIN ranges of the schemes cards are issued under (Visa, Mastercard, Amex,
    # Discover, JCB, Diners, UnionPay, Maestro); python-stdnum has Luhn but no issuer table.
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 222100 <= six <= 272099:
        return n == 16
    if two in (34, 37):
        return n == 15
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= six <= 622925:
        return 16 <= n <= 19
    if 3528 <= four <= 3589:
        return 16 <= n <= 19
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19
    if two == 62:
        return 16 <= n <= 19
    if two in (50, 56, 57, 58) or digits[0] == "6":
        return 12 <= n <= 19 and two != 60
    return False


def is_iban(value: str) -> bool:
    """A valid IBAN (country format and mod-97 check)."""
    if len(value) < 15 or not value[:2].isalpha():
        return False
    # `stdnum.iban` reads its country table through importlib.resources (which loads tempfile,
    # zipfile, random): ~1 MB more.
    from stdnum import iban

    return iban.is_valid(value)


def is_us_ssn(value: str, *, formatted_only: bool) -> bool:
    """A US SSN; without a key hint only the `NNN-NN-NNNN` form counts (9 bare digits are anything)."""
    value = value.strip()
    if formatted_only and not _SSN_FORMATTED.fullmatch(value):
        return False
    from stdnum.us import ssn

    return ssn.is_valid(value)


def is_imei(value: str) -> bool:
    """An IMEI (15 digits with Luhn) or IMEISV (16 digits)."""
    from stdnum import imei

    return imei.is_valid(value)


def is_imsi(value: str) -> bool:
    """An IMSI (MCC + MNC + MSIN, 14-15 digits, known MCC)."""
    from stdnum import imsi

    return imsi.is_valid(value)


def is_iccid(value: str) -> bool:
    """A SIM ICCID: `89` (telecom) prefix, 19-20 digits, Luhn check digit."""
    digits = _digits(value)
    if not (digits.isdecimal() and len(digits) in (19, 20) and digits[:2] == "89"):
        return False
    from stdnum import luhn

    return luhn.is_valid(digits)


def is_advertising_id(value: str) -> bool:
    """A mobile advertising id: a UUID, but not the all-zero one a device sends when its user
    limited ad tracking (it names no device)."""
    value = value.strip()
    is_uuid = len(value) == 36 and _UUID.fullmatch(value) is not None
    return is_uuid and value.strip("0-") != ""
