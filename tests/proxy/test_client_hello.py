"""The SNI of real ClientHellos (OpenSSL's), whole, fragmented across records, and malformed."""

from __future__ import annotations

import ssl

import pytest

from proxy.client_hello import NotClientHello, parse_client_hello
from proxy.first_bytes import identify


def openssl_client_hello(server_name: str | None) -> bytes:
    """The ClientHello OpenSSL sends first (one TLS record), as an app's TLS library would."""
    ctx = ssl.create_default_context()
    if server_name is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refragment(hello: bytes, size: int) -> bytes:
    """The same handshake message spread over records of `size` bytes (RFC 8446 §5.1)."""
    assert hello[0] == 0x16
    message = hello[5:]
    records = b""
    for start in range(0, len(message), size):
        chunk = message[start : start + size]
        records += b"\x16" + hello[1:3] + len(chunk).to_bytes(2, "big") + chunk
    return records


def test_sni_of_a_real_client_hello() -> None:
    hello = parse_client_hello(openssl_client_hello("API.Vendor.test"))
    assert hello is not None and hello.server_name == "api.vendor.test"


def test_client_hello_without_sni_has_no_name() -> None:
    hello = parse_client_hello(openssl_client_hello(None))
    assert hello is not None and hello.server_name is None
    assert identify(openssl_client_hello(None)).name is None


@pytest.mark.parametrize("size", [1, 7, 100, 512], ids=lambda n: f"records of {n} bytes")
def test_client_hello_fragmented_over_records(size: int) -> None:
    data = refragment(openssl_client_hello("api.vendor.test"), size)
    hello = parse_client_hello(data)
    assert hello is not None and hello.server_name == "api.vendor.test"
    assert hello.size == len(data)


def test_every_prefix_asks_for_more_bytes() -> None:
    # TCP may deliver the hello in any pieces: no prefix is an error, none is a name.
    data = refragment(openssl_client_hello("api.vendor.test"), 300)
    for end in range(len(data)):
        assert parse_client_hello(data[:end]) is None
        assert identify(data[:end]) is None
    assert identify(data[:10], eof=True).protocol == "unknown"


def test_application_data_after_the_hello_is_ignored() -> None:
    data = openssl_client_hello("api.vendor.test") + b"\x17\x03\x03\x00\x05hello"
    hello = parse_client_hello(data)
    assert hello is not None and hello.server_name == "api.vendor.test"


def _with_sni(name: bytes) -> bytes:
    """A minimal TLS 1.2 ClientHello whose only extension is server_name `name`."""
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    server_name = len(entry).to_bytes(2, "big") + entry
    extension = b"\x00\x00" + len(server_name).to_bytes(2, "big") + server_name
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + len(extension).to_bytes(2, "big")
        + extension
    )
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x15\x03\x03\x00\x02\x02\x28", id="an alert, not a handshake"),
        pytest.param(b"\x16\x03\x03\x00\x00", id="empty record"),
        pytest.param(b"\x16\x03\x03\x40\x01" + bytes(0x4001), id="record over 2^14"),
        pytest.param(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", id="a ServerHello"),
        pytest.param(_with_sni(b"bad name!"), id="server_name not a host name"),
        pytest.param(_with_sni(b"10.0.0.1"), id="server_name is an IP literal"),
        pytest.param(
            _with_sni(b"api.vendor.test")[:-3] + b"\x00\xff\xff", id="server_name with binary bytes"
        ),
        pytest.param(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", id="truncated body"),
    ],
)
def test_malformed_client_hellos_are_not_named(data: bytes) -> None:
    with pytest.raises(NotClientHello):
        parse_client_hello(data)
    identity = identify(data)
    assert identity is not None and identity.name is None


def test_hand_built_hello_names_its_sni() -> None:
    assert identify(_with_sni(b"api.vendor.test")).name == "api.vendor.test"


def test_client_hello_over_the_limit_is_refused() -> None:
    with pytest.raises(NotClientHello):
        parse_client_hello(openssl_client_hello("api.vendor.test"), limit=100)
