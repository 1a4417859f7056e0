"""The decoding child of `sharewall.document_split`: YAML or JSON text in, pickled frames out.

`python -m sharewall.document_decode yaml|json` reads the text on stdin and writes the decoded
document to stdout as length-prefixed pickled frames, the list values of a top-level mapping
in batches of `BATCH`. Kept apart from `document_split` so that the child imports nothing but
this module and PyYAML or orjson (not asyncio): its start is most of what a small document
costs (~40 ms of CPU against ~90 ms with asyncio).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys

# The child imports `typing` for nothing but annotations otherwise (~4 ms of its start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

# Unpickling 100 decoded recipients is ~1.5-3 ms on the loop; 20 keep a batch under a slice.
BATCH = 20
# Each frame: its length (4 bytes, big-endian), then the pickle.
LENGTH = struct.Struct(">I")


class DocumentError(ValueError):
    """The text does not decode (the message says where, never what)."""


def decode(kind: str, data: bytes | str) -> Any:
    """`data` decoded as `kind` (yaml|json); `DocumentError` when it does not decode.

    The one decoder of registry documents, in the child and in process alike."""
    if kind == "json":
        import orjson

        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise DocumentError("invalid JSON") from None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = data if isinstance(data, str) else data.decode("utf-8")
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DocumentError(f"invalid YAML{f' at line {mark.line + 1}' if mark else ''}") from None


def _frames(doc: Any) -> Iterator[tuple[Any, ...]]:
    """("value", key, v) / ("list", key, batch) frames of a mapping; ("whole", doc) otherwise."""
    if not isinstance(doc, dict):
        yield ("whole", doc)
        return
    yield ("map",)
    for key, value in doc.items():
        if isinstance(value, list):
            yield ("list", key, [])
            for start in range(0, len(value), BATCH):
                yield ("more", key, value[start : start + BATCH])
        else:
            yield ("value", key, value)


def main(argv: list[str]) -> int:
    """The child: decode stdin as `argv[0]` (yaml|json), write the frames to stdout."""
    kind = argv[0] if argv else "yaml"
    # Background work: the proxy's calls come first for the CPU (a pod's cores, its quota).
    with contextlib.suppress(OSError):
        os.nice(10)
    out = sys.stdout.buffer
    try:
        for frame in _frames(decode(kind, sys.stdin.buffer.read())):
            data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
            out.write(LENGTH.pack(len(data)) + data)
    except DocumentError as exc:
        data = pickle.dumps(("error", str(exc)))
        out.write(LENGTH.pack(len(data)) + data)
    except Exception as exc:  # anything PyYAML decodes that pickle cannot carry
        data = pickle.dumps(("error", f"cannot decode: {type(exc).__name__}"))
        out.write(LENGTH.pack(len(data)) + data)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
