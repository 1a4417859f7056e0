"""Spool directories of workers that no longer run: shipped under their own proxy id, then removed.

With `--workers N`, worker K > 0 spools in `DIR/worker-K` (`proxy.supervisor`). When the proxy
is started again with fewer workers (or as one process), nobody would ship what workers K >= N
left behind; the process owning `DIR` (worker 0, or the single process) does: it takes each
such directory's lock (a live worker's directory is skipped), ships its segments and ledger rows
as that worker (`<proxy id>-wK`: the registry keys ledger rows by proxy id, so they never replace
the current workers' rows), and removes the directory once nothing is left but segments
written for another registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from proxy.settings import Settings
from proxy.spool import SEALED_SUFFIX, Spool, SpoolLocked

if TYPE_CHECKING:
    from proxy.registry_token import RegistryToken

log = structlog.get_logger("sharewall.proxy.spool_leftovers")

_WORKER_DIR = re.compile(r"worker-([1-9][0-9]*)")


def worker_spool_dir(spool_dir: Path, index: int) -> Path:
    """Worker 0 keeps the spool directory (a single process's); worker K uses `DIR/worker-K`."""
    return spool_dir if index == 0 else spool_dir / f"worker-{index}"


def worker_proxy_id(base: str, index: int) -> str:
    """The proxy id worker `index` ships as: worker 0 is the proxy itself, K is `<base>-wK`."""
    return base if index == 0 else f"{base}-w{index}"


def leftover_dirs(spool_dir: Path, workers: int) -> list[tuple[int, Path]]:
    """`DIR/worker-K` directories with K >= `workers`, by K."""
    found = []
    with contextlib.suppress(OSError):
        for path in spool_dir.iterdir():
            match = _WORKER_DIR.fullmatch(path.name)
            if match and int(match.group(1)) >= workers and path.is_dir():
                found.append((int(match.group(1)), path))
    return sorted(found)


async def ship_leftovers(
    settings: Settings, token: RegistryToken | None = None, *, retry_cap: float = 60.0
) -> None:
    """Ship and remove every leftover worker directory (a background task; cancel to stop)."""
    for index, directory in leftover_dirs(settings.spool_dir, settings.workers):
        try:
            await _ship_one(settings, token, index, directory, retry_cap)
        except Exception:  # one damaged directory must stop neither the proxy nor the others
            log.exception("spool.leftover_failed", directory=str(directory))


async def _ship_one(
    settings: Settings,
    token: RegistryToken | None,
    index: int,
    directory: Path,
    retry_cap: float,
) -> None:
    from proxy.registry_follower import backoff_delay
    from proxy.shipper import LEDGER_PENDING_FILE, Shipper, default_proxy_id

    assert settings.registry_url is not None
    spool = Spool(directory, registry=settings.registry_url)
    try:
        await spool.start()  # seals what a killed worker left open
    except (SpoolLocked, OSError) as exc:
        log.warning("spool.leftover_skipped", directory=str(directory), reason=str(exc))
        return
    proxy_id = worker_proxy_id(default_proxy_id(), index)
    log.info("spool.leftover_found", directory=str(directory), proxy_id=proxy_id)
    attempt = 0
    try:
        while True:
            shipper = Shipper(
                settings.registry_url, token or settings.token, spool, proxy_id=proxy_id
            )
            await shipper.start()
            await shipper.close(drain_timeout=30.0)
            segments, ledger = await asyncio.to_thread(
                _remains, directory, shipper.foreign_segments, LEDGER_PENDING_FILE
            )
            if not segments and (not ledger or attempt >= 3):
                break  # ledger rows the registry keeps refusing stay on disk, not retried forever
            await asyncio.sleep(backoff_delay(attempt, base=1.0, cap=retry_cap))
            attempt += 1
    finally:
        await spool.close()
    segments, ledger = await asyncio.to_thread(_remains, directory, set(), LEDGER_PENDING_FILE)
    if segments or ledger:  # segments of another registry, or refused ledger rows: kept
        log.warning("spool.leftover_kept", directory=str(directory), proxy_id=proxy_id)
        return
    import shutil  # here: with bz2 and lzma, 0.35 MB a sidecar with no leftovers never needs

    await asyncio.to_thread(shutil.rmtree, directory, True)
    log.info("spool.leftover_removed", directory=str(directory), proxy_id=proxy_id)


def _remains(directory: Path, foreign: set[str], ledger_file: str) -> tuple[int, bool]:
    """(sealed segments not in `foreign`, whether unsent ledger rows are saved) in `directory`."""
    segments = [p for p in directory.glob(f"*{SEALED_SUFFIX}") if p.name not in foreign]
    return len(segments), (directory / ledger_file).exists()
