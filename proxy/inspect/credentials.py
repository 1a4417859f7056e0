"""Our own secrets leaking into payloads: private keys, AWS access key ids, JWTs."""

from __future__ import annotations

import re

PEM_PRIVATE_KEY_RE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
AWS_ACCESS_KEY_RE = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
JWT_RE = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
)


def secret_kind(value: str) -> str | None:
    """The detector name of a secret found in `value` (`pem`, `aws_key`, `jwt`), or None."""
    if "-----BEGIN" in value and PEM_PRIVATE_KEY_RE.search(value):
        return "pem"
    if ("AKIA" in value or "ASIA" in value) and AWS_ACCESS_KEY_RE.search(value):
        return "aws_key"
    if "eyJ" in value and JWT_RE.search(value):
        return "jwt"
    return None
