"""``toy_regression``: a tiny residual MLP for trainer tests, the overhead benchmark and docs.

It implements the whole trainable-model protocol (``compute_loss``, ``fsdp_block_types``,
``flops_per_sample``, ``export_artifacts``) and pairs with the ``synthetic_regression`` source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class ToyBlock(nn.Module):
    """Pre-norm residual MLP block (the FSDP2 / checkpointing unit)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.drop(self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h)))))


class ToyMLP(nn.Module):
    """x [B, in_dim] → prediction [B, out_dim]; MSE loss against ``y``."""

    @dataclass(kw_only=True)
    class Config:
        in_dim: int = 16
        width: int = 64
        depth: int = 2
        out_dim: int = 1
        dropout: float = 0.0

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.in_dim, cfg.width)
        self.blocks = nn.ModuleList(ToyBlock(cfg.width, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, cfg.out_dim)
        self._matmul_weights = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any) -> ToyMLP:
        return cls(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        pred = self(batch["x"])
        loss = torch.nn.functional.mse_loss(pred.float(), batch["y"].float())
        return loss, {}

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        return (ToyBlock,)

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        """6 × (matmul weights): 2 for the forward, 4 for the backward."""
        return 6.0 * self._matmul_weights

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        return {}
