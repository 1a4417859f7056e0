"""Parsing of request authorities (`host:port`) and absolute-form request targets."""

from __future__ import annotations

import functools
import re

from sharewall.recipients import normalise_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Space, controls and DEL never belong in an authority; "@" means userinfo, which a proxy must
# not accept (credentials in URLs end up in logs) and "\\", "/", "?" and "#" end one early.
_FORBIDDEN_CHARS_RE = re.compile(r"[\x00-\x20\x7f@\\/?#%]")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")


class BadAuthority(ValueError):
    """A malformed authority or request target; the message is safe to show the client."""


def parse_authority(text: str, *, default_port: int) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or `host` into a normalised host and a port.

    The host comes back lower-cased, without a trailing dot, IDN as punycode and IPv6 without
    brackets (see `sharewall.recipients.normalise_host`).
    """
    if not text:
        raise BadAuthority("empty authority")
    if _FORBIDDEN_CHARS_RE.search(text):
        if "@" in text:
            raise BadAuthority("userinfo is not allowed in the authority")
        raise BadAuthority("authority contains a forbidden character")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadAuthority("unbalanced brackets in the authority")
        host, rest = text[1:end], text[end + 1 :]
        if not host:
            raise BadAuthority("empty host")
        if rest and not rest.startswith(":"):
            raise BadAuthority("unexpected text after the IPv6 address")
        port_text = rest[1:] if rest else None
        if ":" not in host:
            raise BadAuthority("brackets hold only IPv6 addresses")
    else:
        if "[" in text or "]" in text:
            raise BadAuthority("unbalanced brackets in the authority")
        if text.count(":") > 1:
            raise BadAuthority("an IPv6 address must be in brackets")
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        if not host:
            raise BadAuthority("empty host")
    port = default_port if port_text is None else _parse_port(port_text)
    try:
        return normalise_host(host), port
    except ValueError:
        raise BadAuthority("invalid host") from None


def _parse_port(text: str) -> int:
    if not _PORT_RE.match(text):
        raise BadAuthority("invalid port")
    port = int(text)
    if not 0 < port <= 65535:
        raise BadAuthority("port out of range")
    return port


# An app calls a handful of origins over and over: parse each authority spelling once. Only the
# authority (and its default port) is the key, never a path, so the cache holds hosts and ports,
# nothing a request carries; a malformed authority raises each time (lru_cache keeps no errors).
_AUTHORITY_CACHE_SIZE = 1024
parse_authority_cached = functools.lru_cache(maxsize=_AUTHORITY_CACHE_SIZE)(parse_authority)


def split_absolute_url(target: str) -> tuple[str, str, int, str]:
    """Split an absolute-form request target into (scheme, host, port, path_and_query).

    Only `http` and `https` are accepted; the fragment, which a client should never send, is
    dropped; an empty path becomes "/".

        >>> split_absolute_url("http://API.example.com:8080/v1?x=1")
        ('http', 'api.example.com', 8080, '/v1?x=1')
    """
    scheme, sep, rest = target.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise BadAuthority("only absolute http:// and https:// targets are accepted")
    end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter)
        if 0 <= index < end:
            end = index
    authority, path = rest[:end], rest[end:]
    host, port = parse_authority_cached(authority, default_port=_DEFAULT_PORTS[scheme])
    path = path.partition("#")[0]
    if _CONTROL_RE.search(path):
        raise BadAuthority("request target contains a space or control character")
    if not path.startswith("/"):
        path = "/" + path
    return scheme, host, port, path
