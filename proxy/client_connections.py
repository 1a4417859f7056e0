"""What the proxy's two HTTP/1.1 clients share: a kept-alive connection and the TLS trust.

`proxy.upstream` (calls to vendors) and `proxy.control_client` (the registry, OPA, worker admin
ports) each pool their own connections; both decide reuse and verify servers the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path


def client_ssl_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """Verify servers against the system's trust store, or only `ca_file` when given."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.set_alpn_protocols(["http/1.1"])
    return context


class KeptAliveConnection:
    """A client connection that may serve another request while its framing is intact."""

    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def is_usable(self, now: float, ttl: float) -> bool:
        """Open, nothing unread (stray bytes would be taken for the next answer), not too old."""
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]
            and now - self.idle_since < ttl
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
