"""Destination safety: resolve a host once, classify every address, connect only to a checked one.

This is the proxy's SSRF guard. A sidecar that forwards anything the app asks for would let a
compromised app (or a URL an attacker slipped into it) reach the node's metadata service, the
cluster's private services or the proxy itself; so every address a name resolves to is
classified, and one forbidden address forbids the destination (a DNS rebinding attacker controls
which address comes first). The caller connects to `Destination.address`, never to the name.

Resolved outcomes are cached for `dns_ttl` seconds (default 30, 0 disables) per (host, port),
bounded: the CLASSIFIED outcome, i.e. either the one checked `Destination` or the forbidden
detail, never a raw address list. This keeps the no-rebinding guarantee: a cached destination's
address is one that was checked when it was resolved, and the caller still connects to that
address, never to the name, so what DNS answers meanwhile cannot redirect a connection; once the
entry expires, a new resolution checks every address again. A forbidden outcome is cached too
(a name that pointed at the metadata service stays refused for the TTL). Failed resolutions
(`OSError`) are not cached. Pins and IP literals never reach DNS: their outcome depends only on
the resolver's fixed pins and own addresses, so it is cached without expiry (same bound).

Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and
benchmarking ranges are forbidden as `reserved`: no real recipient lives there, and tests that
need an unroutable "public" address use literals they never connect to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sharewall.hosts import normalise_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationMismatch(Exception):
    """A captured connection's address is not one its name resolves or is pinned to."""

    code = "DESTINATION_MISMATCH"

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(f"{address}:{port} is not an address of {host}")
        self.host = host
        self.port = port
        self.address = address


class DestinationForbidden(Exception):
    """The destination is not a public address (or is the proxy itself); `detail` names the class."""

    code = "DESTINATION_FORBIDDEN"

    def __init__(self, host: str, detail: str, address: str | None = None) -> None:
        super().__init__(f"destination {host} is forbidden ({detail})")
        self.host = host
        self.detail = detail
        self.address = address


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked destination: connect to `address` (never re-resolve `host`)."""

    host: str
    port: int
    address: str
    family: int
    pinned: bool


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Cloud metadata / host agent endpoints. 168.63.129.16 (Azure WireServer) is a *public* address
# that only answers from inside the cloud, so the generic private checks would let it through.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
    )
)

# Checked in order; the first matching class names the address.
_V4_CLASSES: tuple[tuple[str, tuple[ipaddress.IPv4Network, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/8")),
    ("loopback", _nets("127.0.0.0/8")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("cgnat", _nets("100.64.0.0/10")),
    ("link_local", _nets("169.254.0.0/16")),
    ("multicast", _nets("224.0.0.0/4")),
    ("broadcast", _nets("255.255.255.255/32")),
    (
        "reserved",
        _nets(
            "240.0.0.0/4",  # future use (and broadcast above)
            "192.0.0.0/24",  # IETF protocol assignments (incl. Oracle's 192.0.0.192 metadata)
            "192.0.2.0/24",  # documentation
            "198.51.100.0/24",
            "203.0.113.0/24",
            "198.18.0.0/15",  # benchmarking
            "192.88.99.0/24",  # deprecated 6to4 relay anycast
        ),
    ),
)

_V6_CLASSES: tuple[tuple[str, tuple[ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified", _nets("::/128")),
    ("loopback", _nets("::1/128")),
    ("link_local", _nets("fe80::/10")),
    ("site_local", _nets("fec0::/10")),
    ("ula", _nets("fc00::/7")),
    ("multicast", _nets("ff00::/8")),
    ("nat64", _nets("64:ff9b:1::/48")),  # local-use NAT64 (RFC 8215): always site-specific
    ("reserved", _nets("::/96", "100::/64", "2001:db8::/32", "2001:2::/48", "2001:10::/28")),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def classify_address(addr: IPAddress) -> str | None:
    """The forbidden class of `addr` ("loopback", "private", "metadata", ...), None when public.

    IPv4 embedded in IPv6 (mapped, NAT64, 6to4, Teredo) is extracted and classified: an address
    hiding a forbidden IPv4 is forbidden under the embedding's name ("ipv4_mapped", ...).
    """
    if addr in _METADATA:
        return "metadata"
    if isinstance(addr, ipaddress.IPv4Address):
        for name, nets in _V4_CLASSES:
            if any(addr in net for net in nets):
                return name
        return None if addr.is_global else "reserved"
    embedded = _embedded_ipv4(addr)
    if embedded is not None:
        kind, inner = embedded
        return kind if any(classify_address(v4) for v4 in inner) else None
    for name, nets in _V6_CLASSES:
        if any(addr in net for net in nets):
            return name
    return None if addr.is_global else "reserved"


def _embedded_ipv4(
    addr: ipaddress.IPv6Address,
) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    if addr.ipv4_mapped is not None:
        return "ipv4_mapped", (addr.ipv4_mapped,)
    if addr in _NAT64:
        return "nat64", (ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF),)
    if addr in _6TO4:
        return "6to4", (ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF),)
    if addr in _TEREDO and addr.teredo is not None:
        server, client = addr.teredo
        return "teredo", (server, client)
    return None


_NUMERIC_PART_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def parse_ip_literal(host: str) -> IPAddress | None:
    """Parse `host` as an IP literal in any form a resolver would accept, None for a name.

    IPv4 follows inet_aton/WHATWG: 1-4 dot-separated parts, each decimal, octal (leading 0) or
    hex (0x), the last filling the remaining bytes ("127.1", "0177.0.0.1", "0x7f.1",
    "2130706433"). IPv6 may be bracketed. Raises `ValueError` for a literal that is malformed or
    out of range, or an IPv6 zone id (a zone names a local interface: never a recipient).
    """
    text = host[:-1] if host.endswith(".") else host
    if text.startswith("[") or text.endswith("]"):
        if not (text.startswith("[") and text.endswith("]")):
            raise ValueError("unbalanced brackets")
        text = text[1:-1]
        if ":" not in text:
            raise ValueError("brackets hold only IPv6 addresses")
    if ":" in text:
        if "%" in text:
            raise ValueError("IPv6 zone ids are not allowed")
        return ipaddress.IPv6Address(text)
    parts = text.split(".")
    if not text or not all(_NUMERIC_PART_RE.match(p) for p in parts):
        return None
    if len(parts) > 4:
        raise ValueError("too many parts in an IPv4 literal")
    values = [_parse_ipv4_part(p) for p in parts]
    last_bits = 8 * (5 - len(values))
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        raise ValueError("IPv4 literal out of range")
    number = values[-1]
    for index, value in enumerate(values[:-1]):
        number |= value << (24 - 8 * index)
    return ipaddress.IPv4Address(number)


def _parse_ipv4_part(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)  # raises ValueError on 8 or 9, as inet_aton rejects them
    return int(part)


def _unmapped(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# getaddrinfo(host, port, *, type, proto) -> [(family, type, proto, canonname, sockaddr)], as
# `loop.getaddrinfo` (the default); a parameter so that a test can count real lookups.
GetAddrInfo = Callable[..., Awaitable[list[tuple[Any, ...]]]]


async def system_getaddrinfo(
    host: str, port: int | str | None, **kwargs: Any
) -> list[tuple[Any, ...]]:
    """The loop's getaddrinfo, a name given as ASCII bytes when it is ASCII.

    A str name goes through Python's `idna` codec first (uvloop and the socket module both
    encode with it): a pure-Python nameprep of every label, tens of µs a lookup, and the codec
    with stringprep and unicodedata in memory (~0.4 MB of every sidecar). The names here are
    normalised already (`sharewall.hosts`: punycode), so the codec would change nothing.
    """
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(ascii_name(host), port, **kwargs)


def ascii_name(host: str) -> str | bytes:
    """`host` as ASCII bytes (what resolvers take without the idna codec), or as it is."""
    return host.encode("ascii") if host.isascii() else host


DEFAULT_DNS_TTL = 30.0
_INF = math.inf
_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A classified resolution: a checked destination, or why the destination is forbidden."""

    expires: float  # loop time; math.inf for pins and IP literals (no DNS involved)
    destination: Destination | None = None
    forbidden: DestinationForbidden | None = None
    addresses: tuple[str, ...] = ()  # every checked address of the name (first = destination)


class Resolver:
    """Resolves destinations and refuses any that are not public (unless pinned).

    `dns_ttl`: seconds a classified DNS outcome is reused (0: resolve every call); `getaddrinfo`
    replaces the event loop's (tests count lookups with it).
    """

    def __init__(
        self,
        pins: Mapping[tuple[str, int], str] | None = None,
        *,
        self_addresses: Iterable[tuple[str, int]] = (),
        timeout: float = 5.0,
        dns_ttl: float = DEFAULT_DNS_TTL,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        self._pins = {
            (normalise_host(host), port): ipaddress.ip_address(addr)
            for (host, port), addr in (pins or {}).items()
        }
        self._self = {(_unmapped(ipaddress.ip_address(a)), p) for a, p in self_addresses}
        self._timeout = timeout
        self._dns_ttl = max(dns_ttl, 0.0)
        self._getaddrinfo = getaddrinfo
        self._cache: dict[tuple[str, int], _Outcome] = {}

    def is_self(self, addr: IPAddress, port: int) -> bool:
        """True when `addr:port` is one of the proxy's own listeners (a forwarding loop)."""
        addr = _unmapped(addr)
        for own, own_port in self._self:
            if own_port != port:
                continue
            if own == addr:
                return True
            # A listener on 0.0.0.0 or :: answers on every local address; we only know
            # loopback and the unspecified address for sure to be local ones.
            if own.is_unspecified and (addr.is_loopback or addr.is_unspecified):
                return True
        return False

    def cached(self, host: str, port: int) -> Destination | None:
        """What `resolve()` answers when its outcome is cached and fresh (raising as it would);
        None when it is not (then await `resolve()`). Most calls go to a name resolved moments
        ago: this answers them without the two coroutines of `resolve()`."""
        cached = self._cache.get((host, port))
        if cached is None:
            return None
        # `_is_fresh` and `_replay` inline (~0.8k instructions less): paid by nearly every call.
        expires = cached.expires
        if expires != _INF and expires <= asyncio.get_running_loop().time():
            return None
        destination = cached.destination
        return destination if destination is not None else _replay(cached)

    def _is_fresh(self, outcome: _Outcome) -> bool:
        return outcome.expires == math.inf or outcome.expires > asyncio.get_running_loop().time()

    async def resolve(self, host: str, port: int) -> Destination:
        """Resolve `host:port` to one checked address.

        Raises `DestinationForbidden` (not public, the proxy itself, or not a valid host at
        all) and `OSError` when the name does not resolve (incl. `TimeoutError`).
        """
        outcome, _fresh = await self._outcome(host, port)
        return _replay(outcome)

    async def resolve_at(self, host: str, port: int, address: str) -> Destination:
        """`host:port` at `address`, which must be one the name resolves or is pinned to.

        For transparent capture: the app connected to `address` itself and claims `host` (Host
        or SNI). A cached DNS answer that lacks `address` is refreshed once before refusing
        (the app may have seen a newer rotation of the same name). Raises `DestinationMismatch`,
        and like `resolve` `DestinationForbidden` and `OSError`.
        """
        wanted = str(_unmapped(ipaddress.ip_address(address)))
        outcome, fresh = await self._outcome(host, port)
        if wanted not in outcome.addresses and not fresh and outcome.expires != math.inf:
            self._cache.pop((host, port), None)
            outcome, fresh = await self._outcome(host, port)
        destination = _replay(outcome)
        if wanted not in outcome.addresses:
            raise DestinationMismatch(destination.host, port, wanted)
        if destination.address == wanted:
            return destination
        return _destination(
            destination.host, port, ipaddress.ip_address(wanted), pinned=destination.pinned
        )

    async def _outcome(self, host: str, port: int) -> tuple[_Outcome, bool]:
        """The classified outcome for `host:port` (cached or new) and whether it is new."""
        key = (host, port)
        cached = self._cache.get(key)
        if cached is not None:
            if self._is_fresh(cached):
                return cached, False
            del self._cache[key]
        try:
            destination, addresses = await self._resolve(host, port)
        except DestinationForbidden as exc:
            outcome = _Outcome(self._expiry(host, port), forbidden=exc)
        else:
            outcome = _Outcome(
                self._expiry(host, port), destination=destination, addresses=addresses
            )
        self._remember(key, outcome)
        return outcome, True

    def _expiry(self, host: str, port: int) -> float:
        """When an outcome for `host` goes stale: never without DNS, else after the TTL."""
        try:
            literal = parse_ip_literal(host)
            name = str(literal) if literal is not None else normalise_host(host)
        except ValueError:
            return math.inf  # invalid whatever DNS says
        if literal is not None or (name, port) in self._pins:
            return math.inf
        return asyncio.get_running_loop().time() + self._dns_ttl

    def _remember(self, key: tuple[str, int], outcome: _Outcome) -> None:
        if outcome.expires != math.inf and self._dns_ttl == 0:
            return
        if len(self._cache) >= _CACHE_SIZE:
            # Drop the oldest entry (dicts keep insertion order): enough for a bound.
            del self._cache[next(iter(self._cache))]
        self._cache[key] = outcome

    async def _resolve(self, host: str, port: int) -> tuple[Destination, tuple[str, ...]]:
        try:
            literal = parse_ip_literal(host)
            name = str(literal) if literal is not None else normalise_host(host)
        except ValueError:
            raise DestinationForbidden(host, "invalid_host") from None
        pinned = self._pins.get((name, port))
        if pinned is not None:
            self._check_self(name, pinned, port)
            return _destination(name, port, pinned, pinned=True), (str(_unmapped(pinned)),)
        if literal is not None:
            self._check(name, literal, port)
            return _destination(name, port, literal, pinned=False), (str(_unmapped(literal)),)
        # RFC 6761: "localhost" and names under it are loopback whatever DNS says.
        if name == "localhost" or name.endswith(".localhost"):
            raise DestinationForbidden(name, "loopback")
        addresses = await self._lookup(name, port)
        for addr in addresses:
            self._check(name, addr, port)
        checked = tuple(str(_unmapped(a)) for a in addresses)
        return _destination(name, port, addresses[0], pinned=False), checked

    async def _lookup(self, name: str, port: int) -> list[IPAddress]:
        getaddrinfo = self._getaddrinfo or system_getaddrinfo
        async with asyncio.timeout(self._timeout):
            infos = await getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        addresses: list[IPAddress] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addr = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if addr not in addresses:
                addresses.append(addr)
        if not addresses:
            raise OSError(f"{name} resolved to no IP address")
        return addresses

    def _check(self, host: str, addr: IPAddress, port: int) -> None:
        detail = classify_address(addr)
        if detail is not None:
            raise DestinationForbidden(host, detail, str(addr))
        self._check_self(host, addr, port)

    def _check_self(self, host: str, addr: IPAddress, port: int) -> None:
        if self.is_self(addr, port):
            raise DestinationForbidden(host, "proxy_self", str(addr))


def _destination(host: str, port: int, addr: IPAddress, *, pinned: bool) -> Destination:
    family = socket.AF_INET if isinstance(addr, ipaddress.IPv4Address) else socket.AF_INET6
    return Destination(host=host, port=port, address=str(addr), family=family, pinned=pinned)


def _replay(outcome: _Outcome) -> Destination:
    """The cached outcome again: the same checked destination, or a fresh forbidden error."""
    if outcome.destination is not None:
        return outcome.destination
    exc = outcome.forbidden
    assert exc is not None
    raise DestinationForbidden(exc.host, exc.detail, exc.address)
