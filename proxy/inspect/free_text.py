"""Identifiers embedded in any string: phone numbers, e-mails, IPs, cards, IBANs, SSNs, secrets."""

from __future__ import annotations

import re

from proxy.inspect import categories as cat
from proxy.inspect.credentials import secret_kind
from proxy.inspect.identifiers import EMAIL_RE, is_card_number, is_iban, is_iccid, is_us_ssn
from proxy.inspect.network import IPV4_RE, is_public_ip
from proxy.inspect.phone import compact, is_valid_international, phones_in_text
from proxy.inspect.scan import Scan

# One pass over the string finds every candidate; each is then confirmed by its check.
_CANDIDATES = re.compile(
    r"(?P<plus>(?<![\w+\uff0b])[+\uff0b]\d[\d \u00a0().\-\u2010\u2011\u2013\u2014]{5,20}\d)"
    r"|(?P<tel>tel:[+\uff0b]?[\d().\-]{6,24})"
    r"|(?P<digits>(?<![\w.\-])\d(?:[ \-]?\d){11,19}(?![\w]))"
    r"|(?P<ssn>(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-]))"
    rf"|(?P<ipv4>{IPV4_RE.pattern})"
    r"|(?P<iban>(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9]))"
)
# Cheap test before running phonenumbers' matcher for national numbers in a message body.
_NATIONAL_GATE = re.compile(r"\d(?:[\s().\-]?\d){6,}")


def scan_string(scan: Scan, location: str, value: str, *, is_text: bool) -> None:
    """Add findings for identifiers inside `value`.

    `is_text` (a message body, a text/* body) also looks for national-format phone numbers with
    phonenumbers' matcher, which rejects dates and times; elsewhere only `+…` numbers count.
    """
    if "@" in value and EMAIL_RE.search(value):
        scan.add(cat.EMAIL, location, "email")
    kind = secret_kind(value)
    if kind:
        scan.add(cat.SECRET, location, kind)
    for match in _CANDIDATES.finditer(value):
        group = match.lastgroup
        text = match.group()
        if group in ("plus", "tel"):
            number = compact(text)
            if number.startswith("+") and is_valid_international(number[1:]):
                scan.add(cat.PHONE, location, "phone")
        elif group == "digits":
            if is_card_number(text):
                scan.add(cat.PAYMENT, location, "card")
            elif is_iccid(text):
                scan.add(cat.DEVICE_ID, location, "iccid")
        elif group == "ssn":
            if is_us_ssn(text, formatted_only=True):
                scan.add(cat.GOVERNMENT_ID, location, "ssn")
        elif group == "ipv4":
            if is_public_ip(text):
                scan.add(cat.IP_ADDRESS, location, "ip")
        elif group == "iban" and is_iban(text):
            scan.add(cat.PAYMENT, location, "iban")
    if is_text and _NATIONAL_GATE.search(value):
        for _offset in phones_in_text(value, scan.limits.default_region):
            scan.add(cat.PHONE, location, "phone:text")
            break
