"""The webhook's serving certificate, reloaded when its files change (cert-manager rotates it)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import structlog

log = structlog.get_logger("sharewall.injector")


class TlsError(ValueError):
    """The certificate or key cannot be loaded (exit 2 at start)."""


class ReloadingContext:
    """A server `SSLContext` whose certificate chain is reloaded in place when the files change:
    `load_cert_chain` on a live context applies to every handshake after it."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._files_stamp()
        self._load()

    def _files_stamp(self) -> tuple[float, float]:
        try:
            return (self.cert.stat().st_mtime, self.key.stat().st_mtime)
        except OSError as exc:
            raise TlsError(f"{exc.filename}: {exc.strerror}") from None

    def _load(self) -> None:
        try:
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"{self.cert}, {self.key}: cannot load ({exc})") from None

    def reload_if_changed(self) -> bool:
        """Reload when either file changed; a pair that fails to load keeps the old one."""
        try:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return False
            self._load()
        except TlsError as exc:
            log.warning("injector.tls_reload_failed", reason=str(exc))
            return False
        self._stamp = stamp
        log.info("injector.tls_reloaded", cert=str(self.cert))
        return True

    async def watch(self, *, interval: float) -> None:
        """Check the files every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()
