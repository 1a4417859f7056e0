"""IP addresses: only public (globally routable) addresses are a person's or device's data."""

from __future__ import annotations

import ipaddress
import re
import socket

IPV4_RE = re.compile(
    r"(?<![\d.])(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?![\d.])"
)
# A dotted quad exactly as `ipaddress` accepts one (ASCII digits, no leading zero, 0-255): such
# a string becomes its `IPv4Address` through the integer, ~10x cheaper than `ip_address()`'s
# parsing; anything else (IPv6, leading zeros, junk) takes the `ip_address()` path.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def is_public_ip(value: str) -> bool:
    """True for a global IPv4/IPv6 address (private, loopback, reserved, documentation are not)."""
    value = value.strip().strip("[]")
    if "%" in value:  # IPv6 zone id: link-local by definition
        return False
    if "." not in value and ":" not in value:
        return False  # neither form: skip `ip_address()`, whose refusal (an exception) is slow
    quad = _DOTTED_QUAD.fullmatch(value) if value.isascii() else None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    if quad is not None:  # canonical, so `inet_aton` reads it as `ipaddress` would
        address = ipaddress.IPv4Address(int.from_bytes(socket.inet_aton(value), "big"))
        return address.is_global and not address.is_multicast
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def public_ips_in(value: str) -> bool:
    """True when a list-like value (`X-Forwarded-For: a, b`, `for=a;proto=https`) holds a public IP."""
    for part in re.split(r"[,\s;]+", value):
        if part.lower().startswith("for="):
            part = part[4:].strip('"')
        if part.startswith("[") and "]" in part:
            part = part[1 : part.index("]")]
        elif part.count(":") == 1:  # IPv4 with a port
            part = part.split(":", 1)[0]
        if part and is_public_ip(part):
            return True
    return False
