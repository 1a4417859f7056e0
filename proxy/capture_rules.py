"""The iptables rules of transparent capture, as `istio-iptables` writes Istio's.

In the pod's network namespace, every outbound TCP connection of every UID but the proxy's is
redirected (nat `REDIRECT`) to the proxy's transparent port, except loopback, the excluded
destination ranges (cluster service and pod CIDRs) and the excluded destination ports; other
outbound UDP than DNS is dropped (filter table) unless UDP is kept. The rules live in our own
chains (`SHAREWALL_OUTPUT`, `SHAREWALL_REDIRECT`, `SHAREWALL_UDP`), reached by one jump each
from `OUTPUT`; applying flushes and refills our chains and adds a jump only when it is not
there yet, so applying twice (an init container restarted) leaves the same rules.

iptables has two back-ends in the kernel, legacy (x_tables) and nf_tables, and the rules of
one are invisible to the other; Debian's `iptables` package ships both (`iptables-legacy*`,
`iptables-nft*`, and `iptables*` as whichever the alternatives name). Rules must go where the
node's other rules are, so the back-end is detected as `istio-iptables` does: the one whose
tables already hold rules in this namespace (nft first), nft when neither has any, legacy when
nft is not there, plain `iptables` as the last resort; `--iptables-backend` overrides it.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT_CHAIN = "SHAREWALL_OUTPUT"
REDIRECT_CHAIN = "SHAREWALL_REDIRECT"
UDP_CHAIN = "SHAREWALL_UDP"
DNS_PORT = 53
_LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
_COMMANDS = {4: "iptables", 6: "ip6tables"}
BACKENDS = ("nft", "legacy")  # in order of preference


class CaptureError(RuntimeError):
    """The rules could not be applied (tool missing, not permitted, rejected)."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """What `sharewall capture-rules` was asked for."""

    proxy_uid: int = 1337
    port: int = 15001
    exclude_cidrs: tuple[Network, ...] = ()
    exclude_ports: tuple[int, ...] = ()
    ipv6: bool = False
    keep_udp: bool = False

    @property
    def families(self) -> tuple[int, ...]:
        return (4, 6) if self.ipv6 else (4,)


def tool(family: int, backend: str, kind: str = "") -> str:
    """The command of a back-end: `tool(6, "nft", "restore")` is `ip6tables-nft-restore`.

    Back-end "" is the unsuffixed command (whichever the system's alternatives point to).
    """
    return "-".join(part for part in (_COMMANDS[family], backend, kind) if part)


def detect_backend(families: tuple[int, ...] = (4,)) -> str:
    """The back-end to write rules with in this network namespace (see the module docstring)."""
    available = []
    for backend in BACKENDS:
        dumps = [_save(tool(family, backend, "save")) for family in families]
        if None in dumps:
            continue  # not installed, or the kernel does not support it
        if any(line.startswith("-A ") for dump in dumps for line in (dump or "").splitlines()):
            return backend
        available.append(backend)
    return available[0] if available else ""


def _save(command: str) -> str | None:
    if shutil.which(command) is None:
        return None
    try:
        result = subprocess.run(  # noqa: S603 - our own argument list, no shell
            [command], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def nat_jump() -> list[str]:
    """The rule (without `-A`/`-C`) that sends OUTPUT's TCP to our nat chain."""
    return ["OUTPUT", "-p", "tcp", "-j", NAT_CHAIN]


def udp_jump() -> list[str]:
    """The rule (without `-A`/`-C`) that sends OUTPUT's UDP to our filter chain."""
    return ["OUTPUT", "-p", "udp", "-j", UDP_CHAIN]


def render(config: CaptureConfig, family: int, *, jumps: tuple[bool, bool] = (True, True)) -> str:
    """The `iptables-restore --noflush` input for IPv`family`.

    `jumps`: whether to add the OUTPUT jump to the nat chain and to the UDP chain (apply
    leaves out the ones already present).
    """
    cidrs = [str(c) for c in config.exclude_cidrs if c.version == family]
    uid = str(config.proxy_uid)
    nat = [
        "*nat",
        f":{NAT_CHAIN} - [0:0]",
        f":{REDIRECT_CHAIN} - [0:0]",
        f"-F {NAT_CHAIN}",
        f"-F {REDIRECT_CHAIN}",
        f"-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {config.port}",
        # The proxy's own upstream connections: redirecting them back to it would loop.
        f"-A {NAT_CHAIN} -m owner --uid-owner {uid} -j RETURN",
        f"-A {NAT_CHAIN} -o lo -j RETURN",
        f"-A {NAT_CHAIN} -d {_LOOPBACK[family]} -j RETURN",
        *(f"-A {NAT_CHAIN} -d {cidr} -j RETURN" for cidr in cidrs),
        *(f"-A {NAT_CHAIN} -p tcp --dport {port} -j RETURN" for port in config.exclude_ports),
        f"-A {NAT_CHAIN} -p tcp -j {REDIRECT_CHAIN}",
    ]
    if jumps[0]:
        nat.append("-A " + " ".join(nat_jump()))
    nat.append("COMMIT")
    if config.keep_udp:
        return "\n".join(nat) + "\n"
    udp = [
        "*filter",
        f":{UDP_CHAIN} - [0:0]",
        f"-F {UDP_CHAIN}",
        f"-A {UDP_CHAIN} -m owner --uid-owner {uid} -j RETURN",
        f"-A {UDP_CHAIN} -o lo -j RETURN",
        f"-A {UDP_CHAIN} -p udp --dport {DNS_PORT} -j RETURN",
        *(f"-A {UDP_CHAIN} -d {cidr} -j RETURN" for cidr in cidrs),
        # QUIC and any other datagram protocol would leave the pod unseen: TCP only.
        f"-A {UDP_CHAIN} -j DROP",
    ]
    if jumps[1]:
        udp.append("-A " + " ".join(udp_jump()))
    udp.append("COMMIT")
    return "\n".join(nat + udp) + "\n"


def render_all(config: CaptureConfig, backend: str = "") -> str:
    """Every family's rules, each headed by the command that loads it (what `capture-rules` prints)."""
    parts = []
    for family in config.families:
        restore = tool(family, backend, "restore")
        parts.append(f"# {restore} --noflush\n{render(config, family)}")
    return "\n".join(parts)


def apply(config: CaptureConfig, backend: str | None = None) -> tuple[str, float]:
    """Apply the rules in the current network namespace: (back-end used, milliseconds taken).

    `backend`: "nft", "legacy", "" (plain `iptables`), or None to detect it. Raises
    `CaptureError` when a tool is missing or refuses the rules.
    """
    t0 = time.perf_counter()
    if backend is None:
        backend = detect_backend(config.families)
    for family in config.families:
        check_tool, restore_tool = tool(family, backend), tool(family, backend, "restore")
        for command in (check_tool, restore_tool):
            if shutil.which(command) is None:
                raise CaptureError(f"{command} not found (install the iptables package)")
        jumps = (
            not _has_rule(check_tool, "nat", nat_jump()),
            not config.keep_udp and not _has_rule(check_tool, "filter", udp_jump()),
        )
        _run([restore_tool, "--noflush"], render(config, family, jumps=jumps))
    return backend, (time.perf_counter() - t0) * 1000.0


def _has_rule(tool: str, table: str, rule: list[str]) -> bool:
    result = subprocess.run(  # noqa: S603 - our own argument list, no shell
        [tool, "-w", "5", "-t", table, "-C", *rule],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def _run(command: list[str], stdin: str) -> None:
    try:
        result = subprocess.run(  # noqa: S603 - our own argument list, no shell
            command, input=stdin, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise CaptureError(f"{command[0]}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise CaptureError(f"{command[0]} failed: {message[-1] if message else result.returncode}")
