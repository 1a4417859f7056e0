"""Every mistake on the command line is one line on stderr and exit 2, never a traceback.

`sharewall registry …` has its own table (tests/registry/test_registry_cli_errors.py); this one
covers the other commands: proxy, check, ca, capture-rules, inject, injector, the root.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGISTRY = str(REPO / "examples" / "registry.yaml")
CHECK = ["check", "--registry-file", REGISTRY, "--purpose", "service_delivery"]
# Any free port, no admin port: a start error is the one under test, never a port held elsewhere.
ANY_PORT = ["--listen", "127.0.0.1:0", "--admin-listen", "off"]
PROXY = ["proxy", "--registry-file", REGISTRY, *ANY_PORT]


@pytest.fixture(scope="module")
def held_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


CASES = [
    # the root command
    pytest.param([], "required", id="no command"),
    pytest.param(["bogus"], "invalid choice", id="unknown command"),
    # check
    pytest.param(["check"], "required", id="check: nothing"),
    pytest.param(
        ["check", "--registry-file", REGISTRY, "--purpose", "shoes", "GET", "https://x.test/"],
        "known purposes: account_management",
        id="check: unknown purpose",
    ),
    pytest.param([*CHECK, "GET", "https://[::1/x"], "invalid URL", id="check: unbalanced bracket"),
    pytest.param(
        [*CHECK, "GET", "https://exa mple.com/"], "invalid URL", id="check: space in host"
    ),
    pytest.param([*CHECK, "GET", "ftp://x.test/"], "invalid URL", id="check: not http"),
    pytest.param([*CHECK, "GET", "https://x.test:99999/"], "invalid URL", id="check: bad port"),
    pytest.param([*CHECK, "G ET", "https://x.test/"], "invalid HTTP method", id="check: method"),
    pytest.param(
        [*CHECK, "GET", "https://x.test/", "--header", "nocolon"], "--header", id="check: header"
    ),
    pytest.param(
        [*CHECK, "GET", "https://x.test/", "--data", "@{tmp}/missing.json"],
        "cannot read --data",
        id="check: data file missing",
    ),
    pytest.param(
        [
            "check",
            "--registry-file",
            "{tmp}/missing.yaml",
            "--purpose",
            "billing",
            "GET",
            "http://x/",
        ],
        "missing.yaml",
        id="check: registry file missing",
    ),
    pytest.param(
        ["check", "--registry-file", "{tmp}/bad.yaml", "--purpose", "billing", "GET", "http://x/"],
        "bad.yaml",
        id="check: registry file malformed",
    ),
    pytest.param(
        [*CHECK, "--engine", "opa", "GET", "https://x.test/"], "--opa-url", id="check: opa no url"
    ),
    # proxy
    pytest.param(["proxy"], "--registry-file or --registry-url", id="proxy: no registry"),
    pytest.param(
        ["proxy", "--registry-file", "{tmp}/missing.yaml", *ANY_PORT],
        "missing.yaml",
        id="proxy: registry file missing",
    ),
    pytest.param(
        ["proxy", "--registry-file", "{tmp}/bad.yaml", *ANY_PORT],
        "bad.yaml",
        id="proxy: registry file malformed",
    ),
    pytest.param([*PROXY, "--listen", "nope"], "HOST:PORT", id="proxy: bad listen"),
    pytest.param(
        [*PROXY, "--listen", "127.0.0.1:{held}"], "cannot listen", id="proxy: port in use"
    ),
    pytest.param([*PROXY, "--mode", "strict"], "invalid choice", id="proxy: bad mode"),
    pytest.param([*PROXY, "--engine", "opa"], "--opa-url", id="proxy: opa without url"),
    pytest.param([*PROXY, "--max-depth", "0"], "--max-depth", id="proxy: zero limit"),
    pytest.param([*PROXY, "--dns-ttl", "-1"], "--dns-ttl", id="proxy: negative ttl"),
    pytest.param([*PROXY, "--engine-timeout", "soon"], "invalid float", id="proxy: not a number"),
    pytest.param([*PROXY, "--ca-cert", "{tmp}/ca.pem"], "--ca-key", id="proxy: cert without key"),
    pytest.param(
        [*PROXY, "--ca-cert", "{tmp}/bad.yaml", "--ca-key", "{tmp}/bad.yaml"],
        "cannot load the CA",
        id="proxy: CA not a certificate",
    ),
    pytest.param(
        [*PROXY, "--resolve", "api.test:80:not-an-address"], "invalid pin", id="proxy: bad pin"
    ),
    pytest.param(
        [*PROXY, "--spool-dir", "{tmp}/bad.yaml/spool"], "spool", id="proxy: spool dir unusable"
    ),
    pytest.param(["proxy", "--unknown-flag"], "unrecognized arguments", id="proxy: unknown flag"),
    # ca
    pytest.param(["ca"], "required", id="ca: no subcommand"),
    pytest.param(["ca", "create"], "--out", id="ca: no --out"),
    pytest.param(["ca", "create", "--out", "{tmp}/ca", "--days", "0"], "--days", id="ca: days"),
    pytest.param(
        ["ca", "create", "--out", "{tmp}/bad.yaml/ca"], "cannot write", id="ca: out not a dir"
    ),
    pytest.param(["ca", "create", "--out", "{tmp}/existing"], "already exists", id="ca: exists"),
    # capture-rules, inject, injector
    pytest.param(["capture-rules", "--port", "x"], "invalid int", id="capture-rules: port"),
    pytest.param(["capture-rules", "--exclude-cidr", "nope"], "CIDR", id="capture-rules: bad cidr"),
    pytest.param(["inject", "-f", "{tmp}/missing.yaml"], "missing.yaml", id="inject: no file"),
    pytest.param(["injector", "serve"], "required", id="injector: no certificate"),
    pytest.param(
        ["injector", "serve", "--tls-cert", "{tmp}/missing.pem", "--tls-key", "{tmp}/missing.pem"],
        "missing.pem",
        id="injector: certificate missing",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_a_bad_invocation_is_one_line_and_exit_2(argv, expected, tmp_path, held_port):
    (tmp_path / "bad.yaml").write_text("recipients: [ {id: x\n")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "ca.pem").write_text("not ours to overwrite")
    args = [a.format(tmp=tmp_path, held=held_port) for a in argv]
    result = subprocess.run(
        [sys.executable, "-m", "sharewall.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert (existing / "ca.pem").read_text() == "not ours to overwrite"
