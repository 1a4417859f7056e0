"""The URL: query parameters and path segments (`/v2/PhoneNumbers/+14155552671`, `/hlr/4477…`)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from proxy.inspect import categories as cat
from proxy.inspect.form import parse_pairs, scan_pairs
from proxy.inspect.identifiers import is_email
from proxy.inspect.network import is_public_ip
from proxy.inspect.phone import is_phone_value
from proxy.inspect.scan import Scan
from sharewall import hosts

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


def split_url(url: str) -> tuple[str, list[str]]:
    """The query string and the decoded, non-empty path segments of a URL (parsed once a call)."""
    parts = hosts.split_url(url)
    # `unquote` is a Python call: most segments (`v1`, `messages`) have nothing to decode.
    return parts.query or "", [unquote(s) if "%" in s else s for s in parts.path.split("/") if s]


def _word(segment: str) -> str:
    # `Phone-Numbers` → `phonenumbers`; most segments are already one plain word.
    lower = segment.lower()
    return lower if lower.isalnum() else "".join(ch for ch in lower if ch.isalnum())


def is_mobile_path(segments: list[str]) -> bool:
    """True for an HLR / number-lookup endpoint (its query and body speak about a handset)."""
    return not _MOBILE_PATH_WORDS.isdisjoint(map(_word, segments))  # no generator: every call


def scan_url(scan: Scan, query: str, segments: list[str], ctx: int) -> None:
    """Scan the query string (`query:<key>`) and the path segments (`path:<n>`) of `split_url()`."""
    if query:
        # Credentials the recipient's API takes in the query (`api_key`, `access_token`) are
        # judged like any field: authentication at the top level (see credentials.py).
        scan_pairs(scan, parse_pairs(query, scan), "query", ctx)
    previous = ""
    # `path:<n>`: the n-th non-empty segment (1-based), so that the logs can replace it.
    for position, segment in enumerate(segments, start=1):
        scan.count_field()
        if not _DIGIT_OR_AT.search(segment):
            previous = segment  # `sms`, `text`, `advanced`: names, not data
            continue
        # A phone number has 6 digits or more, an e-mail address an `@`: a version segment
        # (`v1`) is not judged.
        if len(segment) >= 6 and is_phone_value(
            segment, scan.regions, keyed=_word(previous) in _PHONE_PATH_PARENTS
        ):
            scan.add(cat.PHONE, f"path:{position}", "phone")
        elif "@" in segment and is_email(segment):
            scan.add(cat.EMAIL, f"path:{position}", "email")
        elif (segment[:1].isdigit() or ":" in segment) and is_public_ip(segment):
            scan.add(cat.IP_ADDRESS, f"path:{position}", "ip")
        previous = segment
