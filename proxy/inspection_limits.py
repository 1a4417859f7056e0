"""The bounds on payload inspection: a plain value of the proxy's settings.

Outside the `proxy.inspect` package on purpose: the settings (and so the `--workers`
supervisor, which reads them) need this value, not the inspector's ~30 modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InspectionLimits:
    """Bounds on the work spent on one payload; each one, when hit, is a problem code."""

    max_body_bytes: int = 1 << 20  # bytes of (compressed) body read for inspection
    max_decompressed_bytes: int = 4 << 20
    max_depth: int = 32
    max_fields: int = 20_000
    max_seconds: float = 0.25
    default_region: str = "SG"  # phonenumbers region for national-format numbers
    extra_phone_regions: tuple[str, ...] = field(default=("HK", "US", "GB"))
    # `iss` of the JWTs we issue: such a token is our secret wherever it goes, even as a bearer.
    own_token_issuers: tuple[str, ...] = ()
