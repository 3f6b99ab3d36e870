"""``wds_robot_shards``: train on the reference system's robotics WebDataset shards directly, unconverted.

For users who keep the reference's data as it is (REFERENCE.md b.1-b.3): the shards of ``path``
(``manifest.jsonl`` or ``*.tar``) are indexed once (tar headers; members are then read by offset), every
sample is one training window, and batches follow the same ``robot`` contract, normalization,
augmentation, deterministic order and exact resume as ``zarr_episodes`` (this class reuses its batch
code through a sampler with the same interface). What differs, and why:

* The window is the sample's own: ``past``/``future`` may crop it around ``anchor_relative_idx``
  (asking for more than was preprocessed is an error); ``past_mask``/``future_mask`` come from the
  sample.
* Images exist only at the preprocessed offsets; ``image_offsets`` must be among them. A slot is
  valid only where every camera has a JPEG and ``image_timesteps`` shows no clipping at the episode
  edge (a clipped frame is a copy of another step); invalid slots are black and masked.
* Statistics are computed in memory at start over the valid steps of every sample (windows overlap,
  so a step can count more than once: the reference's stats.json does the same). ``relative_actions``
  re-expresses each window's actions in its anchor pose's frame, as ``zarr_episodes`` does.
* ``split``/``val_fraction`` hold out whole episodes (``metadata.json`` ``episode_id``), not windows.
* The manifest's ``num_sequences`` is checked against the samples found; a mismatch is logged.

Low-dim arrays of every sample are held in memory (a few kB per sample); frames are decoded per batch.
Test: ``uv run pytest packages/foundry-action/tests/test_action_wds_source.py``.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from foundry_action.augment import AugmentConfig
from foundry_action.convert.wds import _decode_jpeg, _shards, index_shard, read_members
from foundry_action.data_source import Normalization, ZarrEpisodes, split_episodes
from foundry_action.normalization import Moments, NormStats
from foundry_action.sampler import WindowBatch
from foundry_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _manifest_counts(src: Path) -> dict[str, int]:
    manifest = src / "manifest.jsonl"
    if not src.is_dir() or not manifest.exists():
        return {}
    out = {}
    for n, line in enumerate(manifest.read_text().splitlines(), start=1):
        if line.strip():
            try:
                doc = json.loads(line)
                out[str(doc["shard"]).removesuffix(".tar").rsplit("/", 1)[-1]] = int(
                    doc.get("num_sequences", -1)
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(
                    f'{manifest}:{n}: expected {{"shard": ..., "num_sequences": <int>}}: {exc}'
                ) from exc
    return out


class ShardWindows:
    """Every sample of the shards as one window, with :class:`foundry_action.sampler.WindowSampler`'s
    interface (``windows``, ``images``, ``camera_frames``, ``image_names``, dims, ``index_episode``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        past: int,
        future: int,
        cameras: list[str] | None,
        image_offsets: list[int],
        action_fields: list[str],
        proprio_fields: list[str],
    ) -> None:
        self.path = Path(path)
        shards = _shards(self.path)
        if not shards:
            raise DataError(f"{self.path}: no WebDataset shards (manifest.jsonl or *.tar)")
        claimed = _manifest_counts(self.path)
        self.refs: list[tuple[Path, str, dict[str, tuple[int, int]]]] = []
        for shard in shards:
            samples = index_shard(shard)
            n = claimed.get(shard.stem)
            if n is not None and n != len(samples):
                log.warning(
                    "%s: manifest says %d sequences, the shard holds %d (using the shard)",
                    shard,
                    n,
                    len(samples),
                )
            self.refs += [(shard, key, members) for key, members in sorted(samples.items())]
        if not self.refs:
            raise DataError(f"{self.path}: the shards hold no samples")
        self.past, self.future = past, future
        self.image_offsets = np.asarray(image_offsets, dtype=np.int64)
        self.action_fields, self.proprio_fields = list(action_fields), list(proprio_fields)
        self.metas, self.instructions, self.fields = [], [], {}
        actions, proprio, past_mask, future_mask, slot_valid = [], [], [], [], []
        for shard, key, members in self.refs:
            where = f"{shard}: sample {key}"
            for need in ("lowdim.npz", "metadata.json"):
                if need not in members:
                    raise DataError(
                        f"{where}: missing {need} (a robotics sample needs lowdim.npz, metadata.json, JPEGs)"
                    )
            raw = read_members(shard, members, ("lowdim.npz", "metadata.json", "language_instructions.json"))
            try:
                meta = json.loads(raw["metadata.json"])
                instr = json.loads(raw.get("language_instructions.json") or b"{}")
                with np.load(io.BytesIO(raw["lowdim.npz"]), allow_pickle=False) as npz:
                    low = {
                        k: npz[k]
                        for k in npz.files
                        if k in (*self.action_fields, *self.proprio_fields, "past_mask", "future_mask")
                    }
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{where}: unreadable lowdim.npz/metadata.json/language_instructions.json: {exc}"
                ) from exc
            cams = self._sample_cameras(members, where)
            if cameras is None:
                cameras = cams
            lo, hi = self._crop(meta, low, where)
            for name in (*self.action_fields, *self.proprio_fields):
                if name not in low:
                    raise DataError(f"{where}: lowdim.npz has no field {name!r}")
                shape = tuple(low[name].shape[1:])
                if self.fields.setdefault(name, shape) != shape:
                    raise DataError(
                        f"{where}: field {name!r} has shape {shape}, other samples {self.fields[name]}"
                    )
                if not np.isfinite(low[name]).all():
                    raise DataError(f"{where}: field {name!r} has NaN/inf")
            length = len(low[self.action_fields[0]])
            act = np.concatenate([low[n].reshape(length, -1) for n in self.action_fields], axis=1)[lo:hi]
            pro = np.concatenate([low[n].reshape(length, -1) for n in self.proprio_fields], axis=1)[lo:hi]
            actions.append(act)
            proprio.append(pro[: past + 1])
            k = np.arange(-past, future + 1)
            pm = low["past_mask"][lo:hi].astype(bool) if "past_mask" in low else k < 0
            fm = low["future_mask"][lo:hi].astype(bool) if "future_mask" in low else k >= 0
            past_mask.append(pm & (k < 0))
            future_mask.append(fm & (k >= 0))
            slot_valid.append(self._slot_validity(meta, members, cameras, where))
            self.metas.append(meta)
            self.instructions.append(
                [
                    str(s)
                    for t in ("original", "randomized", "verbose", "alternative")
                    for s in instr.get(t, [])
                ]
                or [""]
            )
        self.cameras = list(cameras or [])
        self.actions = np.stack(actions).astype(np.float32)
        self.proprio = np.stack(proprio).astype(np.float32)
        self.past_mask, self.future_mask = np.stack(past_mask), np.stack(future_mask)
        self.slot_valid = np.stack(slot_valid)
        self.samples = np.arange(len(self.refs))
        self.index_episode = self.samples
        self.image_shapes = self._camera_shapes()

    # ------------------------------------------------------------------ indexing helpers
    def _sample_cameras(self, members: dict[str, Any], where: str) -> list[str]:
        cams = sorted({ext.rsplit(".", 1)[0].rpartition("_t")[0] for ext in members if ext.endswith(".jpg")})
        if not cams:
            raise DataError(f"{where}: no camera images")
        return cams

    def _crop(self, meta: dict[str, Any], low: dict[str, np.ndarray], where: str) -> tuple[int, int]:
        """[lo, hi) of the sample's window that is (past, anchor, future) for this source."""
        anchor = int(meta.get("anchor_relative_idx", -1))
        if anchor < 0:
            raise DataError(f"{where}: metadata.json has no anchor_relative_idx")
        length = len(next(iter(low.values())))
        if self.past > anchor or self.future > length - anchor - 1:
            raise DataError(
                f"{where}: the sample holds past {anchor} / future {length - anchor - 1} steps; "
                f"past {self.past} / future {self.future} were asked (crop only, never extend)"
            )
        return anchor - self.past, anchor + self.future + 1

    def _slot_validity(
        self, meta: dict[str, Any], members: dict[str, Any], cameras: list[str], where: str
    ) -> np.ndarray:
        anchor = int(meta["anchor_timestep"]) if "anchor_timestep" in meta else None
        stamps = meta.get("image_timesteps")
        stored = sorted({int(ext[:-4].rpartition("_t")[2]) for ext in members if ext.endswith(".jpg")})
        valid = np.zeros(len(self.image_offsets), dtype=bool)
        for j, off in enumerate(self.image_offsets.tolist()):
            if off not in stored:
                raise DataError(f"{where}: no images at offset {off} (the sample has offsets {stored})")
            have = all(f"{cam}_t{off}.jpg" in members for cam in cameras)
            clipped = (
                anchor is not None
                and stamps is not None
                and len(stamps) == len(stored)
                and int(stamps[stored.index(off)]) != anchor + off
            )
            valid[j] = have and not clipped
        return valid

    def _camera_shapes(self) -> dict[str, tuple[int, int]]:
        shapes: dict[str, tuple[int, int]] = {}
        for i in range(len(self.refs)):
            shard, key, members = self.refs[i]
            for cam in self.cameras:
                if cam in shapes:
                    continue
                for off in self.image_offsets.tolist():
                    ext = f"{cam}_t{off}.jpg"
                    if ext in members:
                        img = _decode_jpeg(
                            read_members(shard, members, (ext,))[ext], f"{shard}: sample {key} {ext}"
                        )
                        shapes[cam] = tuple(img.shape[:2])  # type: ignore[assignment]
                        break
            if len(shapes) == len(self.cameras):
                return shapes
        missing = [c for c in self.cameras if c not in shapes]
        raise DataError(f"{self.path}: no sample has an image of camera(s) {', '.join(missing)}")

    # ------------------------------------------------------------------ the WindowSampler interface
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def action_dim(self) -> int:
        return self.actions.shape[-1]

    @property
    def proprio_dim(self) -> int:
        return self.proprio.shape[-1]

    def windows(self, indices: Any) -> WindowBatch:
        idx = self.samples[np.asarray(indices, dtype=np.int64)]
        n_t = len(self.image_offsets)
        return WindowBatch(
            actions=self.actions[idx],
            proprio=self.proprio[idx],
            past_mask=self.past_mask[idx],
            future_mask=self.future_mask[idx],
            frames=idx[:, None] * n_t + np.arange(n_t)[None],
            image_mask=self.slot_valid[idx],
            episodes=idx,
            anchors=np.zeros(len(idx), dtype=np.int64),
        )

    def camera_frames(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Camera -> uint8 [B, N_t, H, W, 3] for frame ids ``sample * N_t + slot`` (black where invalid)."""
        n_t = len(self.image_offsets)
        out = {c: np.zeros((*frames.shape, *self.image_shapes[c], 3), dtype=np.uint8) for c in self.cameras}
        for b, row in enumerate(frames):
            for ti, fid in enumerate(row.tolist()):
                sample, slot = divmod(int(fid), n_t)
                if not self.slot_valid[sample, slot]:
                    continue
                shard, key, members = self.refs[sample]
                off = int(self.image_offsets[slot])
                wanted = tuple(f"{cam}_t{off}.jpg" for cam in self.cameras)
                raw = read_members(shard, members, wanted)
                for cam, ext in zip(self.cameras, wanted):
                    img = _decode_jpeg(raw[ext], f"{shard}: sample {key} {ext}")
                    if img.shape[:2] != self.image_shapes[cam]:
                        raise DataError(
                            f"{shard}: sample {key} {ext} is {img.shape[:2]}, "
                            f"camera {cam} is {self.image_shapes[cam]} elsewhere"
                        )
                    out[cam][b, ti] = img
        return out

    def images(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B, N_t * N_cam, H, W, 3], time-major (cameras must share one size)."""
        per_cam = self.camera_frames(frames)
        stacked = np.stack([per_cam[c] for c in self.cameras], axis=2)  # [B, N_t, N_cam, H, W, 3]
        return stacked.reshape(frames.shape[0], -1, *stacked.shape[3:])

    def image_names(self) -> list[str]:
        return [f"{c}@{int(o)}" for o in self.image_offsets for c in self.cameras]

    def select(self, samples: list[int]) -> None:
        self.samples = np.asarray(samples, dtype=np.int64)
        self.index_episode = self.samples


def _window_stats(x: np.ndarray, valid: np.ndarray) -> tuple[Moments, list[Moments]]:
    """Overall and per-position statistics of ``x`` [S, T, C] over the steps where ``valid`` [S, T]."""
    return Moments.of(x[valid]), [Moments.of(x[:, k][valid[:, k]]) for k in range(x.shape[1])]


class WdsRobotShards(ZarrEpisodes):
    """Robot batches straight from reference robotics shards (see the module docstring)."""

    modality = "robot"

    @dataclass(kw_only=True)
    class Config:
        #: Folder with manifest.jsonl (or *.tar), or one .tar shard.
        path: str
        past: int = 1
        future: int = 14
        cameras: list[str] | None = None
        image_offsets: list[int] = field(default_factory=lambda: [0])
        image_size: int | None = None
        action_field: str | list[str] = "robot__action__poses__right::panda__xyz"
        proprio_field: str | list[str] = "robot__actual__poses__right::panda__xyz"
        normalization: Normalization = "std"
        relative_actions: bool = False
        per_timestep_stats: bool = False
        augment: AugmentConfig = field(default_factory=AugmentConfig)
        split: Literal["all", "train", "val"] = "all"
        val_fraction: float = 0.0
        instruction: Literal["first", "random"] = "first"
        #: Task name of every batch row (default: the folder name).
        task: str | None = None
        #: Control rate recorded in the policy metadata (the shards do not carry it).
        fps: float = 10.0
        num_workers: int = 0

        def validate(self) -> None:
            if self.past < 0 or self.future < 0:
                raise ConfigError(f"past/future must be >= 0, got {self.past}/{self.future}")
            if self.image_size is not None and self.image_size < 8:
                raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
            if not 0.0 <= self.val_fraction < 1.0:
                raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
            if not self.image_offsets:
                raise ConfigError("image_offsets must not be empty")
            if self.fps <= 0 or self.num_workers < 0:
                raise ConfigError(
                    f"fps must be > 0 and num_workers >= 0, got {self.fps} / {self.num_workers}"
                )

    def __init__(self, cfg: Config) -> None:  # type: ignore[override]  # deliberately not the store's init
        self.cfg = cfg  # type: ignore[assignment]
        self.action_fields = (
            [cfg.action_field] if isinstance(cfg.action_field, str) else list(cfg.action_field)
        )
        self.proprio_fields = (
            [cfg.proprio_field] if isinstance(cfg.proprio_field, str) else list(cfg.proprio_field)
        )
        self.sampler = ShardWindows(  # type: ignore[assignment]
            cfg.path,
            past=cfg.past,
            future=cfg.future,
            cameras=cfg.cameras,
            image_offsets=cfg.image_offsets,
            action_fields=self.action_fields,
            proprio_fields=self.proprio_fields,
        )
        episode_ids = [str(m.get("episode_id", i)) for i, m in enumerate(self.sampler.metas)]
        groups = sorted(set(episode_ids))
        keep = set(split_episodes(list(range(len(groups))), cfg.split, cfg.val_fraction))
        chosen = [i for i, e in enumerate(episode_ids) if groups.index(e) in keep]
        self.sampler.select(chosen)
        self._instructions = self.sampler.instructions
        task = cfg.task or Path(cfg.path).name
        self._tasks = [task] * len(self.sampler.refs)
        sizes = set(self.sampler.image_shapes.values())
        if cfg.image_size is None and len(sizes) > 1:
            raise ConfigError(f"{cfg.path}: cameras have different sizes {sorted(sizes)}; set image_size")
        self.image_hw = (cfg.image_size, cfg.image_size) if cfg.image_size else next(iter(sizes))
        self._same_size = len(sizes) == 1
        self._dims = {
            f: int(np.prod(self.sampler.fields[f])) for f in self.action_fields + self.proprio_fields
        }
        self.stats = self._compute_stats().with_method(cfg.normalization)
        self.per_timestep = cfg.relative_actions or cfg.per_timestep_stats
        self._fps = cfg.fps
        self._semantics = {f: "" for f in self._dims}
        self.position = 0
        self._perms: dict[int, np.ndarray] = {}
        self._window_p = None

    def _compute_stats(self) -> NormStats:
        """In-memory statistics over the selected samples' valid steps (actions relative if asked)."""
        s = self.sampler
        sel = s.samples
        actions = s.actions[sel].astype(np.float64)
        valid = s.past_mask[sel] | s.future_mask[sel]
        if self.cfg.relative_actions:
            from foundry_action.rotations import absolute_to_relative

            actions = absolute_to_relative(
                actions, s.proprio[sel][:, self.cfg.past : self.cfg.past + 1].astype(np.float64)
            )
        moments, per_t = {}, {}
        col = 0
        for name in self.action_fields:
            d = self._dims[name]
            moments[name], per_t[name] = _window_stats(actions[..., col : col + d], valid)
            col += d
        col = 0
        pvalid = valid[:, : self.cfg.past + 1]
        for name in self.proprio_fields:
            d = self._dims[name]
            moments[name], per_t[name] = _window_stats(
                s.proprio[sel][..., col : col + d].astype(np.float64), pvalid
            )
            col += d
        window = (self.cfg.past, self.cfg.future)
        per_t = {k: v for k, v in per_t.items() if k in self.action_fields}
        dims = {f: s.fields[f] for f in self._dims}
        source = {"path": str(self.cfg.path), "samples": int(len(sel)), "relative": self.cfg.relative_actions}
        return NormStats(moments, dims, per_timestep=per_t, window=window, source=source)
