"""A small MLP action expert: mean-pools the backbone tokens, adds the current proprioception and
regresses the whole action window (past + 1 + future steps) with an L1 loss on the steps marked in ``future_mask``.

It implements :class:`foundry_core.interfaces.ActionExpert` with only foundry-core as a dependency,
which is the point of the example: a plugin adds a component without touching Foundry's code.
Test: ``uv run pytest plugins-example/foundry-example-plugin/tests``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext


class MLPChunkExpert(nn.Module):
    """Deterministic action-window regressor; a baseline for the flow-matching and diffusion experts."""

    @dataclass(kw_only=True)
    class Config:
        hidden: int = 256
        depth: int = 2
        #: Filled from ``ctx.dims`` (``cond``, ``action``, ``proprio``, ``window``) when left None.
        cond_dim: int | None = None
        action_dim: int | None = None
        proprio_dim: int | None = None
        window: int | None = None
        #: ``horizon`` was this field's old name: a config with it fails naming ``window``.
        RENAMED_KEYS: ClassVar[dict[str, str]] = {"horizon": "window"}

    def __init__(self, cfg: Config, *, cond_dim: int, action_dim: int, proprio_dim: int, window: int) -> None:
        super().__init__()
        self.cfg, self.action_dim, self.window = cfg, action_dim, window
        layers: list[nn.Module] = []
        width = cond_dim + proprio_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU()]
            width = cfg.hidden
        layers.append(nn.Linear(width, window * action_dim))
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> MLPChunkExpert:
        dims = {}
        for field, key in (("cond_dim", "cond"), ("action_dim", "action"), ("proprio_dim", "proprio"), ("window", "window")):
            value = getattr(cfg, field) if getattr(cfg, field) is not None else ctx.dims.get(key)
            if value is None:
                raise ConfigError(f"action_expert.{field}: not set and not provided by the model (ctx.dims[{key!r}])")
            dims[field] = int(value)
        return cls(cfg, **dims)

    def _predict(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        weights = cond_mask.to(cond.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (cond * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D)
        proprio = batch["proprio"][:, -1]  # current step, (B, Dp)
        out = self.net(torch.cat([pooled, proprio.to(pooled.dtype)], dim=-1))
        return out.view(-1, self.window, self.action_dim)  # (B, T, A)

    def loss(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        pred = self._predict(cond, cond_mask, batch)
        mask = batch["future_mask"].to(pred.dtype).unsqueeze(-1)  # (B, T, 1)
        err = (pred - batch["actions"].to(pred.dtype)).abs() * mask
        return err.sum() / (mask.sum() * self.action_dim).clamp_min(1.0)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        pred = self._predict(cond, cond_mask, batch)
        past = batch.get("past_mask")
        if past is not None and "actions" in batch:  # keep known past actions pinned
            pred = torch.where(past.unsqueeze(-1), batch["actions"].to(pred.dtype), pred)
        return pred


def describe(cond_dim: int, action_dim: int, proprio_dim: int, window: int, hidden: int) -> str:
    """One line: parameter count and output shape of an expert of these sizes."""
    cfg = MLPChunkExpert.Config(hidden=hidden)
    expert = MLPChunkExpert(cfg, cond_dim=cond_dim, action_dim=action_dim, proprio_dim=proprio_dim, window=window)
    cond = torch.zeros(1, 4, cond_dim)
    out = expert.sample(cond, torch.ones(1, 4, dtype=torch.bool), {"proprio": torch.zeros(1, 1, proprio_dim)})
    params = sum(p.numel() for p in expert.parameters())
    return f"mlp_chunk: {params:,} parameters, action window shape {tuple(out.shape[1:])}"
