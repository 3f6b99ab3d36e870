"""``synthetic_regression``: a deterministic in-memory regression data set (y = x·W + noise).

For tests, the trainer-overhead benchmark and docs: no files, exact resume, and a *global* cursor,
so a run resumes identically on any world size. The global stream of sample indices is cut into
global batches of ``batch_size × world_size``; rank ``r`` takes slice ``r`` of each. The sample order
is a fresh permutation per epoch, derived from the ``seed`` passed to ``batches``.
Tested by ``tests/test_train_mixer.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from foundry_core.data.base import Batch
from foundry_core.errors import ConfigError


class SyntheticRegression:
    """``x`` float32 [B, in_dim] → ``y`` float32 [B, out_dim]; modality ``regression``."""

    modality = "regression"

    @dataclass(kw_only=True)
    class Config:
        num_samples: int = 1024
        in_dim: int = 16
        out_dim: int = 1
        noise: float = 0.01
        #: Passes over the data; ``null`` = repeat forever.
        epochs: int | None = None
        #: Seed of the data itself (the true W and the inputs); the order comes from the run seed.
        data_seed: int = 0

        def validate(self) -> None:
            if self.num_samples < 1 or self.in_dim < 1 or self.out_dim < 1:
                raise ConfigError("num_samples, in_dim and out_dim must be >= 1")
            if self.epochs is not None and self.epochs < 1:
                raise ConfigError(f"epochs must be >= 1 or null, got {self.epochs}")

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.data_seed)
        self.x = torch.randn(cfg.num_samples, cfg.in_dim, generator=g)
        w = torch.randn(cfg.in_dim, cfg.out_dim, generator=g) / cfg.in_dim**0.5
        self.y = self.x @ w + cfg.noise * torch.randn(cfg.num_samples, cfg.out_dim, generator=g)
        self.position = 0  # global index of the next sample to serve (over all ranks)
        self._perms: dict[int, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any) -> SyntheticRegression:
        return cls(cfg)

    def _perm(self, epoch: int, seed: int) -> torch.Tensor:
        perm = self._perms.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed(seed * 100003 + epoch)
            perm = torch.randperm(self.cfg.num_samples, generator=g)
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = perm
        return perm

    def _indices(self, start: int, count: int, seed: int) -> torch.Tensor:
        ks = torch.arange(start, start + count)
        epochs = ks // self.cfg.num_samples
        out = torch.empty(count, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch, seed)[ks[sel] % self.cfg.num_samples]
        return out

    def batches(self, batch_size: int, *, rank: int, world_size: int, seed: int) -> Iterator[Batch]:
        global_batch = batch_size * world_size
        limit = None if self.cfg.epochs is None else self.cfg.epochs * self.cfg.num_samples
        while limit is None or self.position + global_batch <= limit:
            start = self.position + rank * batch_size
            idx = self._indices(start, batch_size, seed)
            self.position += global_batch  # the cursor moves before the batch is handed out
            yield {"modality": self.modality, "x": self.x[idx], "y": self.y[idx]}

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.position = int(state["position"])
