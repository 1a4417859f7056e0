"""Host names, authorities and ports: the one parser and normaliser every part of sharewall uses.

The registry's host patterns (schema validation), the proxy's request targets, Host headers,
CONNECT authorities and `--resolve` pins, the listen flags and `sharewall check`'s URL all go
through these functions, so that what the registry accepts and what the proxy matches at run
time can never disagree (Smokescreen's `hostport` package, for the same reason).

A normalised host is lower-case, without a trailing dot, IDN labels as punycode (UTS 46,
IDNA 2008, as browsers) and IP literals canonical (IPv6 without brackets).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_PORTS = {"http": 80, "https": 443}

# Real hostnames break IDNA 2008 rules that DNS does not care about ("r3---sn-x.googlevideo.com",
# "_dmarc.example.com"), so ASCII names are only checked for DNS shape; only non-ASCII names go
# through UTS 46 + IDNA 2008 (the `idna` package), as browsers do.
_ASCII_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_MAX_NAME_LENGTH = 253
# Space, controls and DEL never belong in an authority; "@" means userinfo, which a proxy must
# not accept (credentials in URLs end up in logs) and "\\", "/", "?" and "#" end one early.
_FORBIDDEN_CHARS_RE = re.compile(r"[\x00-\x20\x7f@\\/?#%]")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")


class BadAuthority(ValueError):
    """A malformed host, authority, pattern or URL; the message is safe to show a client."""


def normalise_host(host: str) -> str:
    """Lower-case `host`, strip one trailing dot and encode IDN labels as punycode.

    IP literals come back in their canonical form (IPv6 without brackets). Raises `ValueError`
    for anything that is not a valid host name.
    """
    if host.startswith("[") and host.endswith("]"):
        return str(ipaddress.IPv6Address(host[1:-1]))
    if ":" in host:
        return str(ipaddress.IPv6Address(host))
    name = host[:-1] if host.endswith(".") else host
    if not name:
        raise ValueError("empty host name")
    if name.isascii():
        name = name.lower()
    else:
        # Imported at the first non-ASCII name: `idna` and its tables (~0.4 MB) are not
        # needed by a proxy whose hosts are all ASCII, as most are.
        import idna

        try:
            name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"invalid internationalised host name: {exc}") from None
    if len(name) > _MAX_NAME_LENGTH:
        raise ValueError("host name longer than 253 characters")
    if not all(_ASCII_LABEL_RE.match(label) for label in name.split(".")):
        raise ValueError("host name has an empty or invalid label")
    return name


# A sidecar talks to a handful of hosts: each spelling is normalised once.
normalise_host_cached = functools.lru_cache(maxsize=4096)(normalise_host)


def split_hostport(text: str) -> tuple[str, str | None]:
    """Split `host:port`, `[v6]:port`, `[v6]` or `host` lexically: (host text, port text or None).

    No normalisation: brackets are removed, the port is not checked. Raises `BadAuthority` for
    unbalanced brackets, text after `]`, or an IPv6 address without brackets.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadAuthority("unbalanced brackets in the authority")
        host, rest = text[1:end], text[end + 1 :]
        if not host:
            raise BadAuthority("empty host")
        if rest and not rest.startswith(":"):
            raise BadAuthority("unexpected text after the IPv6 address")
        if ":" not in host:
            raise BadAuthority("brackets hold only IPv6 addresses")
        return host, rest[1:] if rest else None
    if "[" in text or "]" in text:
        raise BadAuthority("unbalanced brackets in the authority")
    if text.count(":") > 1:
        raise BadAuthority("an IPv6 address must be in brackets")
    host, sep, port_text = text.partition(":")
    return host, port_text if sep else None


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """A decimal TCP port, 1-65535 (0 too with `allow_zero`: an ephemeral listen port)."""
    if not _PORT_RE.match(text):
        raise BadAuthority("invalid port")
    port = int(text)
    if port > 65535 or (port == 0 and not allow_zero):
        raise BadAuthority("port out of range")
    return port


def parse_authority(text: str, *, default_port: int) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or `host` into a normalised host and a port.

    Userinfo, spaces, controls, `%` and path characters are refused (`BadAuthority`).
    """
    if not text:
        raise BadAuthority("empty authority")
    if _FORBIDDEN_CHARS_RE.search(text):
        if "@" in text:
            raise BadAuthority("userinfo is not allowed in the authority")
        raise BadAuthority("authority contains a forbidden character")
    host, port_text = split_hostport(text)
    if not host:
        raise BadAuthority("empty host")
    port = default_port if port_text is None else parse_port(port_text)
    try:
        return normalise_host(host), port
    except ValueError:
        raise BadAuthority("invalid host") from None


# An app calls a handful of origins over and over: parse each authority spelling once. Only the
# authority (and its default port) is the key, never a path, so the cache holds hosts and ports,
# nothing a request carries; a malformed authority raises each time (lru_cache keeps no errors).
parse_authority_cached = functools.lru_cache(maxsize=1024)(parse_authority)


class Target(NamedTuple):
    """Where an absolute http(s) URL points: scheme, normalised host, port, path with query.

    A named tuple: built on every proxied call, and a tuple is cheaper than a frozen dataclass.
    """

    scheme: str
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        """`host[:port]` as a Host header carries it (the port only when not the default)."""
        return format_authority(self.host, self.port, self.scheme)


class UrlParts(NamedTuple):
    """A URL split as RFC 3986 (appendix B) splits it: lexically, nothing checked or normalised.

    `scheme` is lower-cased; a part that is absent (no `//`, `?` or `#`) is None, one that is
    present but empty is "". The userinfo, if any, is still in `authority`.
    """

    scheme: str
    authority: str | None
    path: str
    query: str | None
    fragment: str | None


# RFC 3986 appendix B: every string matches, so splitting never fails (checking is the callers').
_URL_RE = re.compile(r"(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?", re.DOTALL)


def split_url(url: str) -> UrlParts:
    """Split any URL into scheme, authority, path, query and fragment; never raises.

    >>> split_url("HTTPS://u@api.example.com:8443/v1/a?x=1#f")
    UrlParts(scheme='https', authority='u@api.example.com:8443', path='/v1/a', query='x=1', fragment='f')
    """
    scheme, authority, path, query, fragment = _url_groups(url)
    return UrlParts(scheme.lower() if scheme else "", authority, path, query, fragment)


def _url_groups(url: str) -> tuple[str | None, str | None, str, str | None, str | None]:
    # The raw groups (scheme as written): parse_url, on every proxied call, skips the NamedTuple.
    match = _URL_RE.match(url)
    assert match is not None  # the pattern matches every string
    return match.groups()  # type: ignore[return-value]


def parse_url(url: str) -> Target:
    """Parse an absolute-form `http://` or `https://` URL (a proxy request target, a `check` URL).

    The fragment, which a client should never send, is dropped; an empty path becomes "/".

        >>> parse_url("http://API.example.com:8080/v1?x=1")
        Target(scheme='http', host='api.example.com', port=8080, path='/v1?x=1')
    """
    scheme, authority, path, query, _fragment = _url_groups(url)
    scheme = scheme.lower() if scheme else ""
    if authority is None or scheme not in DEFAULT_PORTS:
        raise BadAuthority("only absolute http:// and https:// targets are accepted")
    host, port = parse_authority_cached(authority, default_port=DEFAULT_PORTS[scheme])
    return Target(scheme, host, port, _request_path(path, query))


def parse_service_url(url: str, *, default_port: int | None = None) -> Target:
    """Parse the configured URL of a service sharewall calls (the registry, OPA): http(s) only.

    Unlike a proxied call's target, a configured URL may carry userinfo (credentials for the
    service); it is accepted and left out of the result, which is safe to log. A URL that names
    no port gets `default_port` (the service's own, e.g. OPA's 8181), else the scheme's.
    """
    scheme, authority, path, query, _fragment = split_url(url.strip())
    if authority is None or scheme not in DEFAULT_PORTS:
        raise BadAuthority("only absolute http:// and https:// URLs are accepted")
    hostport = authority.rpartition("@")[2]
    host, port = parse_authority(hostport, default_port=default_port or DEFAULT_PORTS[scheme])
    return Target(scheme, host, port, _request_path(path, query))


def _request_path(path: str, query: str | None) -> str:
    target = path if query is None else f"{path}?{query}"
    if _CONTROL_RE.search(target):
        raise BadAuthority("request target contains a space or control character")
    return target if target.startswith("/") else "/" + target


def format_authority(host: str, port: int, scheme: str) -> str:
    """`host[:port]` for a URL or Host header: IPv6 bracketed, the scheme's default port left out."""
    h = f"[{host}]" if ":" in host else host
    return h if port == DEFAULT_PORTS.get(scheme) else f"{h}:{port}"


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A registry host pattern: an exact name or one leading `*.` wildcard, optionally a port."""

    name: str  # normalised, without the "*."
    wildcard: bool
    port: int | None  # None: any port

    def __str__(self) -> str:
        host = f"[{self.name}]" if ":" in self.name else self.name
        return (
            ("*." if self.wildcard else "") + host + ("" if self.port is None else f":{self.port}")
        )


def parse_host_pattern(pattern: str) -> HostPattern:
    """Parse and normalise a registry host pattern; `BadAuthority` when it is not one.

    >>> str(parse_host_pattern("*.Twilio.COM.:8443"))
    '*.twilio.com:8443'
    """
    text = pattern.strip()
    if not text or _FORBIDDEN_CHARS_RE.search(text):
        raise BadAuthority(f"invalid host pattern {pattern!r}")
    wildcard = text.startswith("*.")
    host, port_text = split_hostport(text[2:] if wildcard else text)
    port = None if port_text is None else parse_port(port_text)
    try:
        name = normalise_host(host)
    except ValueError:
        raise BadAuthority(f"invalid host pattern {pattern!r}") from None
    if wildcard and is_ip_literal(name):
        raise BadAuthority(f"a wildcard cannot cover IP addresses: {pattern!r}")
    return HostPattern(name, wildcard, port)


def normalise_host_pattern(pattern: str) -> str:
    """The normalised spelling of a host pattern (`parse_host_pattern`, as text)."""
    return str(parse_host_pattern(pattern))


def is_ip_literal(name: str) -> bool:
    """Whether a *normalised* host is an IP literal (or a name resolvers read as a number)."""
    # IPv6 has ":", an IPv4-shaped name has a numeric last label (no TLD is numeric, and
    # resolvers read such names as numbers: "0x7f.1", "2130706433").
    last = name.rsplit(".", 1)[-1]
    return ":" in name or last.isdigit() or last.startswith("0x")


def parse_hostport(text: str) -> tuple[str, int]:
    """A listen address `HOST:PORT` or `[V6]:PORT`; port 0 asks for an ephemeral port."""
    host, port_text = split_hostport(text)
    if port_text is None:
        raise BadAuthority("expected HOST:PORT")
    if not host:
        raise BadAuthority("empty host")
    return host, parse_port(port_text, allow_zero=True)


def parse_pin(text: str) -> tuple[tuple[str, int], str]:
    """A `--resolve HOST:PORT:ADDR` pin (curl's syntax): ((host, port), address).

    ADDR may be `[v6]` or a bare IPv6 address; zone ids are refused.
    """
    host, sep, rest = text.partition(":")
    port_text, sep2, addr_text = rest.partition(":")
    if not (sep and sep2 and host and addr_text):
        raise BadAuthority(f"pin must be HOST:PORT:ADDR, got {text!r}")
    try:
        port = parse_port(port_text)
    except BadAuthority:
        raise BadAuthority(f"invalid port in pin {text!r}") from None
    if addr_text.startswith("["):
        if not addr_text.endswith("]"):
            raise BadAuthority(f"unbalanced brackets in pin {text!r}")
        addr_text = addr_text[1:-1]
    if "%" in addr_text:
        raise BadAuthority("IPv6 zone ids are not allowed in pins")
    try:
        address = ipaddress.ip_address(addr_text)
        name = normalise_host(host)
    except ValueError as exc:
        raise BadAuthority(f"invalid pin {text!r}: {exc}") from None
    return (name, port), str(address)
