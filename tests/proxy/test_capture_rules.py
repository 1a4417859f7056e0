"""`sharewall capture-rules`: the rules it prints, its input errors, and applying them twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from proxy.capture_rules import CaptureConfig, render
from sharewall.cli import main

SHAREWALL = [sys.executable, "-m", "sharewall.cli"]


def test_printed_rules_redirect_tcp_of_every_uid_but_the_proxy(capsys) -> None:
    assert main(["capture-rules", "--exclude-cidr", "10.96.0.0/12", "--exclude-port", "22"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "-A OUTPUT -p tcp -j SHAREWALL_OUTPUT" in lines
    assert "-A SHAREWALL_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in lines
    # The proxy's UID is exempt before anything is redirected, then loopback and the exclusions.
    chain = [line for line in lines if line.startswith("-A SHAREWALL_OUTPUT")]
    assert chain == [
        "-A SHAREWALL_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A SHAREWALL_OUTPUT -o lo -j RETURN",
        "-A SHAREWALL_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A SHAREWALL_OUTPUT -d 10.96.0.0/12 -j RETURN",
        "-A SHAREWALL_OUTPUT -p tcp --dport 22 -j RETURN",
        "-A SHAREWALL_OUTPUT -p tcp -j SHAREWALL_REDIRECT",
    ]
    udp = [line for line in lines if line.startswith("-A SHAREWALL_UDP")]
    assert udp[-1] == "-A SHAREWALL_UDP -j DROP"
    assert "-A SHAREWALL_UDP -p udp --dport 53 -j RETURN" in udp
    assert "ip6tables" not in out


def test_options_change_the_port_uid_ipv6_and_udp(capsys) -> None:
    argv = ["capture-rules", "--proxy-uid", "2000", "--port", "16001", "--ipv6", "--keep-udp"]
    argv += ["--exclude-cidr", "fd00::/8", "--exclude-cidr", "10.0.0.0/8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    v4, _, v6 = out.partition("# ip6tables-restore --noflush")
    assert "--uid-owner 2000" in v4 and "--to-ports 16001" in v4
    assert "-d 10.0.0.0/8" in v4 and "fd00::/8" not in v4
    assert "-d fd00::/8" in v6 and "-d ::1/128" in v6 and "10.0.0.0/8" not in v6
    assert "SHAREWALL_UDP" not in out  # UDP kept


def test_apply_leaves_out_jumps_already_there() -> None:
    text = render(CaptureConfig(), 4, jumps=(False, False))
    assert "-A OUTPUT" not in text
    assert "-F SHAREWALL_OUTPUT" in text  # our chains are refilled, never appended to


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--exclude-cidr", "10.0.0.0/x"], "not a CIDR"),
        (["--exclude-cidr", "fd00::/8"], "needs --ipv6"),
        (["--exclude-port", "http"], "not a port"),
        (["--port", "70000"], "not a port"),
        (["--proxy-uid", "-1"], "not a UID"),
    ],
)
def test_input_errors_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [*SHAREWALL, "capture-rules", *argv], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def _netns_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables", "iptables-restore", "iptables-legacy", "iptables-nft-save"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package iptables / iproute2; `make test` installs it as root)"
    return None


@pytest.mark.skipif(_netns_ready() is not None, reason=str(_netns_ready()))
def test_apply_twice_in_a_namespace_gives_the_same_rules() -> None:
    ns = f"swcap-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        command = ["ip", "netns", "exec", ns, *SHAREWALL, "capture-rules", "--apply"]
        command += ["--exclude-cidr", "10.96.0.0/12"]
        first = subprocess.run(command, capture_output=True, text=True, check=True)
        assert '"event":"capture.applied"' in first.stdout and '"apply_ms"' in first.stdout
        save = ["ip", "netns", "exec", ns, "iptables-save"]
        once = subprocess.run(save, capture_output=True, text=True, check=True).stdout
        subprocess.run(command, capture_output=True, text=True, check=True)
        twice = subprocess.run(save, capture_output=True, text=True, check=True).stdout
        rules = sorted(line for line in twice.splitlines() if line.startswith("-A"))
        assert rules == sorted(line for line in once.splitlines() if line.startswith("-A"))
        assert rules.count("-A OUTPUT -p tcp -j SHAREWALL_OUTPUT") == 1
        assert "-A SHAREWALL_UDP -j DROP" in rules
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_chosen_backend_names_its_own_restore_command(capsys) -> None:
    assert main(["capture-rules", "--ipv6", "--iptables-backend", "legacy"]) == 0
    out = capsys.readouterr().out
    assert "# iptables-legacy-restore --noflush" in out
    assert "# ip6tables-legacy-restore --noflush" in out


@contextmanager
def _namespace() -> Iterator[str]:
    ns = f"swcap-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _rules(ns: str, save: str) -> list[str]:
    dump = subprocess.run(
        ["ip", "netns", "exec", ns, save], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in dump.splitlines() if line.startswith("-A")]


def _apply(ns: str, *extra: str) -> dict:
    command = ["ip", "netns", "exec", ns, *SHAREWALL, "capture-rules", "--apply", *extra]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.skipif(_netns_ready() is not None, reason=str(_netns_ready()))
@pytest.mark.parametrize(
    ("existing", "flags", "expected"),
    [
        pytest.param(None, (), "nft", id="no rules anywhere: nft"),
        pytest.param("iptables-legacy", (), "legacy", id="the node's rules are legacy"),
        pytest.param("iptables-nft", (), "nft", id="the node's rules are nft"),
        pytest.param(None, ("--iptables-backend", "legacy"), "legacy", id="override"),
    ],
)
def test_rules_go_to_the_backend_that_already_holds_rules(
    existing: str | None, flags: tuple[str, ...], expected: str
) -> None:
    # The kernel keeps legacy and nf_tables rules apart: rules loaded into the other back-end
    # than the node's would sit beside them, unseen by its tools, in an order nobody chose.
    other = {"nft": "legacy", "legacy": "nft"}[expected]
    with _namespace() as ns:
        if existing is not None:
            rule = ["-t", "nat", "-A", "OUTPUT", "-d", "192.0.2.1", "-j", "RETURN"]
            subprocess.run(["ip", "netns", "exec", ns, existing, *rule], check=True)
        line = _apply(ns, *flags)
        assert line["event"] == "capture.applied" and line["backend"] == expected
        assert "-A OUTPUT -p tcp -j SHAREWALL_OUTPUT" in _rules(ns, f"iptables-{expected}-save")
        assert not any("SHAREWALL" in r for r in _rules(ns, f"iptables-{other}-save"))
