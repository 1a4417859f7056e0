"""The URL: query parameters and path segments (`/v2/PhoneNumbers/+14155552671`, `/hlr/4477…`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import NamedTuple
from urllib.parse import unquote

from proxy.inspect import categories as cat
from proxy.inspect.encoded import enter_layer
from proxy.inspect.form import parse_pairs, scan_pairs
from proxy.inspect.identifiers import FILE_SUFFIXES, is_email
from proxy.inspect.keys import Ctx, normalise_key
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


# An endpoint that records SMS opt-outs or opt-ins (Airship's `/channels/sms/opt-out`, Azure
# Communication Services' `/sms/optouts:add`): a path word of the text channel, then one of an
# opt-out or opt-in (as `normalise_key` splits it). Asking for a status is no record of one.
_SMS_PATH_WORDS = frozenset({"sms", "mms"})
_OPT_PATH_TOKENS = frozenset(
    {"optout", "optouts", "optin", "optins", "unsubscribe", "unsubscribes", "unstop"}
)
_OPT_PATH_PAIRS = frozenset({("opt", "out"), ("opt", "in"), ("opt", "outs"), ("opt", "ins")})
_QUERY_PATH_TOKENS = frozenset({"check", "list", "get", "lookup", "search", "status"})

_DIGIT_OR_AT = re.compile(r"[\d@]")
# A URL without a query or fragment up to this long is planned once (`url_plan`): an app calls
# the same few endpoints, and a query may carry values (credentials) not worth keeping around.
_PLANNED_URL_MAX = 256
_PLANNED_URLS = 1024


class UrlPlan(NamedTuple):
    """What inspecting a URL starts from: its query, its path segments and what they are."""

    query: str
    segments: Sequence[str]  # decoded, non-empty path segments
    mobile: bool  # an HLR / number-lookup endpoint (`is_mobile_path`)
    records_consent: bool  # an SMS opt-out / opt-in endpoint (`is_sms_consent_path`)
    # Per segment, what it holds (`path_verdicts`); None: judged as the scan reaches them.
    verdicts: Sequence[tuple[str, str, str] | None] | None


def url_plan(url: str, regions: tuple[str, ...]) -> UrlPlan:
    """`split_url`, `is_mobile_path` and, for a plain URL, its path judged: once per URL.

    Pure functions of the URL (and of the phone regions): a URL without a query or fragment
    of up to `_PLANNED_URL_MAX` characters is answered from a bounded cache; any other is
    worked out each time, its path judged segment by segment as the scan counts them.
    """
    if len(url) <= _PLANNED_URL_MAX and "?" not in url and "#" not in url:
        return _plain_url_plan(url, regions)
    query, segments = split_url(url)
    return UrlPlan(query, segments, is_mobile_path(segments), is_sms_consent_path(segments), None)


@functools.lru_cache(maxsize=_PLANNED_URLS)
def _plain_url_plan(url: str, regions: tuple[str, ...]) -> UrlPlan:
    query, segments = split_url(url)
    judged = tuple(path_verdicts(segments, regions))
    return UrlPlan(
        query, tuple(segments), is_mobile_path(segments), is_sms_consent_path(segments), judged
    )


def split_url(url: str) -> tuple[str, list[str]]:
    """The query string and the decoded, non-empty path segments of a URL (parsed once a call)."""
    parts = hosts.split_url(url)
    # `unquote` is a Python call: most segments (`v1`, `messages`) have nothing to decode.
    return parts.query or "", [unquote(s) if "%" in s else s for s in parts.path.split("/") if s]


def _word(segment: str) -> str:
    # `Phone-Numbers` → `phonenumbers`; most segments are already one plain word.
    lower = segment.lower()
    return lower if lower.isalnum() else "".join(ch for ch in lower if ch.isalnum())


def is_mobile_path(segments: Sequence[str]) -> bool:
    """True for an HLR / number-lookup endpoint (its query and body speak about a handset)."""
    return not _MOBILE_PATH_WORDS.isdisjoint(map(_word, segments))  # no generator: every call


def is_sms_consent_path(segments: Sequence[str]) -> bool:
    """True for an endpoint that records SMS consent: an opt-out or opt-in segment after an SMS
    one (`/api/channels/sms/opt-out`, `/sms/optouts:add`). Whatever numbers it is sent, the call
    says they opted out (or in): an SMS consent record, as the policy means it."""
    sms = False
    for segment in segments:
        if not sms:
            sms = _word(segment) in _SMS_PATH_WORDS
            continue
        tokens = normalise_key(segment)
        if (
            not _OPT_PATH_TOKENS.isdisjoint(tokens)
            or not _OPT_PATH_PAIRS.isdisjoint(pairwise(tokens))
        ) and _QUERY_PATH_TOKENS.isdisjoint(tokens):
            return True
    return False


def path_verdicts(
    segments: Sequence[str], regions: tuple[str, ...]
) -> Iterator[tuple[str, str, str] | None]:
    """Per path segment, in order: the finding it is (category, `path:<n>`, detector), or None.

    `path:<n>`: the n-th non-empty segment (1-based), so that the logs can replace it.
    """
    previous = ""
    for position, segment in enumerate(segments, start=1):
        verdict = None
        # `sms`, `text`, `advanced`: names, not data. A phone number has 6 digits or more, an
        # e-mail address an `@`: a version segment (`v1`) is not judged.
        if _DIGIT_OR_AT.search(segment):
            if len(segment) >= 6 and is_phone_value(
                segment, regions, keyed=_word(previous) in _PHONE_PATH_PARENTS
            ):
                verdict = (cat.PHONE, f"path:{position}", "phone")
            elif (
                "@" in segment
                and is_email(segment)
                and segment.rpartition(".")[2].lower() not in FILE_SUFFIXES  # `icon@2x.png`
            ):
                verdict = (cat.EMAIL, f"path:{position}", "email")
            elif (segment[:1].isdigit() or ":" in segment) and is_public_ip(segment):
                verdict = (cat.IP_ADDRESS, f"path:{position}", "ip")
        yield verdict
        previous = segment


def scan_url_value(scan: Scan, location: str, url: str, ctx: int) -> None:
    """A URL sent as a field's value (a status callback, a link): its query fields and path
    segments, located under the field (`form:StatusCallback>query:msisdn`, `…>path:3`).

    Its path is judged through `url_plan` (a callback's path, the same call after call, is
    judged once); its query, which may hold anything, every time.
    """
    if not enter_layer(scan):
        return
    try:
        base, _, query = url.partition("#")[0].partition("?")
        if query:
            # Undone by the field's own encoding, a `+` here is a number's, not a space.
            pairs = parse_pairs(query.replace("+", "%2B"), scan)
            scan_pairs(scan, pairs, f"{location}>query", ctx & ~Ctx.TOP)
        plan = url_plan(base, scan.regions)
        verdicts = plan.verdicts
        for verdict in (
            verdicts if verdicts is not None else path_verdicts(plan.segments, scan.regions)
        ):
            if verdict is not None:
                category, where, detector = verdict
                scan.add(category, f"{location}>{where}", detector)
    finally:
        scan.layers -= 1


def scan_url(scan: Scan, plan: UrlPlan, ctx: int) -> None:
    """Scan the query string (`query:<key>`) and the path segments (`path:<n>`) of a `url_plan()`."""
    if plan.records_consent:
        scan.add(cat.SMS_CONSENT, "endpoint", "endpoint:opt_out")
    if plan.query:
        # Credentials the recipient's API takes in the query (`api_key`, `access_token`) are
        # judged like any field: authentication at the top level (see credentials.py).
        scan_pairs(scan, parse_pairs(plan.query, scan), "query", ctx)
    verdicts = plan.verdicts
    if verdicts is None:
        verdicts = path_verdicts(plan.segments, scan.regions)
    elif verdicts.count(None) == len(verdicts):
        # A planned path without data (most calls): its segments spent at once, unless the
        # budget's next check falls among them (then one by one, as below).
        counted = scan.fields + len(verdicts)
        if counted < scan.next_check:
            scan.fields = counted
            return
    for verdict in verdicts:
        scan.count_field()  # a segment is a field of the budget
        if verdict is not None:
            scan.add(*verdict)
