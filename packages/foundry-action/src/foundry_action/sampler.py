"""Windowed sampler over an episode store: (past, anchor, future) windows with masks and edge padding.

Every step of every selected episode is an anchor ``t``. The low-dim window covers ``t - past ..
t + future`` (``T = past + 1 + future`` steps): positions outside the episode repeat the edge step
(so values stay finite) and are false in both masks; ``past_mask`` is true for valid positions before
the anchor, ``future_mask`` for the anchor and valid positions after it (the reference convention).
Proprioception is the first ``past + 1`` positions (repeat-edge padded). Images are taken at
``t + offset`` for each offset, clipped to the episode, and ``image_mask`` is false where clipping
happened (or where the store's optional bool field ``image_valid`` marks a step without a real frame).
Image order is time-major: all cameras at the first offset, then the next offset. With ``anchors:
image_valid`` only steps whose own frame is real are anchors (windowed sources such as the reference
shards have real frames at a few steps only).

Low-dim fields are read into memory once; frames are read per batch from Zarr (opened lazily in
each process, so DataLoader workers never share a Zarr handle).
Test: ``uv run pytest packages/foundry-action/tests/test_action_sampler.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.store import EpisodeStore, open_store
from foundry_core.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowBatch:
    """Raw (unnormalized) numpy arrays of a batch of windows."""

    actions: np.ndarray  # float32 [B, T, A]
    proprio: np.ndarray  # float32 [B, past+1, Dp]
    past_mask: np.ndarray  # bool [B, T]
    future_mask: np.ndarray  # bool [B, T]
    frames: np.ndarray  # int64 [B, N_t] global frame indices (clipped)
    image_mask: np.ndarray  # bool [B, N_t]
    episodes: np.ndarray  # int64 [B]
    anchors: np.ndarray  # int64 [B] step within the episode


class WindowSampler:
    """Index of (episode, anchor) windows of ``store`` and batched window extraction."""

    def __init__(
        self,
        store: EpisodeStore,
        *,
        past: int = 1,
        future: int = 14,
        cameras: Sequence[str] | None = None,
        image_offsets: Sequence[int] = (0,),
        action_fields: Sequence[str] = ("action",),
        proprio_fields: Sequence[str] = ("proprio",),
        episodes: Sequence[int] | None = None,
        pad_short: bool = False,
        anchors: str = "all",
    ) -> None:
        if past < 0 or future < 0:
            raise DataError(f"past and future must be >= 0, got past={past} future={future}")
        if not image_offsets:
            raise DataError("image_offsets must list at least one offset (0 = the anchor)")
        self.path = Path(store.path)
        self.past, self.future = past, future
        self.window = past + 1 + future
        self.image_offsets = np.asarray(list(image_offsets), dtype=np.int64)
        self.cameras = list(store.cameras) if cameras is None else list(cameras)
        for cam in self.cameras:
            if cam not in store.cameras:
                raise DataError(f"{self.path}: camera {cam!r} is missing (store cameras: {', '.join(store.cameras) or 'none'})")
        self.action_fields, self.proprio_fields = list(action_fields), list(proprio_fields)
        for name in self.action_fields + self.proprio_fields:
            if name not in store.fields:
                raise DataError(f"{self.path}: field {name!r} is missing (store fields: {', '.join(store.fields)})")
        self.episodes = np.arange(len(store)) if episodes is None else np.asarray(list(episodes), dtype=np.int64)
        if len(self.episodes) == 0:
            raise DataError(f"{self.path}: no episodes selected (store has {len(store)})")
        bad = [int(e) for e in self.episodes if not 0 <= e < len(store)]
        if bad:
            raise DataError(f"{self.path}: episodes {bad} do not exist (store has {len(store)})")
        self.starts = np.concatenate([[0], store.episode_ends[:-1]]).astype(np.int64)
        self.lengths = store.lengths()
        if not pad_short:
            for e in self.episodes:
                if self.lengths[e] < self.window:
                    raise DataError(
                        f"{self.path}: episode {int(e)} has {self.lengths[e]} steps, shorter than the window "
                        f"({self.window} = past {past} + 1 + future {future}); set pad_short: true to pad it"
                    )
        self.actions = self._load(store, self.action_fields)
        self.proprio = self._load(store, self.proprio_fields)
        # windowed sources (e.g. converted WebDataset samples) mark steps without a real frame as not valid
        self.image_valid = store.read("image_valid", 0, store.num_steps).astype(bool) if "image_valid" in store.fields else None
        lens = self.lengths[self.episodes]
        self.index_episode = np.repeat(self.episodes, lens)
        self.index_anchor = np.concatenate([np.arange(n) for n in lens]).astype(np.int64)
        if anchors not in ("all", "image_valid"):
            raise DataError(f"anchors must be 'all' or 'image_valid', got {anchors!r}")
        if self.image_valid is not None:
            real = self.image_valid[self.starts[self.index_episode] + self.index_anchor]
            if anchors == "image_valid":  # only steps with a real frame at the anchor (windowed sources)
                if not real.any():
                    raise DataError(f"{self.path}: anchors: image_valid, but no selected step has a real frame")
                self.index_episode, self.index_anchor = self.index_episode[real], self.index_anchor[real]
            elif not real.all():
                log.warning("%s: %d of %d anchors have no real frame at the anchor (image_valid false; masked in "
                            "image_mask); set anchors: image_valid to train only on steps with a real frame",
                            self.path, int((~real).sum()), len(real))
        self.image_shapes = {c: store.cameras[c] for c in self.cameras}
        self._frames: dict[str, Any] = {}
        self._pid = -1

    def _load(self, store: EpisodeStore, names: list[str]) -> np.ndarray:
        """Concatenate fields along channels as float32 [N_steps, D]; NaN/inf names episode and field."""
        parts = []
        for name in names:
            x = store.read(name, 0, store.num_steps).reshape(store.num_steps, -1)
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                step = int(np.argwhere(~np.isfinite(x))[0][0])
                episode = int(np.searchsorted(store.episode_ends, step, side="right"))
                raise DataError(f"{self.path}: episode {episode}: field {name!r} has NaN/inf at step {step - self.starts[episode]}")
            parts.append(x.astype(np.float32))
        return np.concatenate(parts, axis=1)

    def __len__(self) -> int:
        return len(self.index_episode)

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def proprio_dim(self) -> int:
        return self.proprio.shape[1]

    def windows(self, indices: Sequence[int] | np.ndarray) -> WindowBatch:
        """Windows number ``indices`` (positions in this sampler's index)."""
        idx = np.asarray(indices, dtype=np.int64)
        ep, t = self.index_episode[idx], self.index_anchor[idx]
        start, length = self.starts[ep][:, None], self.lengths[ep][:, None]
        k = np.arange(-self.past, self.future + 1)[None, :]
        pos = t[:, None] + k
        valid = (pos >= 0) & (pos < length)
        rows = np.clip(pos, 0, length - 1) + start
        img_pos = t[:, None] + self.image_offsets[None, :]
        img_valid = (img_pos >= 0) & (img_pos < length)
        frames = np.clip(img_pos, 0, length - 1) + start
        if self.image_valid is not None:
            img_valid &= self.image_valid[frames]
        return WindowBatch(
            actions=self.actions[rows],
            proprio=self.proprio[rows[:, : self.past + 1]],
            past_mask=valid & (k < 0),
            future_mask=valid & (k >= 0),
            frames=frames,
            image_mask=img_valid,
            episodes=ep,
            anchors=t,
        )

    def _readers(self) -> dict[str, Any]:
        if os.getpid() != self._pid:  # (re)open in this process: never share Zarr handles across fork
            store = open_store(self.path)
            self._frames = {c: store.frame_reader(c) for c in self.cameras}
            self._pid = os.getpid()
        return self._frames

    def camera_frames(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Camera -> uint8 [B, N_t, H, W, 3] for global frame indices ``frames`` [B, N_t]."""
        readers = self._readers()
        return {cam: readers[cam].read(frames).reshape(*frames.shape, *readers[cam].frame_shape) for cam in self.cameras}

    def images(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B, N_t * N_cam, H, W, 3], time-major (all cameras at offset 0, then the next offset).

        Frames are decoded straight into the output buffer (cameras must share one size). Hand it on
        as the channels-last view ``torch.from_numpy(x).permute(0, 1, 4, 2, 3)``: ``augment`` and
        ``resize`` read that in place (faster kernels, no separate HWC -> CHW copy).
        """
        readers = self._readers()
        shapes = {readers[c].frame_shape for c in self.cameras}
        if len(shapes) > 1:
            raise DataError(f"{self.path}: cameras {self.cameras} have different frame sizes {sorted(shapes)}; resize them")
        b, n_t = frames.shape
        out = np.empty((b, n_t, len(self.cameras), *shapes.pop()), dtype=np.uint8)
        for bi in range(b):
            for ti in range(n_t):
                idx = int(frames[bi, ti])
                for k, cam in enumerate(self.cameras):
                    readers[cam].read_into(idx, out[bi, ti, k])
        return out.reshape(b, n_t * len(self.cameras), *out.shape[3:])

    def image_names(self) -> list[str]:
        """``camera@offset`` for every image slot, in batch order."""
        return [f"{c}@{int(o)}" for o in self.image_offsets for c in self.cameras]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frames"], state["_pid"] = {}, -1
        return state
