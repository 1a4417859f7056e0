"""Who is calling an egress gateway: the workload named by a client's TLS certificate.

A sidecar knows its one source from its own settings (downward API). A shared proxy serves many
workloads, so, as Smokescreen does, it speaks TLS on its listener, requires a client certificate
signed by `--client-ca`, and reads the calling workload from that certificate:

- a SPIFFE ID in a URI SAN, `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME` (what Istio, SPIRE and
  cert-manager's csi-driver-spiffe issue): namespace NAMESPACE, workload NAME (the service
  account, which by convention is named after the workload);
- else the subject's common name, in one of two forms: `system:serviceaccount:NAMESPACE:NAME`
  (the Kubernetes user name of a service account) or `NAME.NAMESPACE` (split at the last dot,
  as in a Service's DNS name; a namespace never contains a dot).

A certificate with a SPIFFE URI of any other shape, or with neither, names nobody and the
client is refused: its source is never guessed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sharewall.snapshot import NAMESPACE_RE, WORKLOAD_NAME_RE

if TYPE_CHECKING:
    from cryptography import x509

# `cryptography` (its own OpenSSL, ~12 MB of RSS) is imported only by a gateway: by
# `client_tls_context` at start, so that no handshake pays for the import on the loop.

SPIFFE_SCHEME = "spiffe://"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


class ClientIdentityError(ValueError):
    """A client certificate that names no workload (the reason is logged, never guessed around)."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The workload a client certificate names, and where in the certificate it was found."""

    namespace: str
    workload: str
    via: str  # "spiffe" or "cn"


def identity_from_certificate(der: bytes) -> ClientIdentity:
    """The workload named by a DER client certificate; `ClientIdentityError` if it names none."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise ClientIdentityError("unreadable certificate") from None
    spiffe_ids = _spiffe_ids(cert)
    if len(spiffe_ids) > 1:
        # The SPIFFE X.509-SVID spec: exactly one SPIFFE ID per certificate.
        raise ClientIdentityError("more than one SPIFFE ID")
    if spiffe_ids:
        return _from_spiffe_id(spiffe_ids[0])
    return _from_common_name(cert)


def _spiffe_ids(cert: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return [u for u in uris if u.lower().startswith(SPIFFE_SCHEME)]


def _from_spiffe_id(spiffe_id: str) -> ClientIdentity:
    trust_domain, _, path = spiffe_id[len(SPIFFE_SCHEME) :].partition("/")
    parts = path.split("/")
    if not trust_domain or len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        raise ClientIdentityError("SPIFFE ID is not spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME")
    return _identity(parts[1], parts[3], via="spiffe")


def _from_common_name(cert: x509.Certificate) -> ClientIdentity:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise ClientIdentityError("no SPIFFE ID and not exactly one common name")
    cn = names[0].value.strip()
    if cn.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace, sep, name = cn[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        if not sep:
            raise ClientIdentityError("common name is not system:serviceaccount:NAMESPACE:NAME")
        return _identity(namespace, name, via="cn")
    name, sep, namespace = cn.rpartition(".")
    if not sep:
        raise ClientIdentityError("common name is not NAME.NAMESPACE")
    return _identity(namespace, name, via="cn")


def _identity(namespace: str, name: str, *, via: str) -> ClientIdentity:
    # The registry's own name rules: a certificate cannot name a workload no registry could hold.
    if not NAMESPACE_RE.match(namespace) or not WORKLOAD_NAME_RE.match(name):
        raise ClientIdentityError(f"{via}: not a Kubernetes namespace and name")
    return ClientIdentity(namespace=namespace, workload=name, via=via)


def client_tls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """The listener's TLS context: our certificate, and a client certificate required from `client_ca`.

    Raises `OSError`/`ssl.SSLError` for unreadable or mismatched files (the caller says which).
    """
    import cryptography.x509  # noqa: F401 - loaded now, not by the first client's handshake

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context
