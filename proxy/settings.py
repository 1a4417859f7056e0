"""Settings of the `sharewall proxy` process: one frozen value built from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from proxy.inspection_limits import InspectionLimits
from sharewall import hosts

Mode = Literal["enforce", "report"]
EngineName = Literal["embedded", "opa"]
LoopName = Literal["auto", "asyncio", "uvloop"]
# Each listener's accept queue (the kernel caps it at net.core.somaxconn): a burst of new
# connections waits there while the loop is busy instead of being refused or retried.
LISTEN_BACKLOG = 1024


class SettingsError(ValueError):
    """A flag value the proxy cannot run with (exit code 2)."""


def parse_hostport(text: str, *, what: str = "address") -> tuple[str, int]:
    """Parse `HOST:PORT` or `[V6]:PORT` of a listen flag; port 0 means an ephemeral port."""
    try:
        return hosts.parse_hostport(text)
    except hosts.BadAuthority as exc:
        raise SettingsError(f"{what} {text!r}: {exc}") from None


def default_spool_dir() -> Path:
    """`$SHAREWALL_SPOOL_DIR`, else `./var/spool`."""
    return Path(os.environ.get("SHAREWALL_SPOOL_DIR") or "var/spool")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the proxy process needs to run; defaults are the sidecar's production values."""

    registry_file: Path | None = None
    registry_url: str | None = None
    token: str | None = None
    # A file holding the token (a mounted Secret), read again when it changes; not with token.
    token_file: Path | None = None
    listen: tuple[str, int] = ("127.0.0.1", 15080)
    admin_listen: tuple[str, int] | None = ("127.0.0.1", 15081)
    port_file: Path | None = None  # written with the bound listen/admin ports (tests, port 0)
    mode: Mode = "enforce"
    engine: EngineName = "embedded"
    opa_url: str | None = None
    engine_timeout: float = 0.5
    default_purpose: str | None = None
    ca_cert: Path | None = None
    ca_key: Path | None = None
    upstream_ca: Path | None = None
    resolve_pins: tuple[str, ...] = ()  # HOST:PORT:ADDR, parsed by proxy.destinations
    # Transparent capture (`sharewall capture-rules`): where redirected connections arrive.
    transparent_listen: tuple[str, int] | None = None
    first_bytes_timeout: float = 5.0  # a captured connection must name itself within this
    source_workload: str | None = None
    source_namespace: str | None = None
    # Egress gateway: the listener speaks TLS (tls_cert/tls_key) and takes each client's source
    # from its certificate, which must be signed by client_ca (proxy.client_identity).
    client_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_header_bytes: int = 32 * 1024
    limits: InspectionLimits = field(default_factory=InspectionLimits)
    max_tunnels: int = 512
    max_connections: int = 4096
    idle_timeout: float = 60.0  # keep-alive between requests, and idle spliced tunnels
    header_timeout: float = 10.0  # a request head must arrive within this (slowloris)
    body_timeout: float = 30.0  # for the inspected part of a request body, and between reads after
    upstream_connect_timeout: float = 5.0
    dns_ttl: float = 30.0  # seconds a checked DNS outcome is reused (0: resolve every call)
    upstream_timeout: float = 60.0  # until the upstream's response head
    drain_timeout: float = 10.0
    spool_dir: Path = field(default_factory=default_spool_dir)
    reload_interval: float = 1.0
    log_level: str = "info"
    # Log line bytes kept for a stalled stdout reader; past it new calls are refused 503.
    log_buffer_bytes: int = 4 * 1024 * 1024
    loop: LoopName = "auto"  # event loop: uvloop when importable (auto), or the one named
    # A worker of `--workers N` (proxy.supervisor): listeners share their port (SO_REUSEPORT).
    reuse_port: bool = False
    # How many workers share the spool directory (`--workers`): DIR/worker-K with K >= this
    # are leftovers of a larger count, shipped by the process owning DIR (proxy.spool_leftovers).
    workers: int = 1
    # This proxy's addresses served by another process (the supervisor's admin port): refused
    # as destinations, as the proxy's own are.
    sibling_addresses: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.log_buffer_bytes < 1:
            raise SettingsError("--log-buffer must be a positive number of bytes")
        if self.mode not in ("enforce", "report"):
            raise SettingsError(f"mode must be enforce or report, not {self.mode!r}")
        if self.engine not in ("embedded", "opa"):
            raise SettingsError(f"engine must be embedded or opa, not {self.engine!r}")
        if self.engine == "opa" and not self.opa_url:
            raise SettingsError("--engine opa needs --opa-url")
        if (self.ca_cert is None) != (self.ca_key is None):
            raise SettingsError("--ca-cert and --ca-key go together")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("--tls-cert and --tls-key go together")
        if self.client_ca is not None and self.tls_cert is None:
            raise SettingsError("--client-ca needs the listener's --tls-cert and --tls-key")
        if self.tls_cert is not None and self.client_ca is None:
            raise SettingsError("--tls-cert/--tls-key serve the --client-ca listener")
        if self.client_ca is not None and (self.source_workload or self.source_namespace):
            raise SettingsError(
                "--client-ca takes each client's source from its certificate; "
                "--source/--namespace do not apply"
            )
        if self.client_ca is not None and self.transparent_listen is not None:
            # Captured connections carry no certificate: a gateway serves other pods' clients.
            raise SettingsError("--client-ca and --transparent-listen do not go together")
        if self.first_bytes_timeout <= 0:
            raise SettingsError("--first-bytes-timeout must be more than 0 seconds")
        if self.dns_ttl < 0:
            raise SettingsError("--dns-ttl must be 0 (off) or more seconds")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise SettingsError(f"loop must be auto, asyncio or uvloop, not {self.loop!r}")
        if self.token is not None and self.token_file is not None:
            raise SettingsError(
                "--token ($SHAREWALL_TOKEN) and --token-file ($SHAREWALL_TOKEN_FILE) do not go "
                "together"
            )
        if self.registry_file is None and self.registry_url is None:
            raise SettingsError("one of --registry-file or --registry-url is required")

    @property
    def intercepts_tls(self) -> bool:
        return self.ca_cert is not None

    @property
    def is_gateway(self) -> bool:
        """Clients authenticate with certificates, each call's source is its client's."""
        return self.client_ca is not None
