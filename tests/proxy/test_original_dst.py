"""Reading `SO_ORIGINAL_DST` answers: the kernel's sockaddr_in / sockaddr_in6 layouts."""

from __future__ import annotations

import socket
import struct

import pytest

from proxy.original_dst import original_destination, parse_sockaddr


def test_sockaddr_in() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 443)
    raw += socket.inet_aton("93.184.216.34") + bytes(8)
    assert parse_sockaddr(raw) == ("93.184.216.34", 443)


def test_sockaddr_in6() -> None:
    raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 8443) + bytes(4)
    raw += socket.inet_pton(socket.AF_INET6, "2606:2800:220:1::1") + bytes(4)
    assert parse_sockaddr(raw) == ("2606:2800:220:1::1", 8443)


def test_sockaddr_in6_of_a_mapped_ipv4_is_the_ipv4() -> None:
    raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 80) + bytes(4)
    raw += socket.inet_pton(socket.AF_INET6, "::ffff:93.184.216.34") + bytes(4)
    assert parse_sockaddr(raw) == ("93.184.216.34", 80)


@pytest.mark.parametrize("raw", [b"", b"\x02", struct.pack("=H", 99) + bytes(14)])
def test_unreadable_sockaddr_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_sockaddr(raw)


def test_a_connection_that_was_not_redirected_has_no_original_destination() -> None:
    # Without a NAT record the kernel answers ENOENT (or the local address when conntrack
    # tracks it): the proxy refuses either way, the latter as a connection to itself.
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        try:
            address = original_destination(server)
        except OSError:
            return
        assert address == listener.getsockname()
    finally:
        client.close()
        server.close()
        listener.close()
