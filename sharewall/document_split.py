"""Decode a YAML document, or a big JSON one, in a child process and hand it back in pieces.

Decoding 10,000 recipients (PyYAML's C loader ~2.5 s, orjson ~50 ms for the 4 MB snapshot) is
one long call that holds the GIL, so a worker thread would stall the proxy's event loop as much
as the loop itself doing it. The child (`python -m sharewall.document_decode yaml|json`, which
imports nothing but PyYAML or orjson) reads the text on stdin and writes the decoded document
back as pickled frames, list values of the top-level mapping in batches; `split_document`
reassembles exactly what `yaml.load`/`orjson.loads` returned, unpickling a batch at a time so
the loop runs between batches. Validation stays with the caller (the same models as always).

YAML goes to the child whatever its size, so the proxy never holds PyYAML (~1.2 MB of an idle
sidecar with the sample registry, bench/README.md); a small JSON document is decoded in
process by orjson, which the proxy has loaded anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from sharewall.document_decode import LENGTH, DocumentError, decode

# Below these sizes the text is decoded in process (a few ms at most): a child costs ~40 ms of
# CPU to start. Not YAML: in process it would bring PyYAML into the proxy for good.
INLINE_BYTES = {"json": 256 * 1024}
# The folder holding this `sharewall` package: first on the child's path, so it runs this code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _spawn(kind: str) -> subprocess.Popen[bytes]:
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": _PACKAGE_ROOT + (os.pathsep + path if path else "")}
    return subprocess.Popen(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-m", "sharewall.document_decode", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write the text to the child and close its stdin (blocking writes let go of the GIL)."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # the child died: its exit code says so
        proc.stdin.write(data)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()


def _end(proc: subprocess.Popen[bytes], kill: bool) -> None:
    """Reap the child (killed first when its answer is not wanted any more)."""
    if kill:
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _reader(proc: subprocess.Popen[bytes]) -> asyncio.StreamReader:
    """The child's stdout as a stream the loop fills when the pipe is readable."""
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            chunk = os.read(fd, 256 * 1024)
        except BlockingIOError:
            return
        except OSError as exc:
            loop.remove_reader(fd)
            reader.set_exception(exc)
            return
        if chunk:
            reader.feed_data(chunk)
        else:
            loop.remove_reader(fd)
            reader.feed_eof()

    loop.add_reader(fd, readable)
    return reader


async def split_document(kind: str, data: bytes) -> Any:
    """Decode `data` (`yaml` or `json`) in a child process; `DocumentError` when it does not.

    Raises `OSError` when no child can be started (the caller decodes in process instead).
    """
    if len(data) <= INLINE_BYTES.get(kind, 0):
        return decode(kind, data)
    # Started from a worker thread: subprocess spawns with vfork/posix_spawn, while the event
    # loop's own spawn (uvloop, libuv) forks, copying the page tables of the whole proxy (~3-8
    # ms of the loop's CPU, 20-30 ms stalls measured at ~150 MB); the pipes are read on the loop.
    spawning = asyncio.ensure_future(asyncio.to_thread(_spawn, kind))
    try:
        proc = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Started all the same: not wanted any more.
        spawning.add_done_callback(
            lambda done: None if done.exception() else _end(done.result(), kill=True)
        )
        raise
    assert proc.stdout is not None
    reader = _reader(proc)
    feeder = asyncio.ensure_future(asyncio.to_thread(_feed, proc, data))
    doc: Any = None
    finished = False
    try:
        while True:
            try:
                head = await reader.readexactly(LENGTH.size)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise DocumentError("the decoder stopped mid-frame") from None
                break
            frame = pickle.loads(await reader.readexactly(LENGTH.unpack(head)[0]))  # noqa: S301 - our own child's output
            tag = frame[0]
            if tag == "error":
                raise DocumentError(frame[1])
            if tag == "whole":
                doc = frame[1]
            elif tag == "map":
                doc = {}
            elif tag == "value":
                doc[frame[1]] = frame[2]
            elif tag == "list":
                doc[frame[1]] = []
            else:
                doc[frame[1]].extend(frame[2])
            await asyncio.sleep(0)  # a batch at a time: the loop runs between them
        finished = True
    finally:
        asyncio.get_running_loop().remove_reader(proc.stdout.fileno())
        # The feeder ends once the child has read its stdin, or died (a broken pipe).
        ending = asyncio.to_thread(_end, proc, not finished)
        await asyncio.shield(asyncio.gather(feeder, ending, return_exceptions=True))
        proc.stdout.close()
    if proc.returncode != 0:
        raise DocumentError(f"the decoder exited with {proc.returncode}")
    return doc
