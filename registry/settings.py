"""Settings of the registry service (one frozen dataclass, filled from the command line)."""

from __future__ import annotations

from dataclasses import dataclass

from registry.db import DEFAULT_DB_URL, DEFAULT_LOCK_TIMEOUT_S

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything `create_app` needs; defaults are the embedded single-node setup."""

    db_url: str = DEFAULT_DB_URL
    # PostgreSQL: the longest a write waits for a lock before it is 503 database-busy.
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    host: str = "127.0.0.1"
    port: int = 8700
    # Request bodies of the management API (recipients, grants, apply).
    max_body_bytes: int = 1 * MiB
    # Upper bound aiohttp enforces for any body; decision and log uploads use up to this.
    max_upload_bytes: int = 32 * MiB
    # Bound on a decompressed gzip upload (a gzip bomb is answered 413).
    max_decompressed_bytes: int = 64 * MiB
    # Flows and ledger rows older than this are deleted by the retention job.
    retention_days: int = 90
    retention_interval_s: float = 3600.0
    # Proxy id bindings no shipment used for this long are released by the retention job (a
    # Deployment's pods bind one each, by pod name); 0 keeps them until an admin releases them.
    proxy_id_idle_days: int = 30
    # Failed sign-ins (bad bearer tokens, console sign-ins) allowed per client address in a
    # burst, refilled over the window; beyond them the address gets 429 with Retry-After.
    sign_in_failures: int = 10
    sign_in_window_s: float = 60.0
    # How long a looked-up token is trusted before the database is asked again.
    token_cache_ttl_s: float = 5.0
    # Longest long-poll a snapshot/bundle client may ask for.
    max_wait_s: float = 60.0
