"""Mirror checkpoints and the export to ``run.remote_dir`` (any fsspec URL) in the background.

A folder is uploaded only once it is complete locally; its remote copy gets a ``_COMPLETE`` marker
last (object stores have no atomic rename), and only marked copies are used for resume. Uploads run
in one worker thread so training never waits on the network; a failed upload is retried with
exponential backoff, logged at each failure, and reported by ``close()`` (never dropped silently).
Tested against a real S3 API (moto server) in ``tests/test_train_remote.py``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path

import fsspec

from foundry_core.errors import FoundryError

log = logging.getLogger("foundry")
MARKER = "_COMPLETE"


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise FoundryError(
            f"run.remote_dir {url!r}: cannot open ({exc}); install the fsspec backend (e.g. s3fs)"
        ) from None
    return fs, root.rstrip("/")


def upload_dir(fs: fsspec.AbstractFileSystem, local: Path, remote: str) -> None:
    """Upload every file of ``local`` under ``remote``, then write the completion marker."""
    if fs.exists(f"{remote}/{MARKER}"):
        fs.rm(f"{remote}/{MARKER}")
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    needs_dirs = "file" in protocols  # object stores have no folders; a local/NFS remote_dir does
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        if needs_dirs:
            fs.makedirs(os.path.dirname(f"{remote}/{rel}"), exist_ok=True)
        fs.put_file(str(path), f"{remote}/{rel}")
    with fs.open(f"{remote}/{MARKER}", "w") as f:
        f.write(json.dumps({"uploaded_at": time.time()}))


class RemoteSync:
    """Background uploader of finished folders of the run directory to ``remote_dir``."""

    def __init__(
        self, remote_dir: str, *, retries: int = 3, backoff_s: float = 1.0, keep_last: int | None = None
    ):
        self.url = remote_dir.rstrip("/")
        self.fs, self.root = _fs(self.url)
        self.retries = retries
        self.backoff_s = backoff_s
        self.keep_last = keep_last
        self.failures: list[str] = []
        self.uploaded: list[str] = []
        self._pending: set[Path] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Path, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="foundry-remote-sync", daemon=True)
        self._thread.start()

    def submit(self, local: Path, rel: str) -> None:
        """Queue ``local`` (a complete folder) for upload to ``<remote_dir>/<rel>``."""
        with self._lock:
            self._pending.add(local)
        self._queue.put((local, rel))

    def pending(self) -> set[Path]:
        with self._lock:
            return set(self._pending)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            local, rel = item
            try:
                self._upload_with_retries(local, rel)
            finally:
                with self._lock:
                    self._pending.discard(local)

    def _upload_with_retries(self, local: Path, rel: str) -> None:
        dest = f"{self.root}/{rel}"
        for attempt in range(self.retries + 1):
            try:
                upload_dir(self.fs, local, dest)
                self.uploaded.append(rel)
                log.info("remote sync: %s -> %s/%s", local, self.url, rel)
                if self.keep_last and rel.startswith("checkpoints/"):
                    self._prune_remote()
                return
            except Exception as exc:  # any backend error: retry, then report
                wait = self.backoff_s * 2**attempt
                if attempt < self.retries:
                    log.warning(
                        "remote sync of %s failed (%s: %s); retry %d/%d in %.0f s",
                        rel,
                        type(exc).__name__,
                        exc,
                        attempt + 1,
                        self.retries,
                        wait,
                    )
                    time.sleep(wait)
                else:
                    msg = f"{local} -> {self.url}/{rel}: {type(exc).__name__}: {exc}"
                    log.error("remote sync FAILED after %d attempts: %s", self.retries + 1, msg)
                    self.failures.append(msg)

    def _prune_remote(self) -> None:
        steps = list_remote_checkpoints(self.fs, self.root)
        for name in steps[: max(0, len(steps) - (self.keep_last or 0))]:
            self.fs.rm(f"{self.root}/checkpoints/{name}", recursive=True)

    def close(self) -> list[str]:
        """Wait for every queued upload; return the failures (each already logged)."""
        self._queue.put(None)
        self._thread.join()
        return list(self.failures)


def list_remote_checkpoints(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """Names of complete (marked) remote checkpoints, oldest first."""
    fs.invalidate_cache()
    base = f"{root}/checkpoints"
    if not fs.exists(base):
        return []
    names = sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(base, detail=False))
    return [n for n in names if n.startswith("step_") and fs.exists(f"{base}/{n}/{MARKER}")]


def download_checkpoint(url: str, local_root: Path, name: str | None = None) -> Path:
    """Download a remote checkpoint (the newest complete one when ``name`` is None) into ``local_root``.

    ``url`` is either the run's ``remote_dir`` or the URL of one checkpoint folder.
    """
    fs, root = _fs(url)
    fs.invalidate_cache()
    if name is None and fs.exists(f"{root}/{MARKER}"):
        src, name = root, os.path.basename(root)
    else:
        names = list_remote_checkpoints(fs, root)
        if name is None:
            if not names:
                raise FoundryError(f"no complete checkpoint under {url}/checkpoints")
            name = names[-1]
        elif name not in names:
            raise FoundryError(f"{url}/checkpoints/{name} is missing or incomplete (no {MARKER})")
        src = f"{root}/checkpoints/{name}"
    final = local_root / name
    tmp = local_root / f".tmp_{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in fs.find(src):
        rel = path[len(src) :].lstrip("/")
        if rel == MARKER:
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(tmp / rel))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    log.info("downloaded checkpoint %s/%s -> %s", url, name, final)
    return final
