"""Leaf minting: a client trusting the proxy CA completes a real TLS handshake and sees the SAN."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from proxy.certs import CertificateAuthority, generate_ca


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ca")
    cert, key = folder / "ca.pem", folder / "ca.key"
    generate_ca(cert, key)
    return cert, key


@pytest.fixture
def ca(ca_files: tuple[Path, Path]) -> CertificateAuthority:
    return CertificateAuthority.load(*ca_files)


async def _handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, server_hostname: str
) -> tuple[x509.Certificate, str | None]:
    """Serve one TLS connection on loopback; return the leaf the client saw and the ALPN."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname=server_hostname
        )
        assert await reader.read() == b"ok"
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        alpn = ssl_object.selected_alpn_protocol()
        writer.close()
        return x509.load_der_x509_certificate(der), alpn
    finally:
        server.close()
        await server.wait_closed()


def _client_context(ca_cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    # The checks Python 3.13 turns on by default: the leaf must satisfy them already.
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


@pytest.mark.parametrize(
    ("host", "server_hostname", "san"),
    [
        pytest.param("api.twilio.com", "api.twilio.com", x509.DNSName("api.twilio.com"), id="dns"),
        pytest.param(
            "API.Example.COM.",
            "api.example.com",
            x509.DNSName("api.example.com"),
            id="normalised dns",
        ),
        pytest.param("bücher.de", "xn--bcher-kva.de", x509.DNSName("xn--bcher-kva.de"), id="idn"),
        pytest.param(
            "127.0.0.1", "127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), id="ipv4"
        ),
        pytest.param("[::1]", "::1", x509.IPAddress(ipaddress.ip_address("::1")), id="ipv6"),
    ],
)
async def test_client_trusting_the_ca_accepts_the_minted_leaf(
    ca: CertificateAuthority,
    ca_files: tuple[Path, Path],
    host: str,
    server_hostname: str,
    san: x509.GeneralName,
) -> None:
    leaf, alpn = await _handshake(
        ca.ssl_context_for(host), _client_context(ca_files[0]), server_hostname
    )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [san]
    assert alpn == "http/1.1"
    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_before_utc < now < leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - now <= dt.timedelta(days=31)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


async def test_leaf_for_one_host_is_refused_for_another(
    ca: CertificateAuthority, ca_files: tuple[Path, Path]
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(
            ca.ssl_context_for("api.twilio.com"), _client_context(ca_files[0]), "evil.example"
        )


async def test_client_not_trusting_the_ca_refuses_the_leaf(ca: CertificateAuthority) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(
            ca.ssl_context_for("api.twilio.com"), ssl.create_default_context(), "api.twilio.com"
        )


def test_contexts_are_cached_per_host(ca: CertificateAuthority) -> None:
    first = ca.ssl_context_for("api.twilio.com")
    assert ca.ssl_context_for("API.twilio.com.") is first
    assert ca.ssl_context_for("other.twilio.com") is not first


def test_cache_is_bounded(ca_files: tuple[Path, Path]) -> None:
    ca = CertificateAuthority.load(*ca_files)
    ca._cache_size = 2
    first = ca.ssl_context_for("a.example")
    ca.ssl_context_for("b.example")
    ca.ssl_context_for("c.example")
    assert ca.ssl_context_for("a.example") is not first


async def test_concurrent_async_requests_for_one_host_mint_once(ca: CertificateAuthority) -> None:
    contexts = await asyncio.gather(*(ca.ssl_context_for_async("burst.example") for _ in range(20)))
    assert all(c is contexts[0] for c in contexts)
    assert ca.ssl_context_for("burst.example") is contexts[0]


def test_serials_are_random(ca: CertificateAuthority) -> None:
    serials = {ca._leaf_certificate(f"h{i}.example").serial_number for i in range(5)}
    assert len(serials) == 5


@pytest.mark.parametrize(
    "host", [pytest.param("", id="empty"), pytest.param("bad host", id="space")]
)
def test_invalid_host_is_refused(ca: CertificateAuthority, host: str) -> None:
    with pytest.raises(ValueError):
        ca.ssl_context_for(host)


def test_load_refuses_a_key_of_another_ca(tmp_path: Path, ca_files: tuple[Path, Path]) -> None:
    generate_ca(tmp_path / "other.pem", tmp_path / "other.key")
    with pytest.raises(ValueError, match="does not match"):
        CertificateAuthority.load(ca_files[0], tmp_path / "other.key")


def test_generated_ca_key_is_private(ca_files: tuple[Path, Path]) -> None:
    assert ca_files[1].stat().st_mode & 0o077 == 0
