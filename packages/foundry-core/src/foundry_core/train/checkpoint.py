"""Atomic, sharded checkpoints: torch.distributed.checkpoint (model, optimizer, EMA) + trainer state.

Layout of ``<run>/checkpoints/step_XXXXXXXX/``: DCP shard files and ``.metadata``, one
``rank_XXXXX.pt`` per rank (counters, RNG states, data cursors, mixer state), ``meta.json``
(step, world size, plugins, the run config), ``model/`` (the model's export files without the weights:
``config.yaml`` and what ``export_artifacts`` wrote, e.g. normalization statistics and policy metadata,
so ``foundry export`` needs nothing but the checkpoint) and ``manifest.json`` (sha256 of every file) written last.
Everything is written into ``.tmp_step_XXXXXXXX`` first and renamed by rank 0 once complete, so a torn
checkpoint (a kill during save) is never picked up. Loading verifies the manifest first and never
unpickles freely (:mod:`foundry_core.train.checkpoint_integrity`).
The directory must be on a filesystem every rank can see. Tested by ``tests/test_train_checkpoint.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from foundry_core.distributed import DistInfo, barrier
from foundry_core.errors import FoundryError
from foundry_core.train.checkpoint_integrity import SafeFileSystemReader, SafeLoadPlanner, write_manifest

log = logging.getLogger("foundry")
STEP_RE = re.compile(r"^step_(\d{8})$")
META = "meta.json"
#: The model's export files (config.yaml + artifacts, no weights) inside a checkpoint, and their run-wide copy.
MODEL_FILES = "model"
RUN_MODEL_FILES = ".model_files"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (``meta.json`` present, no temp dirs)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_RE.match(p.name) and (p / META).is_file()]
    return sorted(found, key=lambda p: int(STEP_RE.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def _write_rank_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def save_checkpoint(
    root: Path,
    step: int,
    app_state: dict[str, Any],
    rank_state: dict[str, Any],
    meta: dict[str, Any],
    info: DistInfo,
    model_files: Path | None = None,
) -> Path:
    """Collective: every rank writes its shards and its ``rank_XXXXX.pt``; rank 0 adds ``model_files``
    (hard links when the filesystem allows) as ``model/``, the meta and the manifest, and renames into place."""
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{final.name}"
    if info.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    with warnings.catch_warnings():  # single-process saves warn that no process group exists
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(app_state, checkpoint_id=str(tmp), no_dist=not dist.is_initialized())
    _write_rank_state(tmp / f"rank_{info.rank:05d}.pt", rank_state)
    barrier()
    if info.is_main:
        if model_files is not None and model_files.is_dir():
            shutil.copytree(model_files, tmp / MODEL_FILES, copy_function=_link_or_copy)
        meta = {**meta, "step": step, "world_size": info.world_size, "saved_at": time.time()}
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
        write_manifest(tmp)
        if final.exists():  # re-saving the same step (e.g. a stop signal right after a periodic save)
            shutil.rmtree(final)
        tmp.rename(final)
    barrier()
    return final


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the run-wide copy is replaced, never rewritten in place, so links stay valid
    except OSError:
        shutil.copy2(src, dst)


def stage_model_files(model: Any, model_node: Any) -> Path:
    """The export files of ``model`` without weights (see :func:`foundry_core.export.write_model_files`)
    in a private temporary folder: nothing enters the run folder before the run has passed its resume
    checks (a refused resume leaves the run folder as it was); :func:`install_model_files` moves them in."""
    import tempfile

    from foundry_core.export import write_model_files as write_files

    staged = Path(tempfile.mkdtemp(prefix="foundry-model-files-"))
    try:
        write_files(model, model_node, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def install_model_files(run_dir: Path, staged: Path) -> Path:
    """``<run>/.model_files`` from the ``staged`` folder, replaced as a whole (temp dir + rename); every
    checkpoint hard-links its ``model/`` to this one copy."""
    final = run_dir / RUN_MODEL_FILES
    tmp = run_dir / f".tmp{RUN_MODEL_FILES}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(staged, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(staged, ignore_errors=True)
    return final


def prune(root: Path, keep_last: int, protect: set[Path] | None = None) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (and stale temp dirs)."""
    protect = protect or set()
    found = complete_checkpoints(root)
    for old in found[: max(0, len(found) - keep_last)]:
        if old not in protect:  # out of sight first: a kill during the delete leaves no half checkpoint
            trash = old.with_name(f".tmp_{old.name}")
            shutil.rmtree(trash, ignore_errors=True)
            old.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
    newest = found[-1].name if found else None
    for tmp in root.glob(".tmp_step_*"):
        if newest is None or tmp.name[len(".tmp_") :] <= newest:
            shutil.rmtree(tmp, ignore_errors=True)


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a complete checkpoint (an error naming the folder otherwise)."""
    meta_path = path / META
    if not meta_path.is_file():
        raise FoundryError(f"{path} is not a complete checkpoint (no {META}); pick another one")
    return json.loads(meta_path.read_text())


def load_checkpoint(
    path: Path, app_state: dict[str, Any], info: DistInfo
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load shards into ``app_state`` in place; return (this rank's trainer state, meta).

    Call :func:`~foundry_core.train.checkpoint_integrity.verify_checkpoint` first: this reads the files.

    On a different world size the DCP shards reshard automatically; the per-rank state comes from the
    same rank index when it exists, else from rank 0 (the trainer then reseeds per-rank RNGs).
    """
    meta = read_meta(path)
    rank_file = path / f"rank_{info.rank:05d}.pt"
    if not rank_file.is_file():
        rank_file = path / "rank_00000.pt"
    load_shards(path, app_state)
    try:
        rank_state = torch.load(rank_file, weights_only=True)
    except Exception as exc:
        raise FoundryError(
            f"{rank_file}: unreadable ({type(exc).__name__}: {_first_line(exc)}); resume from another checkpoint "
            "(--resume <run>/checkpoints/step_XXXXXXXX)"
        ) from exc
    return rank_state, meta


def load_shards(path: Path, app_state: dict[str, Any]) -> None:
    """Load the DCP shards of ``path`` into the tensors of ``app_state`` (the keys it names) in place."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(
                app_state,
                storage_reader=SafeFileSystemReader(str(path)),
                planner=SafeLoadPlanner(),
                no_dist=not dist.is_initialized(),
            )
    except FoundryError:
        raise
    except Exception as exc:  # DCP wraps reader errors (a refused global, a torn shard) in its own types
        raise FoundryError(
            f"{path}: cannot load this checkpoint ({type(exc).__name__}: {_first_line(exc)}); use another "
            "one (<run>/checkpoints/step_XXXXXXXX)"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
