"""`sharewall ca create`: an interception CA with sane constraints that the proxy can load."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.certs import CertificateAuthority
from sharewall.cli import main


def test_ca_create_writes_a_private_key_and_a_constrained_certificate(tmp_path, capsys):
    out = tmp_path / "ca"
    assert main(["ca", "create", "--out", str(out)]) == 0
    cert_path, key_path = out / "ca.pem", out / "ca.key"
    assert capsys.readouterr().out.split() == [
        "--ca-cert",
        str(cert_path),
        "--ca-key",
        str(key_path),
    ]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert not usage.key_encipherment and not usage.data_encipherment
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)

    ca = CertificateAuthority.load(cert_path, key_path)  # what `proxy --ca-cert/--ca-key` does
    assert ca.ssl_context_for("api.vendor.test") is not None  # a leaf minted from it


def test_ca_create_keeps_an_existing_ca_unless_forced(tmp_path, capsys):
    out = tmp_path / "ca"
    assert main(["ca", "create", "--out", str(out)]) == 0
    first = (out / "ca.key").read_bytes()
    assert main(["ca", "create", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "ca.key").read_bytes() == first
    (out / "ca.key").chmod(0o644)
    assert main(["ca", "create", "--out", str(out), "--force", "--days", "30"]) == 0
    assert (out / "ca.key").read_bytes() != first
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("days", ["0", "5000"])
def test_ca_create_refuses_odd_lifetimes(tmp_path, days):
    assert main(["ca", "create", "--out", str(tmp_path / "ca"), "--days", days]) == 2
