"""OPA bundle export: the snapshot, the taxonomy and the policies as one deterministic gzip tarball."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from sharewall.snapshot import Snapshot
from sharewall.taxonomy import policy_dir

BUNDLE_ROOT = "sharewall"
# Where the snapshot lands in the bundle: its directory is its data path (data.sharewall.registry).
REGISTRY_DATA_PATH = "sharewall/registry/data.json"


def _is_test_file(rel: Path) -> bool:
    """Rego unit tests (`*_test.rego`, anything under a `test`/`tests` folder) stay out of bundles."""
    return rel.name.endswith("_test.rego") or any(p in {"test", "tests"} for p in rel.parts[:-1])


def policy_files(root: Path | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield `(relative path, bytes)` of every non-test `.rego` and `data.json` under `policies.rego/`.

    The registry's own `sharewall/registry/data.json` is generated, never read from disk.
    """
    root = root or policy_dir()
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        if _is_test_file(rel) or rel.as_posix() == REGISTRY_DATA_PATH:
            continue
        if path.suffix == ".rego" or path.name == "data.json":
            yield rel.as_posix(), path.read_bytes()


def _add(tar: tarfile.TarFile, name: str, body: bytes) -> None:
    # Fixed metadata: the same content gives the same bytes, hence the same ETag.
    info = tarfile.TarInfo(name="/" + name)
    info.size = len(body)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(body))


def build_bundle(snapshot: Snapshot, *, revision: str, root: Path | None = None) -> bytes:
    """Return an OPA bundle (gzip tarball) for `snapshot`: manifest, registry data, taxonomy, policies."""
    return build_bundle_from_data(snapshot.policy_data(), revision=revision, root=root)


def build_bundle_from_data(
    policy_data: dict[str, Any], *, revision: str, root: Path | None = None
) -> bytes:
    """`build_bundle` from the registry data as Rego sees it (`Snapshot.policy_data()`)."""
    manifest = {"revision": revision, "roots": [BUNDLE_ROOT], "rego_version": 1}
    files: dict[str, bytes] = dict(policy_files(root))
    files[REGISTRY_DATA_PATH] = orjson.dumps(policy_data, option=orjson.OPT_SORT_KEYS)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, ".manifest", orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS))
        for name in sorted(files):
            _add(tar, name, files[name])
    # mtime=0 and no file name in the gzip header keep the output byte-for-byte stable.
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def bundle_etag(body: bytes) -> str:
    """A strong ETag (quoted) for bundle bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def read_bundle(body: bytes) -> dict[str, bytes]:
    """Unpack a bundle into `{path without leading '/': bytes}` (for tests and tools, never extracted to disk)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                out[member.name.lstrip("/")] = handle.read()
    return out
