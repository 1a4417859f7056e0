"""`sharewall registry serve | migrate | tokens`: a token created on the command line works."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sharewall.cli import main


@pytest.fixture
def served(db_url) -> Iterator[str]:
    """`sharewall registry serve --listen 127.0.0.1:0` as a subprocess; yields its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sharewall.cli",
            "registry",
            "serve",
            "--db",
            db_url,
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        url = None
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if '"registry.listening"' in line:
                event = json.loads(line)
                url = f"http://127.0.0.1:{event['port']}"
                break
        assert url, "registry did not log registry.listening"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def get(url: str, secret: str | None = None) -> int:
    req = urllib.request.Request(url)
    if secret:
        req.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tokens_create_prints_the_secret_once_and_it_authenticates(db_url, capsys, served):
    assert (
        main(
            [
                "registry",
                "tokens",
                "create",
                "--role",
                "security",
                "--name",
                "sec-cli",
                "--db",
                db_url,
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("sw_") and "\n" not in secret
    assert "not shown again" in out.err
    assert main(["registry", "tokens", "list", "--db", db_url]) == 0
    listing = capsys.readouterr().out
    assert "sec-cli" in listing and secret not in listing
    assert get(f"{served}/v1/audit", secret) == 200
    assert get(f"{served}/v1/audit") == 401
    assert get(f"{served}/v1/tokens", secret) == 403
    token_id = next(line.split("\t")[0] for line in listing.splitlines() if "\tsec-cli\t" in line)
    assert main(["registry", "tokens", "revoke", token_id, "--db", db_url]) == 0
    capsys.readouterr()
    time.sleep(0.1)
    # The server caches a token for up to 5 s; revocation through the CLI lands within that.
    deadline = time.monotonic() + 8
    while get(f"{served}/v1/audit", secret) != 401:
        assert time.monotonic() < deadline, "revoked token still accepted"
        time.sleep(0.5)


def test_tokens_rotate_keeps_the_shipping_identity(db_url, capsys):
    assert (
        main(
            ["registry", "tokens", "create", "--role", "proxy", "--name", "pod-rot", "--db", db_url]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["registry", "tokens", "list", "--db", db_url]) == 0
    listing = capsys.readouterr().out
    old_id = next(line.split("\t")[0] for line in listing.splitlines() if "\tpod-rot\t" in line)
    assert main(["registry", "tokens", "rotate", old_id, "--db", db_url]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("sw_")
    assert f"shipping as {old_id}" in out.err
    assert f"{old_id}'s secret works until " in out.err  # the default grace: an hour
    assert main(["registry", "tokens", "list", "--db", db_url]) == 0
    [state] = [
        line.split("\t")[4]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(f"{old_id}\t")
    ]
    assert state.startswith("expires 20")
    assert main(["registry", "tokens", "rotate", old_id, "--db", db_url]) == 2
    assert "rotated already" in capsys.readouterr().err


def test_tokens_rotate_with_no_grace_revokes_the_old_token(db_url, capsys):
    assert (
        main(
            ["registry", "tokens", "create", "--role", "proxy", "--name", "pod-now", "--db", db_url]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["registry", "tokens", "list", "--db", db_url]) == 0
    listing = capsys.readouterr().out
    old_id = next(line.split("\t")[0] for line in listing.splitlines() if "\tpod-now\t" in line)
    rotate = ["registry", "tokens", "rotate", old_id, "--db", db_url]
    with pytest.raises(SystemExit) as exited:
        main([*rotate, "--grace", "8d"])  # past the week allowed
    assert exited.value.code == 2
    assert "--grace" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*rotate, "--grace", "soon"])
    assert "expected a duration" in capsys.readouterr().err
    assert main([*rotate, "--grace", "0"]) == 0
    assert f"{old_id} is revoked" in capsys.readouterr().err


def test_tokens_create_rejects_an_unknown_role(db_url, capsys):
    with pytest.raises(SystemExit):
        main(["registry", "tokens", "create", "--role", "root", "--name", "x", "--db", db_url])
    assert "invalid choice" in capsys.readouterr().err


def test_migrate_reports_the_revision(db_url, capsys):
    assert main(["registry", "migrate", "--db", db_url]) == 0
    assert "head" in capsys.readouterr().out
