"""`sharewall proxy` refuses to start (exit 2, with the reason) on unusable flags or files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from proxy_harness import REPO


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        pytest.param(
            ["--registry-file", "tests/data/proxy/missing.yaml"], "no such file", id="missing file"
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--ca-cert", "x.pem"],
            "--ca-cert and --ca-key go together",
            id="half a CA",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--engine", "opa"],
            "--engine opa needs --opa-url",
            id="opa without url",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--resolve", "a.test:80"],
            "HOST:PORT:ADDR",
            id="bad pin",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--listen", "nowhere"],
            "expected HOST:PORT",
            id="bad listen address",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--transparent-listen", "15001"],
            "transparent-listen '15001'",
            id="bad transparent listen address",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--first-bytes-timeout", "0"],
            "--first-bytes-timeout must be more than 0 seconds",
            id="zero first-bytes timeout",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--dns-ttl", "-1"],
            "--dns-ttl must be 0 (off) or more seconds",
            id="negative dns ttl",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--client-ca", "ca.pem"],
            "--client-ca needs the listener's --tls-cert and --tls-key",
            id="client ca without a listener certificate",
        ),
        pytest.param(
            ["--registry-file", "tests/data/proxy/registry.yaml", "--tls-cert", "c.pem"],
            "--tls-cert and --tls-key go together",
            id="half a listener certificate",
        ),
        pytest.param(
            [
                "--registry-file",
                "tests/data/proxy/registry.yaml",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "c.key",
            ],
            "--tls-cert/--tls-key serve the --client-ca listener",
            id="tls listener without client ca",
        ),
        pytest.param(
            [
                "--registry-file",
                "tests/data/proxy/registry.yaml",
                "--client-ca",
                "ca.pem",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "c.key",
                "--source",
                "sms-gateway",
            ],
            "--source/--namespace do not apply",
            id="gateway with a fixed source",
        ),
        pytest.param(
            [
                "--registry-url",
                "http://127.0.0.1:9",
                "--token",
                "t",
                "--token-file",
                "tests/data/proxy/registry.yaml",
            ],
            "--token ($SHAREWALL_TOKEN) and --token-file ($SHAREWALL_TOKEN_FILE) do not go",
            id="token and token file",
        ),
        pytest.param(
            ["--registry-url", "http://127.0.0.1:9", "--token-file", "tests/data/proxy/gone"],
            "cannot read the token file 'tests/data/proxy/gone'",
            id="missing token file",
        ),
        pytest.param(
            [
                "--registry-url",
                "http://127.0.0.1:9",
                "--token-file",
                "tests/data/proxy/gone",
                "--workers",
                "2",
            ],
            "cannot read the token file 'tests/data/proxy/gone'",
            id="missing token file, workers",
        ),
    ],
)
def test_unusable_settings_exit_2_with_the_reason(tmp_path, args, reason):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sharewall.cli",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--spool-dir",
            str(tmp_path),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert reason in out.stdout + out.stderr


def test_an_empty_token_file_exits_2(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(" \n")  # a Secret written without its value
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sharewall.cli",
            "proxy",
            "--admin-listen",
            "off",
            "--spool-dir",
            str(tmp_path),
            "--registry-url",
            "http://127.0.0.1:9",
        ],
        cwd=REPO,
        env={**os.environ, "SHAREWALL_TOKEN_FILE": str(token_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"the token file {str(token_file)!r} is empty" in out.stderr


def test_proxy_help_gives_every_flag_its_help_and_default():
    import argparse

    from sharewall.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    proxy = sub.choices["proxy"]
    text = proxy.format_help()
    flags = [a for a in proxy._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 20
    for action in flags:
        assert action.help, f"{action.option_strings[0]} has no help"
        if action.default not in (None, False, []):
            assert f"default: {action.default}" in " ".join(text.split()), action.option_strings
    assert "SHAREWALL_TOKEN" in text  # the token comes from the environment, never printed


def test_an_admin_port_on_a_name_serves_and_is_refused_as_a_destination(tmp_path):
    """`--admin-listen localhost:0`: the name is resolved for the proxy's own-address check
    (it was parsed as an IP and the proxy died at start with a ValueError)."""
    import requests
    from proxy_harness import REGISTRY_YAML, ProxyProcess

    proxy = ProxyProcess(
        tmp_path, ["--registry-file", str(REGISTRY_YAML), "--admin-listen", "localhost:0"]
    )
    try:
        with requests.Session() as direct:
            direct.trust_env = False
            ready = direct.get(f"http://localhost:{proxy.admin_port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        with proxy.session() as http:
            looped = http.get(f"http://localhost:{proxy.admin_port}/metrics", timeout=10)
        assert looped.status_code == 403  # its own admin port is no destination
    finally:
        assert proxy.stop() == 0
