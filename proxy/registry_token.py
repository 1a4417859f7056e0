"""What the registry says about the proxy's own token: when it expires.

A rotated token's old secret keeps working for a grace, and every answer to it carries
`Sharewall-Token-Expires` (`sharewall.token_expiry`). The follower (a long poll at least every
minute) and the shipper both report each answer's header here, so the proxy notices within a
minute of a rotation whether or not it has anything to ship: a `registry.token_expiring` line,
`sharewall_registry_token_expiry_timestamp_seconds`, and a `/readyz` notice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog

from sharewall.token_expiry import TOKEN_EXPIRES_HEADER, parse_expiry

log = structlog.get_logger("sharewall.proxy.registry_token")

_HEADER = TOKEN_EXPIRES_HEADER.lower()  # the control client's header names are lower-case


class TokenExpiry:
    """When the proxy's registry token stops authenticating, as the last answer said."""

    def __init__(self) -> None:
        self.expires_at: datetime | None = None

    def note(self, headers: Mapping[str, str]) -> None:
        """Take an answer's headers; a new expiry is logged. An answer without the header
        changes nothing: a token is rotated once and keeps its expiry, and a long poll asked
        before the rotation is answered without it."""
        value = headers.get(_HEADER)
        if not value:
            return
        when = parse_expiry(value)
        if when is None:
            log.warning("registry.token_expiry_unreadable", value=value[:40])
        elif when != self.expires_at:
            self.expires_at = when
            log.warning("registry.token_expiring", expires_at=when.isoformat())

    def notices(self) -> list[str]:
        """The `/readyz` notice once the token expires (empty otherwise)."""
        if self.expires_at is None:
            return []
        return [
            f"the registry token expires at {self.expires_at:%Y-%m-%dT%H:%M:%SZ} (it was "
            "rotated): give the proxy the new secret before then"
        ]
