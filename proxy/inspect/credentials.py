"""Credentials, in one table: where an API takes its caller's own credentials (authentication, not
a data share), and the secrets of ours that are a leak wherever they go.

A recipient's credential sent where its API expects one (an `Authorization` header of any
scheme, a vendor key header, `api_key`/`api_secret` fields at the top of a form, query or JSON
body) is how the call authenticates: no finding. The same names deeper inside a payload are
data. Secrets of ours are recognised by their shape (private keys, cloud keys, database URLs
with a password, Slack/GitHub tokens, live Stripe keys, JWTs of our own issuers) and stay
`credentials.secret` anywhere, except a token shaped for the recipient's own API (`xoxb-` to
slack.com, `AKIA…` in a SigV4 header to amazonaws.com) in one of those credential places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# -- where APIs expect their callers' credentials -----------------------------------------------

# Header names (lower case) of credentials meant for the recipient.
AUTH_HEADERS = frozenset(
    [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "apikey",
        "x-apikey",
        "x-auth-token",
        "x-access-token",
        "x-api-token",
        "x-api-secret",
        "x-auth-key",
        "x-app-key",
        "x-client-id",
        "x-client-secret",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-amz-security-token",
        "x-twilio-signature",
        "x-hub-signature",
        "x-csrf-token",
        "x-xsrf-token",
    ]
)
# Header-name tokens that mark a vendor's credential header (`X-Acme-Api-Key`, `X-Session-Token`).
AUTH_HEADER_TOKENS = frozenset(
    [
        "authorization",
        "auth",
        "token",
        "key",
        "apikey",
        "secret",
        "signature",
        "session",
        "password",
        "csrf",
        "xsrf",
    ]
)
# `Authorization` schemes (RFC 9110 §11 and vendors'): Infobip `App`, Sinch/MessageBird
# `AccessKey`, AWS `AWS4-HMAC-SHA256`, ...; the credential follows the scheme.
AUTH_SCHEMES = frozenset(
    [
        "basic",
        "bearer",
        "digest",
        "app",
        "accesskey",
        "key",
        "token",
        "apikey",
        "sso-key",
        "ssws",
        "hmac",
        "signature",
        "aws4-hmac-sha256",
        "otoken",
        "klaviyo-api-key",
        "splunk",
        "dsn",
    ]
)
# Field names (as in keys.py: snake_case, looked up squashed) under which APIs take credentials
# in a query string, a form or at the top of a JSON body (or its `auth`/`credentials` object).
# A generic name deeper in a payload says nothing; a secret-like one is then a leaked secret.
AUTH_FIELDS_GENERIC = (
    "key token auth authorization signature sig client_id id_token assertion client_assertion "
    "grant x_amz_credential x_amz_signature x_amz_security_token x_goog_api_key "
    "ocp_apim_subscription_key x_twilio_signature x_api_key cookie set_cookie "
    "proxy_authorization x_sharewall_purpose x_auth_token"
)
_SECRET_NAMES = "api_key apikey api_secret api_token access_key access_token refresh_token"  # noqa: S105 - key names
AUTH_FIELDS_SECRET = (
    f"{_SECRET_NAMES} auth_token app_key app_secret client_secret secret secret_key"
)
# Objects at the top of a JSON body that hold the call's credentials.
AUTH_OBJECTS = frozenset(["auth", "authentication", "credentials", "credential", "authorization"])


def is_auth_header(lower_name: str, tokens: tuple[str, ...]) -> bool:
    """A header that carries the caller's credential for the recipient (by name or token)."""
    return lower_name in AUTH_HEADERS or not AUTH_HEADER_TOKENS.isdisjoint(tokens)


def split_scheme(value: str) -> tuple[str, str]:
    """`Bearer eyJ…` → ("bearer", "eyJ…"); a value without a known scheme → ("", value)."""
    scheme, _, rest = value.strip().partition(" ")
    if rest and scheme.lower() in AUTH_SCHEMES:
        return scheme.lower(), rest.strip()
    return "", value.strip()


# -- secrets of ours ----------------------------------------------------------------------------

PEM_PRIVATE_KEY_RE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
AWS_ACCESS_KEY_RE = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
JWT_RE = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
)
ANY_HOST = "*"


@dataclass(frozen=True, slots=True)
class SecretKind:
    """One shape of secret: its detector name, a cheap gate, its pattern, and the API hosts
    (suffixes; `*` any) that take it as their caller's credential."""

    detector: str
    gates: tuple[str, ...]
    pattern: re.Pattern[str]
    issuers: tuple[str, ...] = ()


SECRET_KINDS = (
    SecretKind("pem", ("-----BEGIN",), PEM_PRIVATE_KEY_RE),
    SecretKind("aws_key", ("AKIA", "ASIA"), AWS_ACCESS_KEY_RE, ("amazonaws.com",)),
    SecretKind(
        "gcp_key",
        ("AIza",),
        re.compile(r"(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])"),
        ("googleapis.com",),
    ),
    SecretKind(
        "database_url",
        ("://",),
        re.compile(
            r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|"
            r"sqlserver|oracle|cockroachdb|clickhouse)(?:\+\w+)?://[^\s:/@]*:[^\s/@]+@"
        ),
    ),
    SecretKind(
        "slack_token", ("xox",), re.compile(r"\bxox[abposr]-[0-9A-Za-z\-]{10,}"), ("slack.com",)
    ),
    SecretKind(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]_[0-9A-Za-z]{30,}|github_pat_[0-9A-Za-z_]{22,})"),
        ("github.com",),
    ),
    SecretKind(
        "stripe_key", ("_live_",), re.compile(r"\b[sr]k_live_[0-9A-Za-z]{16,}"), ("stripe.com",)
    ),
    # A bearer token is how many APIs authenticate: in a credential place it is authentication
    # (unless one of our own issuers signed it, see `InspectionLimits.own_token_issuers`).
    SecretKind("jwt", ("eyJ",), JWT_RE, (ANY_HOST,)),
)


def may_hold_secret(value: str) -> bool:
    """The gate of every kind at once, as plain substring tests (this runs for every string)."""
    return (
        "-----BEGIN" in value
        or "AKIA" in value
        or "ASIA" in value
        or "eyJ" in value
        or "AIza" in value
        or "xox" in value
        or "gh" in value
        or "_live_" in value
        or ("://" in value and "@" in value)
    )


def _is_issuer(host: str, issuers: tuple[str, ...]) -> bool:
    return any(i == ANY_HOST or host == i or host.endswith("." + i) for i in issuers)


def secret_kind(value: str, *, host: str = "", expected: bool = False) -> str | None:
    """The detector name of a secret of ours in `value` (`pem`, `aws_key`, `jwt`, ...), or None.

    `expected`: the value sits where the recipient's API takes its caller's credential; a
    secret shaped for the API at `host` is then authentication, not a leak.
    """
    for kind in SECRET_KINDS:
        for gate in kind.gates:  # a loop, not `any()` over a generator: every credential
            if gate in value:
                break
        else:
            continue
        if kind.pattern.search(value):
            if expected and _is_issuer(host, kind.issuers):
                continue
            return kind.detector
    return None
