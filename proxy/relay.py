"""Relay an upstream response to the client: head and body, framed for the client's HTTP version.

The upstream client (`proxy.upstream`) returns an `UpstreamResponse`; only this module, on the
listener's side, writes it to the client socket. A response that comes whole with its head (the
usual small API answer) goes out in one write.
"""

from __future__ import annotations

import asyncio

import structlog

from proxy import responses
from proxy.upstream import UpstreamError, UpstreamResponse

log = structlog.get_logger("sharewall.proxy.relay")

_NO_BODY_STATUSES = frozenset({204, 304})
_STATUS_LINE_START = {"1.1": b"HTTP/1.1 ", "1.0": b"HTTP/1.0 "}
# Status lines as relayed, by (client version, status, reason as received): a vendor answers
# with the same few. Bounded: past it, lines are formatted anew.
_STATUS_LINES: dict[tuple[str, int, bytes], bytes] = {}
_STATUS_LINES_MAX = 256


def status_line(client_version: str, status: int, reason: bytes) -> bytes:
    """The status line the client gets (`HTTP/1.x 200 OK\\r\\n`), the upstream's reason kept."""
    key = (client_version, status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        start = _STATUS_LINE_START.get(client_version) or f"HTTP/{client_version} ".encode()
        # The space stays when there is no reason phrase (RFC 9112 §4).
        line = b"%s%d %s\r\n" % (start, status, reason)
        if len(_STATUS_LINES) < _STATUS_LINES_MAX:
            _STATUS_LINES[key] = line
    return line


async def relay_response(
    response: UpstreamResponse,
    writer: asyncio.StreamWriter,
    *,
    method: str,
    client_version: str,
    keep_alive: bool,
) -> bool:
    """Write `response` to the client and close it (pooling its connection when intact); True
    when the client's connection can serve another request (the status it got is `response`'s).

    Raises `UpstreamError` when the upstream broke off before the client saw a byte (the
    client can still get a proper 502/504); once the head was sent, a cut body ends the
    client connection instead (`keep_alive=False`).
    """
    status = response.status
    length = response.length
    no_body = method == "HEAD" or status in _NO_BODY_STATUSES or status < 200
    # The fields joined by C loops (`map` of `bytes.join`): no bytecode per field.
    fields = b"\r\n".join(map(b": ".join, response.headers))
    reason = response.reason
    parts = [
        _STATUS_LINES.get((client_version, status, reason))
        or status_line(client_version, status, reason),
        fields,
        b"\r\n" if fields else b"",
    ]
    if length is not None and status != 204:  # never on a 204 (RFC 9110 §8.6)
        framing = "length"
        parts.append(b"Content-Length: %d\r\n" % length)
    elif no_body:
        framing = "length"
    elif client_version == "1.1":
        framing = "chunked"
        parts.append(b"Transfer-Encoding: chunked\r\n")
    else:
        framing = "close"  # HTTP/1.0 client: the end of the body is the end of the connection
        keep_alive = False
    parts.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    complete = False
    try:
        if no_body or (length is not None and response.complete):
            # No body, or all of it came with the head (the usual small API answer): head
            # and body joined once, in one write, without the body generator's per-chunk
            # machinery.
            if not no_body:
                parts.append(response.whole_body())
            writer.write(b"".join(parts))
            complete = True
            if writer.transport.get_write_buffer_size():
                await writer.drain()  # only a slow client: the answer did not all go out
            return keep_alive
        keep_alive, complete = await _relay_streamed(
            response, writer, b"".join(parts), status, framing, keep_alive
        )
        return keep_alive
    finally:
        response.close(complete=complete)


async def _relay_streamed(
    response: UpstreamResponse,
    writer: asyncio.StreamWriter,
    pending: bytes,
    status: int,
    framing: str,
    keep_alive: bool,
) -> tuple[bool, bool]:
    """Relay a body still arriving; (client keep-alive, upstream body complete)."""
    client_side = False  # what failed: writing to the app, or reading the upstream
    try:
        if not response.buffered:
            # Nothing of the body has arrived yet: the app gets the head now, not with the body.
            writer.write(pending)
            pending = b""
        chunked = framing == "chunked"
        async for chunk in response.body():
            framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
            if pending:
                # Head and first body bytes in one segment: one send, not two.
                framed, pending = pending + framed, b""
            writer.write(framed)
            client_side = True
            await writer.drain()
            client_side = False
        tail = b"0\r\n\r\n" if chunked else b""
        if pending or tail:
            writer.write(pending + tail)
        client_side = True
        await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        if client_side:
            # The app went away mid-answer: nothing to tell it; the upstream connection,
            # its body unread, is closed.
            log.info("client.response_cut", status=status, error=type(exc).__name__)
            return False, False
        log.info("upstream.response_cut", status=status, error=type(exc).__name__)
        if pending:  # the app has seen nothing yet: it still gets a proper answer
            if isinstance(exc, TimeoutError):
                raise UpstreamError(
                    504, responses.UPSTREAM_TIMEOUT, "the upstream stalled in its body"
                ) from None
            raise UpstreamError(
                502, responses.UPSTREAM_UNREACHABLE, "the upstream broke off its body"
            ) from None
        return False, False
    # A close-delimited upstream body leaves nothing to reuse.
    return keep_alive, response.is_delimited
