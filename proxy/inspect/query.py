"""The URL: query parameters and path segments (`/v2/PhoneNumbers/+14155552671`, `/hlr/4477…`)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from proxy.inspect import categories as cat
from proxy.inspect.form import parse_pairs, scan_pairs
from proxy.inspect.identifiers import is_email
from proxy.inspect.keys import Rule, key_info
from proxy.inspect.network import is_public_ip
from proxy.inspect.phone import is_phone_value
from proxy.inspect.scan import Scan

# Path segments after which a bare number is a phone number (lookup and HLR endpoints).
_PHONE_PATH_PARENTS = frozenset(
    [
        "phonenumbers",
        "phonenumber",
        "phone",
        "phones",
        "msisdn",
        "msisdns",
        "hlr",
        "lookup",
        "lookups",
        "numbers",
        "number",
        "mnp",
        "numberlookup",
        "numberinsight",
        "ni",
        "tel",
        "subscribers",
        "subscriber",
        "mobile",
    ]
)
# Path words that mark an HLR / number-lookup API: `status`, `valid`, `carrier` there are mobile data.
_MOBILE_PATH_WORDS = frozenset(
    [
        "hlr",
        "hlrlookup",
        "hlrlookups",
        "phonenumbers",
        "numberlookup",
        "numberinsight",
        "ni",
        "mnp",
        "mnplookup",
        "msisdn",
        "msisdns",
        "carrierlookup",
        "portability",
        "roaming",
    ]
)


_DIGIT_OR_AT = re.compile(r"[\d@]")


def _path_segments(url: str) -> list[str]:
    return [unquote(s) for s in urlsplit(url).path.split("/") if s]


def is_mobile_path(url: str) -> bool:
    """True for an HLR / number-lookup endpoint (its query and body speak about a handset)."""
    return any(
        "".join(ch for ch in s.lower() if ch.isalnum()) in _MOBILE_PATH_WORDS
        for s in _path_segments(url)
    )


def scan_url(scan: Scan, url: str, ctx: int) -> None:
    """Scan the query string (`query:<key>`) and the path segments (`path`)."""
    parts = urlsplit(url)
    if parts.query:
        pairs = [
            (k, v)
            for k, v in parse_pairs(parts.query, scan)
            if key_info(k).rule != Rule.VENDOR_CREDENTIAL
        ]
        scan_pairs(scan, pairs, "query", ctx)
    previous = ""
    for segment in _path_segments(url):
        scan.count_field()
        if not _DIGIT_OR_AT.search(segment):
            previous = segment  # `sms`, `text`, `advanced`: names, not data
            continue
        keyed = "".join(ch for ch in previous.lower() if ch.isalnum()) in _PHONE_PATH_PARENTS
        if is_phone_value(segment, scan.regions, keyed=keyed):
            scan.add(cat.PHONE, "path", "phone")
        elif is_email(segment):
            scan.add(cat.EMAIL, "path", "email")
        elif (segment[:1].isdigit() or ":" in segment) and is_public_ip(segment):
            scan.add(cat.IP_ADDRESS, "path", "ip")
        previous = segment
