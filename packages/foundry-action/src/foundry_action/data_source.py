"""``zarr_episodes``: the robot data source (windows of an episode store -> ``robot`` batches).

Deterministic and resumable: a global stream of window indices (a fresh seeded permutation per
epoch) is cut into global batches of ``batch_size × world_size``; rank ``r`` takes slice ``r``. The
cursor counts global samples, so a run resumes exactly, also on another world size. Augmentation
draws from a generator seeded by (seed, batch position, rank). Stats come from ``<store>/stats``
(computed in memory with a warning when absent) and are checked against the store's fields. With
``relative_actions`` the action window is re-expressed in the anchor pose's frame and normalized with
per-position statistics of those relative actions, computed in memory at start (a pass over the
low-dim arrays); a policy export carries them.
Test: ``uv run pytest packages/foundry-action/tests/test_action_sampler.py``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from foundry_action.augment import AugmentConfig, augment, resize
from foundry_action.normalization import NormStats, load_store_stats, relative_action_stats
from foundry_action.rotations import absolute_to_relative
from foundry_action.sampler import WindowSampler
from foundry_action.store import open_store
from foundry_core.errors import ConfigError

log = logging.getLogger(__name__)
Normalization = Literal["std", "min_max", "percentile_1_99", "percentile_5_95"]


def split_episodes(pool: list[int], split: str, val_fraction: float) -> list[int]:
    """Deterministic held-out split: a fixed-seed choice of ``round(n * val_fraction)`` (>= 1) episodes."""
    if split == "all" or val_fraction <= 0:
        if split == "val":
            raise ConfigError("split: val needs val_fraction > 0")
        return pool
    n_val = max(1, round(len(pool) * val_fraction))
    if n_val >= len(pool):
        raise ConfigError(f"val_fraction {val_fraction} leaves no training episodes out of {len(pool)}")
    val = set(np.random.default_rng(0).permutation(pool)[:n_val].tolist())
    return sorted(e for e in pool if (e in val) == (split == "val"))


class ZarrEpisodes:
    """Robot batches (interfaces.py ``robot`` modality) from a Zarr episode store; an
    ``interfaces.RobotDataSource`` (``metadata()`` + ``stats`` for the policy trained on it)."""

    modality = "robot"

    @dataclass(kw_only=True)
    class Config:
        path: str
        past: int = 1
        future: int = 14
        #: Cameras in batch order; null = all cameras of the store.
        cameras: list[str] | None = None
        #: Image steps relative to the anchor (e.g. [-1, 0]).
        image_offsets: list[int] = field(default_factory=lambda: [0])
        #: Resize frames to image_size x image_size; null = keep the stored size.
        image_size: int | None = None
        #: Field(s) concatenated into ``actions`` / ``proprio``.
        action_field: str | list[str] = "action"
        proprio_field: str | list[str] = "proprio"
        normalization: Normalization = "std"
        #: Express the action window in the frame of the anchor's proprio pose (``pose⁻¹ ∘ action``,
        #: the reference LBM convention; gripper stays absolute). A policy then predicts motions, not
        #: places, and cannot score well by copying the current pose. Needs pose-shaped fields.
        relative_actions: bool = False
        #: Normalize each window position of the actions with its own statistics (relative actions
        #: spread more the further ahead they are). Always on with ``relative_actions``.
        per_timestep_stats: bool = False
        augment: AugmentConfig = field(default_factory=AugmentConfig)
        #: Episode indices to use (null = all); then ``split`` picks train/val out of them.
        episodes: list[int] | None = None
        #: Keep only episodes whose metadata ``task`` is one of these.
        tasks: list[str] | None = None
        #: Sample windows so that each task gets this share of them (tasks not listed: none). One
        #: source with mixed-task batches, unlike one source per task in a mix, where every batch
        #: holds one task (which a batch-normalized image read-out then trains on alone).
        task_weights: dict[str, float] | None = None
        split: Literal["all", "train", "val"] = "all"
        val_fraction: float = 0.0
        #: Pad episodes shorter than the window instead of raising.
        pad_short: bool = False
        #: Anchor windows at every step ("all") or only at steps with a real frame ("image_valid": for
        #: stores whose ``image_valid`` field marks steps without one, e.g. converted reference shards).
        anchors: Literal["all", "image_valid"] = "all"
        #: "first" instruction of an episode, or a seeded "random" one of its list.
        instruction: Literal["first", "random"] = "first"
        num_workers: int = 0

        def validate(self) -> None:
            if self.past < 0 or self.future < 0:
                raise ConfigError(f"past/future must be >= 0, got {self.past}/{self.future}")
            if self.image_size is not None and self.image_size < 8:
                raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
            if not 0.0 <= self.val_fraction < 1.0:
                raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
            if self.task_weights is not None:
                bad = {k: v for k, v in self.task_weights.items() if not v >= 0}
                if bad or not any(v > 0 for v in self.task_weights.values()):
                    raise ConfigError(f"task_weights must be >= 0 with at least one > 0, got {self.task_weights}")
            if self.num_workers < 0:
                raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
            if not self.image_offsets:
                raise ConfigError("image_offsets must not be empty")

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        store = open_store(cfg.path)
        self.action_fields = [cfg.action_field] if isinstance(cfg.action_field, str) else list(cfg.action_field)
        self.proprio_fields = [cfg.proprio_field] if isinstance(cfg.proprio_field, str) else list(cfg.proprio_field)
        metas = store.all_meta()
        self._instructions = [m.get("instructions") or [""] for m in metas]
        self._tasks = [str(m.get("task", "")) for m in metas]
        pool = list(range(len(store))) if cfg.episodes is None else list(cfg.episodes)
        if cfg.tasks is not None:
            pool = [e for e in pool if self._tasks[e] in cfg.tasks]
            if not pool:
                raise ConfigError(f"{cfg.path}: no episode has a task in tasks={cfg.tasks} "
                                  f"(tasks in the store: {sorted(set(self._tasks))})")
        episodes = split_episodes(pool, cfg.split, cfg.val_fraction)
        self.sampler = WindowSampler(
            store, past=cfg.past, future=cfg.future, cameras=cfg.cameras, image_offsets=cfg.image_offsets,
            action_fields=self.action_fields, proprio_fields=self.proprio_fields, episodes=episodes,
            pad_short=cfg.pad_short, anchors=cfg.anchors,
        )
        sizes = {store.cameras[c] for c in self.sampler.cameras}
        if cfg.image_size is None and len(sizes) > 1:
            raise ConfigError(f"{cfg.path}: cameras have different sizes {sorted(sizes)}; set image_size")
        self.image_hw = (cfg.image_size, cfg.image_size) if cfg.image_size else next(iter(sizes))
        self._same_size = len(sizes) == 1
        stats = load_store_stats(store)
        if stats is None:
            log.warning("%s has no stats/ folder; computing statistics in memory (run `foundry data stats`)", cfg.path)
            stats = NormStats.compute(store, self.action_fields + self.proprio_fields)
        stats.check_compatible(store, fields=self.action_fields + self.proprio_fields)
        window = (cfg.past, cfg.future)
        if cfg.relative_actions:
            stats = relative_action_stats(store, self.action_fields, self.proprio_fields, window, stats)
        elif cfg.per_timestep_stats and stats.window != window:
            stats = NormStats.compute(store, self.action_fields + self.proprio_fields, window=window)
        self.per_timestep = cfg.relative_actions or cfg.per_timestep_stats
        self.stats = stats.with_method(cfg.normalization)
        self._dims = {f: int(np.prod(store.fields[f])) for f in self.action_fields + self.proprio_fields}
        self._fps = store.fps
        self._semantics = {f: store.semantics[f] for f in self._dims}
        # camera serial -> name, when the converter kept it (LBM's metadata.yaml): a policy server maps
        # the serials a simulator sends to the names this policy was trained on (docs/lbm_eval.md)
        serials = store.attrs.get("camera_id_to_semantic_name") or {  # the spartan converter keeps name -> id
            str(cam_id): name for name, cam_id in dict(store.attrs.get("spartan_cameras") or {}).items()
        }
        self._camera_serials = {str(k): str(v) for k, v in dict(serials).items() if v in self.sampler.cameras}
        self.position = 0  # global sample position of the next batch (over all ranks)
        self._perms: dict[int, np.ndarray] = {}
        self._window_p = self._window_probabilities(cfg.task_weights) if cfg.task_weights else None

    def _window_probabilities(self, weights: dict[str, float]) -> np.ndarray:
        """Per-window sampling probability: a task's weight shared equally by its windows."""
        window_task = np.asarray(self._tasks, dtype=object)[self.sampler.index_episode]
        present = sorted(set(window_task.tolist()))
        unknown = sorted(set(weights) - set(present))
        if unknown:
            raise ConfigError(f"{self.cfg.path}: task_weights names {unknown}, not among the selected "
                              f"episodes' tasks {present}")
        p = np.zeros(len(window_task))
        for task, w in weights.items():
            sel = window_task == task
            p[sel] = w / sel.sum()
        return p / p.sum()

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any) -> ZarrEpisodes:
        return cls(cfg)

    # ------------------------------------------------------------------ description
    def __len__(self) -> int:
        """Number of windows (one per step of every selected episode)."""
        return len(self.sampler)

    def metadata(self) -> dict[str, Any]:
        """What a policy runtime needs to validate observations and undo normalization."""
        return {
            "cameras": list(self.sampler.cameras),
            "image_size": list(self.image_hw),
            "image_offsets": [int(o) for o in self.sampler.image_offsets],
            "image_order": self.sampler.image_names(),
            "action_fields": self.action_fields,
            "proprio_fields": self.proprio_fields,
            "action_dim": self.sampler.action_dim,
            "proprio_dim": self.sampler.proprio_dim,
            "field_dims": dict(self._dims),
            "semantics": dict(self._semantics),
            "past": self.cfg.past,
            "future": self.cfg.future,
            "fps": self._fps,
            "normalization": self.stats.method,
            "relative_actions": self.cfg.relative_actions,
            "per_timestep_stats": self.per_timestep,
            # (subclasses that build their own state, like the unconverted shard source, may have none)
            **(
                {"camera_id_to_semantic_name": dict(serials)}
                if (serials := getattr(self, "_camera_serials", None))
                else {}
            ),
        }

    # ------------------------------------------------------------------ batches
    def _perm(self, epoch: int, seed: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([seed, epoch])
            n = len(self.sampler)
            perm = rng.permutation(n) if self._window_p is None else rng.choice(n, n, p=self._window_p)
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = perm
        return perm

    def _indices(self, start: int, count: int, seed: int) -> np.ndarray:
        pos = np.arange(start, start + count)
        n = len(self.sampler)
        epochs = pos // n
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch, seed)[pos[sel] % n]
        return out

    def _normalize(self, x: np.ndarray, names: list[str], window: bool = False) -> torch.Tensor:
        out, col = [], 0
        for name in names:
            d = self._dims[name]
            part = x[..., col : col + d]
            out.append(self.stats.normalize_window(name, part) if window else self.stats.normalize(name, part))
            col += d
        return torch.from_numpy(np.concatenate(out, axis=-1).astype(np.float32))

    def make_batch(self, indices: np.ndarray, generator: torch.Generator) -> dict[str, Any]:
        """Collate the windows ``indices`` into a normalized ``robot`` batch."""
        wb = self.sampler.windows(indices)
        b, n_t = wb.frames.shape
        n_cam = len(self.sampler.cameras)
        if self._same_size:  # decode into one buffer; a channels-last view that augment/resize read in place
            images = torch.from_numpy(self.sampler.images(wb.frames)).permute(0, 1, 4, 2, 3)
            if self.cfg.image_size:
                images = resize(images, self.cfg.image_size)
        else:
            per_cam = []
            for frames in self.sampler.camera_frames(wb.frames).values():
                t = torch.from_numpy(frames).permute(0, 1, 4, 2, 3)  # [B, N_t, 3, H, W]
                per_cam.append(resize(t, self.cfg.image_size) if self.cfg.image_size else t)
            images = torch.stack(per_cam, dim=2).reshape(b, n_t * n_cam, 3, *self.image_hw)
        images = augment(images, self.cfg.augment, generator)
        actions = wb.actions
        if self.cfg.relative_actions:  # in the frame of the anchor pose (the last proprio step)
            actions = absolute_to_relative(actions, wb.proprio[:, self.cfg.past : self.cfg.past + 1])
        if self.cfg.instruction == "random":
            picks = torch.randint(0, 1 << 30, (b,), generator=generator).tolist()
            instr = [self._instructions[e][p % len(self._instructions[e])] for e, p in zip(wb.episodes, picks)]
        else:
            instr = [self._instructions[e][0] for e in wb.episodes]
        return {
            "modality": self.modality,
            "images": images.contiguous(),
            "image_mask": torch.from_numpy(np.repeat(wb.image_mask, n_cam, axis=1)),
            "proprio": self._normalize(wb.proprio, self.proprio_fields),
            "actions": self._normalize(actions, self.action_fields, window=self.per_timestep),
            "past_mask": torch.from_numpy(wb.past_mask),
            "future_mask": torch.from_numpy(wb.future_mask),
            "instruction": instr,
            "task": [self._tasks[e] for e in wb.episodes],
            "episode": torch.from_numpy(wb.episodes.copy()),
            "anchor": torch.from_numpy(wb.anchors.copy()),
        }

    def batch_at(self, position: int, batch_size: int, *, rank: int, world_size: int, seed: int) -> dict[str, Any]:
        """The batch of ``rank`` for the global batch starting at sample ``position`` (pure function)."""
        idx = self._indices(position + rank * batch_size, batch_size, seed)
        state = np.random.SeedSequence([seed, position, rank]).generate_state(2, dtype=np.uint64)
        gen = torch.Generator().manual_seed(int(state[0] % (1 << 63)))
        return self.make_batch(idx, gen)

    def batches(self, batch_size: int, *, rank: int, world_size: int, seed: int) -> Iterator[dict[str, Any]]:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        step = batch_size * world_size
        if self.cfg.num_workers == 0:
            while True:
                batch = self.batch_at(self.position, batch_size, rank=rank, world_size=world_size, seed=seed)
                self.position += step
                yield batch
        dataset = _BatchDataset(self, batch_size, rank, world_size, seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=itertools.count(self.position, step),  # type: ignore[arg-type]
            num_workers=self.cfg.num_workers, persistent_workers=False, prefetch_factor=2,
        )
        for batch in loader:
            self.position += step
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.position = int(state["position"])


class _BatchDataset(torch.utils.data.Dataset):
    """Map-style view ``position -> batch`` so DataLoader workers build whole batches."""

    def __init__(self, source: ZarrEpisodes, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        self.source, self.batch_size, self.rank, self.world_size, self.seed = source, batch_size, rank, world_size, seed

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self.source.batch_at(position, self.batch_size, rank=self.rank, world_size=self.world_size, seed=self.seed)

