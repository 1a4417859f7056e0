"""TLS interception: leaf certificates minted per host, signed by the configured proxy CA."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sharewall.hosts import normalise_host

log = structlog.get_logger("sharewall.certs")

LEAF_VALIDITY = dt.timedelta(days=30)
# Clocks of clients drift; a leaf valid from "now" would be rejected by a client a bit behind.
CLOCK_SKEW = dt.timedelta(hours=1)
# Re-mint well before expiry so that a long-running sidecar never serves an expired leaf.
LEAF_MAX_AGE_SECONDS = 15 * 24 * 3600
CACHE_SIZE = 1024


def _signature_hash(key: object) -> hashes.HashAlgorithm | None:
    # Ed25519/Ed448 sign the message itself; every other key type signs a SHA-256 digest.
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


class CertificateAuthority:
    """Mints leaf certificates for intercepted hosts, signed by the configured CA (cached)."""

    def __init__(self, ca_cert: x509.Certificate, ca_key: object, *, cache_size: int = CACHE_SIZE):
        self._ca_cert = ca_cert
        self._ca_key = ca_key
        self._ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        # One leaf key for every host (as mitmproxy does): minting is then a signature only,
        # and the key never leaves the process (it is written to a 0700 temp dir to load it).
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._cache: OrderedDict[str, tuple[ssl.SSLContext, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._inflight: dict[str, asyncio.Future[ssl.SSLContext]] = {}

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """Load a PEM CA certificate and its unencrypted PEM private key."""
        ca_cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        ca_key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        if ca_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != ca_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ValueError("the CA key does not match the CA certificate")
        try:
            constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise ValueError("the CA certificate is not a CA (basicConstraints CA:TRUE missing)")
        return cls(ca_cert, ca_key)

    @property
    def ca_certificate_pem(self) -> bytes:
        """The CA certificate (PEM), for clients that must trust it."""
        return self._ca_pem

    def ssl_context_for(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for `host` (SAN = host), ALPN http/1.1."""
        name = _san_name(host)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and time.monotonic() - cached[1] < LEAF_MAX_AGE_SECONDS:
                self._cache.move_to_end(name)
                return cached[0]
        context = self._mint(name)
        with self._lock:
            self._cache[name] = (context, time.monotonic())
            self._cache.move_to_end(name)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return context

    async def ssl_context_for_async(self, host: str) -> ssl.SSLContext:
        """`ssl_context_for` off the event loop; concurrent calls for one host mint once."""
        name = _san_name(host)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and time.monotonic() - cached[1] < LEAF_MAX_AGE_SECONDS:
                self._cache.move_to_end(name)
                return cached[0]
        pending = self._inflight.get(name)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self.ssl_context_for, name))
            self._inflight[name] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(name, None))
        # Shielded: one waiter being cancelled (client gone) must not cancel the others' mint.
        return await asyncio.shield(pending)

    def _mint(self, name: str) -> ssl.SSLContext:
        started = time.perf_counter()
        cert_pem = self._leaf_certificate(name).public_bytes(serialization.Encoding.PEM)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # load_cert_chain reads files only: write leaf + CA chain + key to a private temp file.
        with tempfile.TemporaryDirectory(prefix="sharewall-leaf-") as tmp:
            path = os.path.join(tmp, "leaf.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(cert_pem + self._ca_pem + self._leaf_key_pem)
            context.load_cert_chain(path)
        log.debug(
            "certs.leaf_minted", host=name, ms=round((time.perf_counter() - started) * 1e3, 2)
        )
        return context

    def _leaf_certificate(self, name: str) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + LEAF_VALIDITY, self._ca_cert.not_valid_after_utc)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        ca_public = self._ca_cert.public_key()
        builder = (
            x509.CertificateBuilder()
            # CN is at most 64 characters; clients match the SAN, the CN is for humans.
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self._ca_cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._leaf_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),  # type: ignore[arg-type]
                critical=False,
            )
        )
        return builder.sign(self._ca_key, _signature_hash(self._ca_key))  # type: ignore[arg-type]


def _san_name(host: str) -> str:
    """The name a leaf is minted for: a normalised DNS name or a canonical IP literal."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(bare))
    return normalise_host(host)


def generate_ca(
    cert_path: Path,
    key_path: Path,
    common_name: str = "sharewall test CA",
    *,
    valid_days: int = 3650,
) -> x509.Certificate:
    """Write a new self-signed interception CA certificate and its private key (PEM, key 0600).

    EC P-256; CA:TRUE with path length 0 (it signs leaves, never another CA); key usage
    keyCertSign and cRLSign (and digitalSignature); valid `valid_days` from now.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sharewall"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        # pathlen 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_TRUNC
        out.write(key_pem)
    return cert
