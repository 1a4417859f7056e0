"""What the registry says about the proxy's own token: when it expires, and its refusals.

A refusal (401: the token is unknown, revoked or expired; 403: e.g. `proxy-id-bound`) of the
shipper's uploads or of the follower's snapshot requests is kept (`Refusals`: the current one
and counts by the registry's reason code) for `/readyz` notices and metrics.

A rotated token's old secret keeps working for a grace, and every answer to it carries
`Sharewall-Token-Expires` (`sharewall.token_expiry`). The follower (a long poll at least every
minute) and the shipper both report each answer's header here, so the proxy notices within a
minute of a rotation whether or not it has anything to ship: a `registry.token_expiring` line,
`sharewall_registry_token_expiry_timestamp_seconds`, and a `/readyz` notice.

The secret itself is a `RegistryToken`: fixed (`--token`), or read from a file
(`--token-file`, a mounted Kubernetes Secret) and read again when the file changes, so a
rotated secret is taken without a restart. The file is checked (one `stat`, following the
symlinks kubelet swaps) before each request to the registry, and read again whatever its
`stat` says after a 401.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from sharewall.token_expiry import TOKEN_EXPIRES_HEADER, parse_expiry

log = structlog.get_logger("sharewall.proxy.registry_token")

_HEADER = TOKEN_EXPIRES_HEADER.lower()  # the control client's header names are lower-case
# Answers that refuse the proxy itself rather than fail: its token, its proxy id.
REFUSED_STATUSES = frozenset({401, 403})
# A reason code as the registry writes it (the last segment of a problem's `type`); anything
# else is counted as `other`, so a label never carries free text.
_REASON_CODE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class TokenExpiry:
    """When the proxy's registry token stops authenticating, as the last answer said."""

    def __init__(self) -> None:
        self.expires_at: datetime | None = None

    def note(self, headers: Mapping[str, str]) -> None:
        """Take an answer's headers; a new expiry is logged. An answer without the header
        changes nothing: a token is rotated once and keeps its expiry, and a long poll asked
        before the rotation is answered without it."""
        value = headers.get(_HEADER)
        if not value:
            return
        when = parse_expiry(value)
        if when is None:
            log.warning("registry.token_expiry_unreadable", value=value[:40])
        elif when != self.expires_at:
            self.expires_at = when
            log.warning("registry.token_expiring", expires_at=when.isoformat())

    def renewed(self) -> None:
        """The proxy took a new secret (`RegistryToken`): the old one's expiry is no longer its
        own (the new secret's answers carry no header until it is rotated in turn)."""
        self.expires_at = None

    def notices(self) -> list[str]:
        """The `/readyz` notice once the token expires (empty otherwise)."""
        if self.expires_at is None:
            return []
        return [
            f"the registry token expires at {self.expires_at:%Y-%m-%dT%H:%M:%SZ} (it was "
            "rotated): give the proxy the new secret before then"
        ]


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal by the registry: status, its reason code and detail, since when."""

    status: int
    reason: str
    detail: str
    since: datetime

    def notice(self, what: str, meanwhile: str) -> str:
        """How `/readyz` words it: the registry refuses `what`; `meanwhile` says what the
        proxy does about it."""
        return (
            f"the registry refuses this proxy's {what} since {self.since:%Y-%m-%dT%H:%M:%SZ} "
            f"(HTTP {self.status} {self.reason}: {self.detail}); {meanwhile}"
        )


def refusal_reason(status: int, problem: Any) -> str:
    """The registry's reason code of a refusal (`proxy-id-bound`, `unauthorized`...), from
    its problem document's `type`; `http-<status>` when the answer is not one."""
    kind = problem.get("type") if isinstance(problem, dict) else None
    if not isinstance(kind, str) or not kind:
        return f"http-{status}"
    code = kind.rstrip("/").rsplit("/", 1)[-1]
    return code if _REASON_CODE.fullmatch(code) else "other"


class Refusals:
    """The registry's current refusal of one kind of request (None: the last answer was not
    one) and the refusals so far by reason code."""

    def __init__(self) -> None:
        self.current: Refusal | None = None
        self.counts: dict[str, int] = {}

    def refused(self, status: int, body: bytes) -> Refusal:
        """Count a 401/403 answer (its problem document's reason) and return the refusal."""
        try:
            problem = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            problem = None
        reason = refusal_reason(status, problem)
        detail = problem.get("detail") if isinstance(problem, dict) else None
        detail = detail[:200] if isinstance(detail, str) else f"HTTP {status}"
        self.counts[reason] = self.counts.get(reason, 0) + 1
        current = self.current
        if current is None or (current.status, current.reason) != (status, reason):
            self.current = Refusal(status, reason, detail, datetime.now(UTC))
        return self.current  # type: ignore[return-value]

    def accepted(self) -> Refusal | None:
        """An answer that was no refusal: the refusal it ended, if any."""
        ended, self.current = self.current, None
        return ended


class TokenFileError(Exception):
    """The token file cannot be read, or holds no token."""


def read_token_file(path: Path) -> str:
    """The token in `path`, surrounding whitespace stripped; `TokenFileError` when the file
    cannot be read or holds nothing else."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read the token file {str(path)!r}: {exc}") from None
    token = text.strip()
    if not token:
        raise TokenFileError(f"the token file {str(path)!r} is empty")
    return token


_Identity = tuple[int, int, int, int, int]


def _file_identity(path: Path) -> _Identity | None:
    """(inode, device, size, mtime_ns, ctime_ns) of the file `path` leads to: kubelet's swap
    of a Secret volume's `..data` symlink changes the target, and so its inode; an edit in
    place changes the times (ctime also a chmod that makes an unreadable file readable)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class RegistryToken:
    """The secret the proxy sends the registry: fixed, or the content of a token file.

    `current()` is what to send now: with a file, it is checked first (one `stat`, off the
    hot path: only the follower's polls and the shipper's uploads ask) and read again when it
    changed. `refused()` reads it again after a 401 whatever its `stat` says. A file that
    becomes unreadable or empty keeps the secret last read (logged), so a Secret being
    rewritten never leaves the proxy without one. A new secret is logged as
    `registry.token_reloaded` (with the file's path, never the secret), and ends what
    `expiry` knew of the old one (`TokenExpiry.renewed`).
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        path: Path | None = None,
        expiry: TokenExpiry | None = None,
    ) -> None:
        self.path = path
        self.expiry = expiry
        self.reloads = 0
        self._identity: _Identity | None = None
        if path is not None:
            self._identity = _file_identity(path)
            secret = read_token_file(path)
        self._secret = secret

    @property
    def secret(self) -> str | None:
        """The secret last read (no check of the file)."""
        return self._secret

    def current(self) -> str | None:
        """The secret to send now (a changed file is read first)."""
        if self.path is not None:
            identity = _file_identity(self.path)
            if identity != self._identity:
                self._reload(identity)
        return self._secret

    def refused(self) -> None:
        """The registry answered 401: read the file again (it may have changed unseen)."""
        if self.path is not None:
            self._reload(_file_identity(self.path))

    def _reload(self, identity: _Identity | None) -> None:
        assert self.path is not None
        self._identity = identity
        try:
            secret = read_token_file(self.path)
        except TokenFileError as exc:
            log.warning("registry.token_file_unusable", path=str(self.path), detail=str(exc))
            return
        if secret != self._secret:
            self._secret = secret
            self.reloads += 1
            if self.expiry is not None:
                self.expiry.renewed()
            log.info("registry.token_reloaded", path=str(self.path))
