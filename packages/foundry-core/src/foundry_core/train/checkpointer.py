"""The run's checkpoints: when to save, saving and pruning, the remote mirror, finding and loading one.

The trainer says *what* a checkpoint holds (its app state, per-rank state and meta); the
:class:`Checkpointer` decides *when* (every N steps or samples, at the end, on a stop signal), keeps the
newest ``train.checkpoint.keep_last``, mirrors each one to ``run.remote_dir``, and on ``--resume``
finds (downloads if need be), verifies and loads one. The on-disk format is :mod:`.checkpoint`; the
trust rule is :mod:`.checkpoint_integrity`. Tested by ``tests/test_train_checkpoint.py``,
``tests/test_train_remote.py`` and ``tests/faults/test_faults_checkpoint.py``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from foundry_core.distributed import DistInfo, broadcast_object
from foundry_core.errors import FoundryError
from foundry_core.run_config import RunConfig
from foundry_core.train import checkpoint as ckpt
from foundry_core.train.checkpoint_integrity import UntrustedCheckpointError, stored_shapes, verify_checkpoint
from foundry_core.train.remote import RemoteSync, download_checkpoint
from foundry_core.train.resume_check import check_resume

log = logging.getLogger("foundry")


class Checkpointer:
    """Saves, prunes, mirrors and loads ``<run>/checkpoints/step_XXXXXXXX`` (collective calls say so)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, info: DistInfo) -> None:
        self.cfg = cfg
        self.root = run_dir / "checkpoints"
        self.info = info
        self.every = cfg.train.checkpoint
        #: The checkpoint written or resumed from last (None before the first).
        self.last: Path | None = None
        #: The export files (config.yaml + artifacts) each checkpoint carries; rank 0 only. Staged outside
        #: the run folder until the first save, so a run refused at resume leaves its folder untouched.
        self.model_files: Path | None = None
        self._staged_model_files: Path | None = None
        self.remote: RemoteSync | None = None
        if cfg.run.remote_dir and info.is_main:
            self.remote = RemoteSync(
                cfg.run.remote_dir, retries=cfg.run.remote_retries, keep_last=self.every.keep_last
            )

    # ------------------------------------------------------------------ cadence

    def due(self, step: int, samples: int, step_samples: int) -> bool:
        """After the step that reached ``step``/``samples`` (it saw ``step_samples``): is a save due?"""
        if self.every.every_steps and step % self.every.every_steps == 0:
            return True
        if self.every.every_samples:
            return samples // self.every.every_samples > (samples - step_samples) // self.every.every_samples
        return False

    def has(self, step: int) -> bool:
        """Whether the last checkpoint written (or resumed from) is of ``step`` (the end needs no other)."""
        return self.last is not None and self.last.name == ckpt.step_dir_name(step)

    # ------------------------------------------------------------------ saving

    def keep_model_files(self, model: torch.nn.Module, model_node: dict[str, Any]) -> None:
        """Collective: rank 0 writes the model's export files (no weights) that every checkpoint will
        carry as ``model/``. Call it before the model is sharded; an error is raised on every rank."""
        error = None
        if self.info.is_main:
            try:
                self._staged_model_files = ckpt.stage_model_files(model, model_node)
            except Exception as exc:  # a model's export_artifacts may raise anything: every rank must stop
                error = f"writing the model's export files: {type(exc).__name__}: {exc}"
        error = broadcast_object(error)
        if error is not None:
            raise FoundryError(error)

    def save(
        self, step: int, app_state: dict[str, Any], rank_state: dict[str, Any], meta: dict[str, Any]
    ) -> Path:
        """Collective: write ``step_XXXXXXXX`` atomically, prune old ones, queue the remote upload."""
        if self._staged_model_files is not None:  # rank 0: the first save of this invocation
            self.model_files = ckpt.install_model_files(self.root.parent, self._staged_model_files)
            self._staged_model_files = None
        path = ckpt.save_checkpoint(self.root, step, app_state, rank_state, meta, self.info, self.model_files)
        self.last = path
        if self.info.is_main:
            protect = self.remote.pending() | {path} if self.remote else {path}
            ckpt.prune(self.root, self.every.keep_last, protect)
            if self.remote is not None:
                self.remote.submit(path, f"checkpoints/{path.name}")
            log.info("saved checkpoint %s", path)
        return path

    def mirror(self, folder: Path, rel: str) -> None:
        """Queue a finished folder of the run (the export) for upload to ``run.remote_dir``."""
        if self.remote is not None:
            self.remote.submit(folder, rel)

    def close(self) -> list[str]:
        """Wait for every queued upload; return the failures (each already logged)."""
        if self._staged_model_files is not None:  # no checkpoint was written
            shutil.rmtree(self._staged_model_files, ignore_errors=True)
            self._staged_model_files = None
        return self.remote.close() if self.remote is not None else []

    # ------------------------------------------------------------------ resuming

    def find(self, resume: str) -> Path | None:
        """The checkpoint ``--resume`` names: 'latest' (local, else remote; None when there is none yet),
        a URL (downloaded) or a folder."""
        if resume == "latest":
            path = ckpt.latest_checkpoint(self.root)
            if path is None and self.cfg.run.remote_dir:
                path = self._download(self.cfg.run.remote_dir)
            if path is None:
                log.info("--resume latest: no checkpoint in %s; starting fresh", self.root)
            return path
        if "://" in resume and not resume.startswith("file://"):
            path = self._download(resume)
            if path is None:
                raise FoundryError(
                    f"--resume {resume}: no complete checkpoint could be downloaded (see the log)"
                )
            return path
        path = Path(resume.removeprefix("file://"))
        if not path.is_dir():
            raise FoundryError(f"--resume {resume}: no such checkpoint directory")
        return path

    def load(
        self, path: Path, app_state: dict[str, Any], *, trust_checkpoint: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Collective: verify ``path``, check it fits ``app_state``, load it in place.

        Returns this rank's trainer state and whether the checkpoint holds EMA weights (when it does
        not, ``app_state["ema"]`` is dropped and left as it was).
        """
        self._verify(path, trust_checkpoint)
        has_ema = bool(ckpt.read_meta(path).get("ema"))
        if not has_ema:
            app_state.pop("ema", None)
        self._check_fits(path, app_state)
        rank_state, _ = ckpt.load_checkpoint(path, app_state, self.info)
        self.last = path
        return rank_state, has_ema

    def _verify(self, path: Path, trust_checkpoint: bool) -> None:
        """Rank 0 checks the manifest (hashing once); every rank raises the same error if it fails."""
        error, verified = None, False
        if self.info.is_main:
            try:
                verified = verify_checkpoint(path, trust_unverified=trust_checkpoint)
            except FoundryError as exc:
                error = str(exc)
        error, verified = broadcast_object((error, verified))
        if error is not None:
            raise UntrustedCheckpointError(error)
        if not verified and self.info.is_main:
            log.warning("%s has no checksum manifest; loading it because --trust-checkpoint was given", path)

    def _check_fits(self, path: Path, app_state: dict[str, Any]) -> None:
        """Refuse a model/optimizer that does not fit the checkpoint; warn about changed settings."""
        from torch.distributed.checkpoint._nested_dict import flatten_state_dict  # the keys DCP uses

        from foundry_core.config import to_dict

        flat, _ = flatten_state_dict(app_state)
        wanted = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in flat.items()}
        old_cfg = ckpt.read_meta(path).get("config")
        warnings = check_resume(str(path), old_cfg, to_dict(self.cfg), stored_shapes(path), wanted)
        if self.info.is_main:
            if old_cfg is None:
                log.warning(
                    "--resume %s: the checkpoint records no run config; settings cannot be compared", path
                )
            for warning in warnings:
                log.warning("%s", warning)

    def _download(self, url: str) -> Path | None:
        path = None
        if self.info.is_main:
            try:
                path = download_checkpoint(url, self.root)
            except FoundryError as exc:
                log.warning("%s", exc)
        return broadcast_object(path)
