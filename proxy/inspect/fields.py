"""Classify one field: its key (what it is called, where it sits) and its value, together."""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

from proxy.inspect import categories as cat
from proxy.inspect.credentials import may_hold_secret, secret_kind
from proxy.inspect.encoded import JWT_SHAPE
from proxy.inspect.free_text import scan_string
from proxy.inspect.identifiers import (
    FILE_SUFFIXES,
    is_advertising_id,
    is_card_number,
    is_email,
    is_iban,
    is_iccid,
    is_imei,
    is_imsi,
    is_sha256,
    is_us_ssn,
)
from proxy.inspect.keys import (
    HANDSET_STATES,
    OPT_KEYWORD_MAX,
    OPT_KEYWORDS,
    SMS_ONLY_KEYWORDS,
    Ctx,
    KeyInfo,
    Rule,
    normalise_key,
    opt_keyword,
)
from proxy.inspect.network import is_public_ip, public_ips_in
from proxy.inspect.phone import (
    compact,
    is_phone_int,
    is_phone_value,
    is_possible_international,
    is_valid_international,
)
from proxy.inspect.scan import Scan
from proxy.inspect.text import scan_text

Scalar = str | int | float | bool | None

# Rules that hold on the key alone, for any non-empty value (a `false` opt-in is still a
# consent record): rule → (category, the context it needs, or NONE).
_KEY_ONLY: dict[str, tuple[str, int]] = {
    Rule.CONSENT: (cat.SMS_CONSENT, Ctx.NONE),
    Rule.CONSENT_CTX: (cat.SMS_CONSENT, Ctx.SMS),
    Rule.DEVICE_STATUS: (cat.DEVICE_STATUS, Ctx.NONE),
    Rule.ROAMING: (cat.ROAMING, Ctx.NONE),
    # Carrier data is personal when it is a subscriber's or a handset's (an MCC-MNC rate table
    # is not): beside a number, or in a record of a device named by its advertising id.
    Rule.CARRIER: (cat.CARRIER, Ctx.MOBILE | Ctx.PHONE | Ctx.DEVICE),
    Rule.CARRIER_CTX: (cat.CARRIER, Ctx.MOBILE | Ctx.PHONE | Ctx.DEVICE),
    Rule.VALIDITY: (cat.NUMBER_VALIDITY, Ctx.NONE),
    Rule.VALIDITY_CTX: (cat.NUMBER_VALIDITY, Ctx.MOBILE),
    Rule.CDR: (cat.USAGE, Ctx.NONE),
    Rule.CDR_CTX: (cat.USAGE, Ctx.CALL),
    Rule.CELL: (cat.LOCATION_PRECISE, Ctx.NONE),
    Rule.COUNTRY: (cat.LOCATION_COUNTRY, Ctx.NONE),
}
KEY_ONLY_RULES = frozenset(_KEY_ONLY)
# The rules `scan_container_key` acts on (the others say nothing about an object or an array),
# for an object and for an array.
CONTAINER_RULES = KEY_ONLY_RULES | {Rule.CONTENT, Rule.CONTENT_MAP}
LIST_CONTAINER_RULES = KEY_ONLY_RULES | {Rule.CONTENT}
# Per-call memo of judged string values (it dies with the call's Scan).
MEMO_MAX_LENGTH = 512
_MEMO_MAX_ENTRIES = 4096
_INFRA = Ctx.INFRA  # read by judge_str for every value it judges
_COORD_PAIR = re.compile(r"\s*(-?\d{1,3}\.\d+)\s*[,; ]\s*(-?\d{1,3}\.\d+)\s*")
_HAS_LETTER = re.compile(r"[^\W\d_]")


def key_only(scan: Scan, location: str, rule: str | None, ctx: int) -> bool:
    """Apply a rule that holds on the key alone; False when `rule` is not one."""
    spec = _KEY_ONLY.get(rule or "")
    if spec is None:
        return False
    category, needs = spec
    if needs & Ctx.MOBILE and scan.mobile_call:
        needs = Ctx.NONE
    if needs and not ctx & needs:
        return True  # the rule owns the key; out of context it means nothing
    scan.add(category, location, "key:" + rule.removesuffix("_ctx"))
    return True


def scan_container_key(scan: Scan, location: str, info: KeyInfo | None, ctx: int) -> None:
    """Key-only rules on an object or array value (`"subscription_groups": [...]`, `"cdrs": {...}`).

    Only keys whose rule is in `CONTAINER_RULES` (an object) or `LIST_CONTAINER_RULES` (an
    array) can add anything here.
    """
    if info is None:
        return
    if info.rule in _KEY_ONLY:
        key_only(scan, location, info.rule, ctx)
    elif (info.rule == Rule.CONTENT or info.rule == Rule.CONTENT_MAP) and not ctx & Ctx.ERROR:
        # A structured message (WhatsApp template with placeholders, rich card) is a message.
        scan.add(cat.CONTENT, location, "key:content")


def is_lat_lng_pair(a: object, b: object) -> bool:
    """Two numbers that are a plausible (latitude, longitude) or (longitude, latitude)."""
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
        return False
    return (abs(a) <= 90 and abs(b) <= 180) or (abs(a) <= 180 and abs(b) <= 90)


def _number(value: Scalar) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _looks_like_name(value: str) -> bool:
    # A person's (or company's) name: short, has letters, few words, not an id, URL or address.
    if not 1 <= len(value) <= 100 or "@" in value or "://" in value:
        return False
    if not _HAS_LETTER.search(value) or value.count(" ") > 5:
        return False
    digits = sum(map(str.isdigit, value))
    return digits * 3 < len(value)


def _looks_like_address(value: str) -> bool:
    if len(value) < 3 or "://" in value or is_email(value) or is_public_ip(value):
        return False
    return _HAS_LETTER.search(value) is not None


def scan_scalar(scan: Scan, location: str, info: KeyInfo | None, value: Scalar, ctx: int) -> None:
    """Add the findings of one scalar field (`info` is None for a value without a key)."""
    if value is None or value == "":
        return
    rule = info.rule if info is not None else None
    if info is not None and info.is_negative:
        return
    if key_only(scan, location, rule, ctx):
        return
    if isinstance(value, str):
        if len(value) > MEMO_MAX_LENGTH:
            judge_str(scan, location, rule, value, ctx, None)
            return
        # Batches repeat values (sender ids, callback URLs, templated texts): judge each
        # (rule, context, value) once per call and replay its findings at the new location.
        memo_key = (rule, ctx, value)
        known = scan.memo.get(memo_key)
        if known is None:
            judge_str(scan, location, rule, value, ctx, memo_key)
            return
        for category, detector in known:
            scan.add(category, location, detector)
    elif not isinstance(value, bool):
        _scan_number(scan, location, rule, value, ctx)
    elif rule == Rule.DEVICE_STATUS_CTX and (ctx & (Ctx.MOBILE | Ctx.PHONE) or scan.mobile_call):
        _device_status(scan, location, ctx)
    elif rule == Rule.CONSENT_PHONE:
        scan.add(cat.SMS_CONSENT, location, "key:consent")  # `whatsapp_opt_in: true`


# An id key's tokens, and those of ids of a message, not a person (`Message-Id` is `…@domain`).
_ID_TOKENS = frozenset({"id", "ids"})
_MESSAGE_ID_TOKENS = frozenset({"message", "msg", "thread", "smtp", "mime"})


def scan_id_value(scan: Scan, location: str, info: KeyInfo, value: str) -> None:
    """A string under a key never read (an id, an amount) that starts with `+` or holds an `@`.

    Apps key users by their number or address (`external_id: "+14155550123"`, Segment's
    `userId: "mei.tan@example.com"`): under an id key, a value that is one whole E.164 number or
    e-mail address is that personal data. Both walkers call this only for such values.
    """
    if _ID_TOKENS.isdisjoint(info.tokens):
        return  # an amount, a time, a digest: never a person's identifier
    text = value.strip()
    if text[:1] == "+":
        digits = compact(text)[1:]
        if digits.isdigit() and (
            is_valid_international(digits) or is_possible_international(digits)
        ):
            scan.add(cat.PHONE, location, "phone")
    elif (
        _MESSAGE_ID_TOKENS.isdisjoint(info.tokens)
        and is_email(text)
        and text.rpartition(".")[2].lower() not in FILE_SUFFIXES  # `icon@2x.png`
    ):
        scan.add(cat.EMAIL, location, "email")


def judge_str(
    scan: Scan,
    location: str,
    rule: str | None,
    value: str,
    ctx: int,
    memo_key: tuple[object, ...] | None,
) -> None:
    """Judge a string value not yet in the call's memo; remember its findings under `memo_key`.

    The caller has applied the key-only rules; `memo_key` is None for a value too long to keep.
    This is `_scan_str` with its rule lookup inlined: it runs for every new value of a batch.
    """
    # A value judged inside another's judgement (a URL's query, a JWT's claims) records into
    # its own memo entry and into the enclosing one, which it puts back.
    enclosing = scan.recording
    if memo_key is not None:
        recording: list[tuple[str, str]] = []
        scan.recording = recording
    if ctx & _INFRA:
        pass  # a DNS record's or a CDN origin's address and data: a server's, not a person's
    else:
        checked = False
        if rule is not None:
            judge = _STR_RULES.get(rule)
            if judge is not None:
                checked = judge(scan, location, rule, value, ctx)
            elif rule == Rule.PHONE_GENERIC and not ctx & Ctx.REFERENCE:
                checked = _phone(scan, location, Rule.PHONE, value, ctx)
        if not checked and (len(value) >= 7 or "@" in value):
            _scan_generic(scan, location, value, is_text=rule == Rule.CONTENT)
    if memo_key is not None:
        scan.recording = enclosing
        if enclosing is not None:
            enclosing.extend(recording)
        memo = scan.memo
        if len(memo) < _MEMO_MAX_ENTRIES:
            memo[memo_key] = tuple(recording)


def _scan_number(scan: Scan, location: str, rule: str | None, value: int | float, ctx: int) -> None:
    if rule == Rule.LAT_LNG:
        if ctx & Ctx.LAT and ctx & Ctx.LNG and abs(value) <= 180:
            scan.add(cat.LOCATION_PRECISE, location, "key:lat_lng")
        return
    if not isinstance(value, int) or rule is None:
        return
    if rule == Rule.PHONE_GENERIC:
        rule = None if ctx & Ctx.REFERENCE else Rule.PHONE
    if rule == Rule.CONSENT_PHONE:
        scan.add(cat.SMS_CONSENT, location, "key:consent")
        rule = Rule.PHONE
    if rule == Rule.PHONE:
        if is_phone_int(value, scan.regions):
            scan.add(cat.PHONE, location, "phone")
    elif rule in (Rule.IMEI, Rule.IMSI, Rule.ICCID, Rule.CARD, Rule.BANK, Rule.SSN, Rule.GOV_ID):
        _scan_str(scan, location, rule, str(value), ctx)


def _scan_str(scan: Scan, location: str, rule: str | None, value: str, ctx: int) -> None:
    value_checked = _scan_str_rule(scan, location, rule, value, ctx)
    if not value_checked and (len(value) >= 7 or "@" in value):
        _scan_generic(scan, location, value, is_text=rule == Rule.CONTENT)


def _scan_generic(scan: Scan, location: str, value: str, *, is_text: bool) -> None:
    # Any value the key's rule did not settle: identifiers anywhere in it, or a bare IPv6.
    _scan_long_or_short(scan, location, value, is_text=is_text)
    if "<" in value and "@" in value and not is_text and len(value) <= 1024:
        _display_names(scan, location, value)
    if value.count(":") >= 2 and "/" not in value and len(value) <= 45 and is_public_ip(value):
        scan.add(cat.IP_ADDRESS, location, "ip")


def _scan_long_or_short(scan: Scan, location: str, value: str, *, is_text: bool) -> None:
    # A long string (a document in a field) is scanned in slices so the deadline is checked.
    if len(value) > 16 * 1024:
        scan_text(scan, value, location=location, is_text=is_text)
    else:
        scan_string(scan, location, value, is_text=is_text)


def _scan_str_rule(scan: Scan, location: str, rule: str | None, value: str, ctx: int) -> bool:
    """Apply the key's rule; True when the value was fully judged (skip the generic scan)."""
    if rule is None:
        return False
    if rule == Rule.PHONE_GENERIC:
        if ctx & Ctx.REFERENCE:
            return False
        rule = Rule.PHONE
    judge = _STR_RULES.get(rule)
    return judge is not None and judge(scan, location, rule, value, ctx)


# One function per rule, found by a dict lookup: this runs for every field under a known key.
# Each returns True when the value was fully judged (skip the generic scan).
def _phone(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_phone_value(value, scan.regions, keyed=True):
        scan.add(cat.PHONE, location, "phone")
        return True
    if is_sha256(value):
        scan.add(cat.PHONE, location, "sha256")
        return True
    if "," in value and any(
        is_phone_value(part, scan.regions, keyed=True) for part in value.split(",")
    ):
        scan.add(cat.PHONE, location, "phone")  # MessageBird: "recipients": "316...,316..."
        return True
    return False


def _email(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_email(value):
        scan.add(cat.EMAIL, location, "email")
        return True
    if is_sha256(value):
        scan.add(cat.EMAIL, location, "sha256")
        return True
    return False


def _name(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_sha256(value):
        scan.add(cat.NAME, location, "sha256")
    elif _looks_like_name(value):
        scan.add(cat.NAME, location, "key:name")
    return True


# `Mei Tan <mei.tan@example.com>`, `"Tan, Mei" <…>`: an e-mail address with its display name.
_NAMED_ADDRESS = re.compile(r'\s*"?([^"<>@]{1,64}?)"?\s*<([^<>\s]+@[^<>\s]+)>\s*')
# Words of a mailbox's, not a person's, display name (`QWIQI Billing`, `Acme Support`).
_ROLE_WORDS = frozenset(
    [
        "alerts",
        "billing",
        "care",
        "customer",
        "help",
        "helpdesk",
        "info",
        "invoices",
        "marketing",
        "news",
        "newsletter",
        "noc",
        "no-reply",
        "noreply",
        "notifications",
        "ops",
        "orders",
        "sales",
        "security",
        "service",
        "support",
        "team",
    ]
)


def _display_names(scan: Scan, location: str, value: str) -> None:
    # The e-mail itself was found by the text scan; the name beside it is a person's when it
    # reads as one (`_looks_like_person_name`) and names no mailbox's role.
    for part in value.split(">"):
        match = _NAMED_ADDRESS.fullmatch(part.lstrip(", ;") + ">") if "<" in part else None
        if match is None or not is_email(match[2]):
            continue
        name = match[1].strip()
        words = name.replace(",", " ").split()
        if _looks_like_person_name(" ".join(words)) and not any(
            w.lower() in _ROLE_WORDS or w.isupper() for w in words
        ):
            scan.add(cat.NAME, location, "key:name")
            return


# The last word of a company's name: its legal form (`Pte Ltd`, `Inc.`, `GmbH`).
_COMPANY_FORMS = frozenset(
    {
        "ltd",
        "limited",
        "inc",
        "incorporated",
        "llc",
        "llp",
        "plc",
        "gmbh",
        "ag",
        "bv",
        "nv",
        "corp",
        "corporation",
        "pte",
        "pty",
        "bhd",
        "srl",
        "sarl",
        "spa",
    }
)


def _looks_like_company(value: str) -> bool:
    words = value.split()
    return len(words) >= 2 and words[-1].strip(".,()").lower() in _COMPANY_FORMS


def _names_a_mailbox(value: str) -> bool:
    # A sender's display name that is a brand's or a role's (`QWIQI Billing`, `Acme Support`).
    return any(w.lower() in _ROLE_WORDS or (len(w) > 1 and w.isupper()) for w in value.split())


def _looks_like_sender_id(value: str) -> bool:
    # An SMS alphanumeric sender id: one token of at most 11 characters (`QWIQI`, `InfoSMS`).
    return len(value) <= 11 and " " not in value.strip()


def _looks_like_person_name(value: str) -> bool:
    # Stricter than `_looks_like_name`, for a `name` whose only person hint is a phone sibling:
    # two to four capitalised words of letters ("Tan Ah Kow", "Mary-Jane O'Neil"), not
    # "Black Friday promo", "QWIQI" or "Plan 5G".
    words = value.split()
    if not 2 <= len(words) <= 4 or len(value) > 60:
        return False
    return all(
        word[0].isupper() and word.replace("-", "").replace("'", "").replace(".", "").isalpha()
        for word in words
    )


def _name_ctx(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if ctx & Ctx.EMPLOYER and _looks_like_name(value):
        scan.add(cat.EMPLOYMENT, location, "key:employment")
    elif ctx & Ctx.NOT_PERSON:
        pass  # a product's, campaign's, template's name
    elif ctx & Ctx.PERSON and _looks_like_name(value):
        if _looks_like_company(value):
            # `{"name": "Tan Logistics Pte Ltd"}`: a customer's company (Segment's group traits).
            scan.add(cat.EMPLOYMENT, location, "key:employment")
        elif not (ctx & Ctx.SENDER and (_looks_like_sender_id(value) or _names_a_mailbox(value))):
            scan.add(cat.NAME, location, "key:name")
    elif ctx & Ctx.PHONE and _looks_like_person_name(value):
        # `{"name": "Tan Ah Kow", "phone": "+65…"}`: a contact card without a person key.
        scan.add(cat.NAME, location, "key:name")
    return False


def _address(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_sha256(value) or _looks_like_address(value):
        scan.add(cat.POSTAL_ADDRESS, location, "key:address")
        return True
    return False


def _address_ctx(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if ctx & Ctx.ADDRESS and len(value) <= 100:
        scan.add(cat.POSTAL_ADDRESS, location, "key:address")
        return True
    if is_sha256(value) and ctx & Ctx.PERSON:
        scan.add(cat.POSTAL_ADDRESS, location, "sha256")
        return True
    return False


def _hashed_address(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_sha256(value):
        scan.add(cat.POSTAL_ADDRESS, location, "sha256")
    return True


def _employment(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if _looks_like_name(value):
        scan.add(cat.EMPLOYMENT, location, "key:employment")
    return True


def _employment_ctx(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if ctx & Ctx.PERSON and not ctx & Ctx.NOT_PERSON and _looks_like_name(value):
        scan.add(cat.EMPLOYMENT, location, "key:employment")
    return False


def _ip(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if public_ips_in(value):
        scan.add(cat.IP_ADDRESS, location, "ip")
    return True


def _device_id(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    detector = _device_id_kind(rule, value.strip())
    if detector:
        scan.add(cat.DEVICE_ID, location, detector)
        return True
    return False


def _card(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_card_number(value):
        scan.add(cat.PAYMENT, location, "card")
        return True
    return False


def _bank(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_iban(value):
        scan.add(cat.PAYMENT, location, "iban")
    elif sum(map(str.isdigit, value)) >= 6:
        scan.add(cat.PAYMENT, location, "key:bank")
    return True


def _ssn(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if is_us_ssn(value, formatted_only=False) or sum(map(str.isdigit, value)) >= 4:
        scan.add(cat.GOVERNMENT_ID, location, "ssn")
    return True


def _gov_id(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if len(value.strip()) >= 4 and any(ch.isalnum() for ch in value):
        scan.add(cat.GOVERNMENT_ID, location, "key:gov_id")
    return True


def _lat_lng(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    number = _number(value)
    if number is not None and ctx & Ctx.LAT and ctx & Ctx.LNG and abs(number) <= 180:
        scan.add(cat.LOCATION_PRECISE, location, "key:lat_lng")
    return True


def _coordinates(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    match = _COORD_PAIR.fullmatch(value)
    if match and is_lat_lng_pair(float(match[1]), float(match[2])):
        scan.add(cat.LOCATION_PRECISE, location, "latlng")
        return True
    return False


def _country_ctx(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if ctx & Ctx.ADDRESS:
        # The country line of a postal address is part of the address.
        scan.add(cat.POSTAL_ADDRESS, location, "key:address")
        return True
    in_context = ctx & (Ctx.LOCATION | Ctx.PERSON) and not ctx & Ctx.NOT_PERSON
    is_hlr_record = ctx & Ctx.PHONE and ctx & Ctx.HANDSET
    # A handset's record (an advertising id beside it) says where the device is.
    if in_context or ctx & (Ctx.MOBILE | Ctx.DEVICE) or is_hlr_record or scan.mobile_call:
        scan.add(cat.LOCATION_COUNTRY, location, "key:country")
    return True


def _keyword(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if len(value) <= OPT_KEYWORD_MAX and opt_keyword(value) in OPT_KEYWORDS:
        scan.add(cat.SMS_CONSENT, location, "key:keyword")
    return True


def _opt_keyword_message(scan: Scan, location: str, value: str, ctx: int) -> None:
    # A message that is only a keyword (`Body=STOP` of an inbound SMS, relayed) is the
    # subscriber's opt-out or opt-in: carriers and CPaaS act on the whole body, so do we.
    keyword = opt_keyword(value)
    if keyword in SMS_ONLY_KEYWORDS or (
        keyword in OPT_KEYWORDS and (ctx & Ctx.SMS or scan.mobile_call)
    ):
        scan.add(cat.SMS_CONSENT, location, "keyword")


def _device_status_ctx(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    in_context = ctx & (Ctx.MOBILE | Ctx.PHONE) or scan.mobile_call
    if in_context and value.strip().upper() in HANDSET_STATES:
        _device_status(scan, location, ctx)
        return True
    return False


def _content(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    # `_native.c` (walk_str_field) does this for an ASCII body its pre-scan rules out, longer
    # than `OPT_KEYWORD_MAX`: keep both.
    if not ctx & Ctx.ERROR and _HAS_LETTER.search(value):
        scan.add(cat.CONTENT, location, "key:content")
        if len(value) <= OPT_KEYWORD_MAX:
            _opt_keyword_message(scan, location, value, ctx)
    if len(value) > 16 * 1024:  # `_scan_long_or_short`, inlined: every message body comes here
        scan_text(scan, value, location=location, is_text=True)
    else:
        scan_string(scan, location, value, is_text=True)
    return True


def _credential(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    # At the top of a call (form, query, body, its `auth` object) a credential name is the
    # recipient's own authentication; deeper, a secret-like name is a secret leaving in content.
    expected = bool(ctx & Ctx.TOP)
    scan_credential(scan, location, value, ctx, expected=expected)
    if not expected and rule == Rule.API_SECRET:
        scan.add(cat.SECRET, location, "key:secret")
    return True


def scan_credential(scan: Scan, location: str, value: str, ctx: int, *, expected: bool) -> None:
    """A credential's value: a secret of ours by its shape (unless it is the recipient's own,
    where its API expects it), and the claims of a JWT (data about its subject)."""
    if not value or not may_hold_secret(value):
        return
    # Where the API expects a credential, a kind shaped for this call's host is authentication:
    # the host (parsed from the URL) is only needed when some kind is found at all.
    kind = secret_kind(value)
    if kind and expected:
        kind = secret_kind(value, host=scan.host, expected=True)
    if kind:
        scan.add(cat.SECRET, location, kind)
    if "eyJ" in value:
        from proxy.inspect.walk import scan_jwt_claims  # walk imports this module

        for match in JWT_SHAPE.finditer(value):
            scan_jwt_claims(scan, location, match.group(), ctx)


def _graphql(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    from proxy.inspect.graphql import looks_like_graphql, scan_graphql  # graphql → walk → here

    if looks_like_graphql(value):
        scan_graphql(scan, location, value, ctx)
        return True
    return False  # a search query (`type:ticket status:open`): any other string


def _secret(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    scan.add(cat.SECRET, location, "key:secret")
    return True


def _url(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    # A callback or a link: its host is a server, its query and path may name a customer
    # (`…/status?msisdn=6591234567`), percent-encoded where a text scan cannot read them.
    head = value[:8].lower()
    if not (head.startswith("http://") or head == "https://"):
        return False
    from proxy.inspect.query import scan_url_value  # query → form → walk → here

    scan_url_value(scan, location, value, ctx)
    return True


def _ad_id(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    # A campaign's or an account's id under a look-alike key is no UUID; an all-zero one names
    # no device (limited ad tracking). Pinterest's `hashed_maids`, Snap's hashed id: SHA-256.
    if is_advertising_id(value):
        scan.add(cat.DEVICE_ID, location, "ad_id")
    elif is_sha256(value):
        scan.add(cat.DEVICE_ID, location, "sha256")
    return True


# What an identifier-type name (`EMAIL_SHA256`, `SHA256_EMAIL`, `PHONE`, `FN`, `MADID`) says the
# values beside it are, once its hashing words are set aside (Meta Custom Audiences' `schema`
# columns, LinkedIn's `idType`). Dates of birth, gender and external ids have no category.
_ID_TYPE_WORDS = frozenset({"sha256", "sha", "256", "hashed", "hash", "md5", "normalized"})
_ID_TYPE_CATEGORIES = {
    **dict.fromkeys(("email", "em", "emailaddress", "mail"), cat.EMAIL),
    **dict.fromkeys(("phone", "ph", "phonenumber", "msisdn", "mobile"), cat.PHONE),
    **dict.fromkeys(("fn", "ln", "fi", "firstname", "lastname", "fullname"), cat.NAME),
    **dict.fromkeys(
        ("ct", "st", "zip", "zp", "city", "state", "postalcode", "country", "address"),
        cat.POSTAL_ADDRESS,
    ),
    **dict.fromkeys(("madid", "maid", "idfa", "gaid", "aaid", "mobileadid"), cat.DEVICE_ID),
}


def _id_type(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    if len(value) <= 40:
        words = "".join(t for t in normalise_key(value) if t not in _ID_TYPE_WORDS)
        category = _ID_TYPE_CATEGORIES.get(words)
        if category is not None:
            scan.add(category, location, "key:id_type")
    return True


def _consent_phone(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    # An opted-out (or -in) number is an opt-in record whatever its shape, and a number.
    scan.add(cat.SMS_CONSENT, location, "key:consent")
    return _phone(scan, location, Rule.PHONE, value, ctx)


def _action(scan: Scan, location: str, rule: str, value: str, ctx: int) -> bool:
    # An API operation that opts a number in or out (SNS `Action=OptInPhoneNumber`): a consent
    # record about the number it names. Not an e-mail list's opt-in: it needs a phone word.
    if len(value) > 64 or not value.isascii():
        return False
    tokens = normalise_key(value)
    opt = (
        "optin" in tokens
        or "optout" in tokens
        or any(a == "opt" and b in ("in", "out") for a, b in pairwise(tokens))
    )
    if opt and (ctx & Ctx.PHONE or {"phone", "number", "sms", "msisdn"} & set(tokens)):
        scan.add(cat.SMS_CONSENT, location, "key:action")
        return True
    return False


_STR_RULES: dict[str, Callable[[Scan, str, str, str, int], bool]] = {
    Rule.PHONE: _phone,
    Rule.EMAIL: _email,
    Rule.NAME: _name,
    Rule.NAME_CTX: _name_ctx,
    Rule.ADDRESS: _address,
    Rule.ADDRESS_CTX: _address_ctx,
    Rule.HASHED_ADDRESS: _hashed_address,
    Rule.EMPLOYMENT: _employment,
    Rule.EMPLOYMENT_CTX: _employment_ctx,
    Rule.IP: _ip,
    Rule.IMEI: _device_id,
    Rule.IMSI: _device_id,
    Rule.ICCID: _device_id,
    Rule.DEVICE_ID: _device_id,
    Rule.CARD: _card,
    Rule.BANK: _bank,
    Rule.SSN: _ssn,
    Rule.GOV_ID: _gov_id,
    Rule.LAT_LNG: _lat_lng,
    Rule.COORDINATES: _coordinates,
    Rule.COUNTRY_CTX: _country_ctx,
    Rule.KEYWORD: _keyword,
    Rule.DEVICE_STATUS_CTX: _device_status_ctx,
    Rule.CONTENT: _content,
    Rule.CONTENT_MAP: _content,
    Rule.CONTENT_TEXT: _content,
    Rule.SECRET: _secret,
    Rule.GRAPHQL: _graphql,
    Rule.VENDOR_CREDENTIAL: _credential,
    Rule.API_SECRET: _credential,
    Rule.AD_ID: _ad_id,
    Rule.ID_TYPE: _id_type,
    Rule.CONSENT_PHONE: _consent_phone,
    Rule.ACTION: _action,
    Rule.URL: _url,
}


def _device_status(scan: Scan, location: str, ctx: int) -> None:
    # In a call record `status: BUSY` is how the call ended (usage), not the handset's state.
    if ctx & Ctx.CALL:
        scan.add(cat.USAGE, location, "key:cdr")
    else:
        scan.add(cat.DEVICE_STATUS, location, "key:device_status")


def _device_id_kind(rule: str, value: str) -> str | None:
    if rule in (Rule.IMEI, Rule.DEVICE_ID) and is_imei(value):
        return "imei"
    if rule in (Rule.ICCID, Rule.DEVICE_ID) and is_iccid(value):
        return "iccid"
    if rule == Rule.IMSI and is_imsi(value):
        return "imsi"
    return None
