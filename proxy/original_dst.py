"""The address a redirected connection was really sent to (netfilter's `SO_ORIGINAL_DST`).

When iptables `REDIRECT` (or nftables `redirect`) sends an app's connection to the proxy's
transparent port, the kernel's connection tracking still knows where the app connected; the
proxy reads it back with `getsockopt(SOL_IP, SO_ORIGINAL_DST)` (IPv4, linux/netfilter_ipv4.h)
or `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)` (IPv6, linux/netfilter_ipv6/ip6_tables.h).
Both answer a `struct sockaddr_in` / `sockaddr_in6`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80

_SOCKADDR_IN_SIZE = 16
_SOCKADDR_IN6_SIZE = 28


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """(address, port) of a `struct sockaddr_in` or `sockaddr_in6` as the kernel wrote it.

    The family is in host byte order, the port and address in network order. Raises
    `ValueError` for a buffer that is neither.
    """
    if len(raw) < 2:
        raise ValueError("sockaddr too short")
    (family,) = struct.unpack("=H", raw[:2])
    if family == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack("!H", raw[2:4])[0]
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack("!H", raw[2:4])[0]
        address = ipaddress.IPv6Address(raw[8:24])
        mapped = address.ipv4_mapped
        return str(mapped if mapped is not None else address), port
    raise ValueError(f"unexpected sockaddr (family {family}, {len(raw)} bytes)")


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """(address, port) the client of accepted socket `sock` connected to before redirection.

    Raises `OSError` when the kernel has no such record (the connection was not redirected or
    connection tracking is off: ENOENT) and `ValueError` for an answer we cannot read.
    """
    family = sock.family
    if family == socket.AF_INET6:
        peer = sock.getpeername()[0]
        # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; their conntrack entry
        # is an IPv4 one, answered at the IPv4 level.
        if ipaddress.IPv6Address(peer.partition("%")[0]).ipv4_mapped is not None:
            family = socket.AF_INET
    if family == socket.AF_INET:
        raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN_SIZE)
    else:
        raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6_SIZE)
    return parse_sockaddr(raw)
