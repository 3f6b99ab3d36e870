"""L1 regression action expert: one forward pass predicts the whole action window (no noise, no time).

The non-context action tokens are zeros (the learned position embeddings tell the steps apart); past
actions, where ``past_mask`` is true, are clean pinned context. Loss: mean absolute error over
``future_mask``. A deterministic baseline: it averages multimodal demonstrations.
Test: ``uv run pytest packages/foundry-action/tests/test_action_experts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from foundry_action.experts.base import (
    ExpertBase,
    ExpertConfig,
    context_and_target,
    masked_mean,
    repeat_batch,
)


class L1RegressionExpert(ExpertBase):
    """Direct action-window regression with an L1 loss."""

    uses_time = False

    @dataclass(kw_only=True)
    class Config(ExpertConfig):
        pass

    def _predict(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> tuple:
        device = cond.device
        actions, context, future = context_and_target(batch, self.dims, cond)
        inputs = torch.where(context[..., None], actions, torch.zeros_like(actions))
        pred = self.net(cond, cond_mask, self._proprio(batch, device), inputs, context).float()
        return pred, actions, context, future

    def loss(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        # Repeats are accepted for config symmetry; with no noise they only re-weight the batch.
        cond, cond_mask, batch = repeat_batch(self.cfg.num_action_head_repeats, cond, cond_mask, batch)
        pred, actions, _, future = self._predict(cond, cond_mask, batch)
        return masked_mean((pred - actions).abs(), future)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        pred, actions, context, _ = self._predict(cond, cond_mask, batch)
        return torch.where(context[..., None], actions, pred)
