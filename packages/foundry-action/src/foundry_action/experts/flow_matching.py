"""Flow-matching action expert (rectified flow, velocity target, K Euler steps).

Time convention: continuous ``t`` in [0, 1]; ``t = 0`` is data and ``t = 1`` is Gaussian noise.
Training draws ``t ~ U[0, 1]`` and builds ``x_t = (1 - t) * a + t * eps`` on the non-context steps
(pinned past actions stay clean); the network predicts the velocity ``eps - a`` and the loss is the
MSE over ``future_mask``. This is the reference's ``x_t = a + (t/T)(eps - a)`` with ``t/T`` made
continuous. Sampling starts from noise at ``t = 1`` and takes ``inference_steps`` Euler steps of
size ``1/K`` down to 0, re-pinning the past actions after every step (inpainting).
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
    sampling_noise,
)
from foundry_core.errors import ConfigError


class FlowMatchingExpert(ExpertBase):
    """Velocity-field action expert; ``sample`` integrates the learned flow from noise to actions."""

    @dataclass(kw_only=True)
    class Config(ExpertConfig):
        #: Euler steps at inference (8 is the reference's evaluation default).
        inference_steps: int = 8

        def validate(self) -> None:
            super().validate()
            if self.inference_steps < 1:
                raise ConfigError(f"inference_steps must be >= 1, got {self.inference_steps}")

    def loss(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        cond, cond_mask, batch = repeat_batch(self.cfg.num_action_head_repeats, cond, cond_mask, batch)
        device = cond.device
        actions, context, future = context_and_target(batch, self.dims, cond)
        noise = torch.randn_like(actions)
        t = torch.rand(actions.shape[0], device=device)
        x_t = (1 - t[:, None, None]) * actions + t[:, None, None] * noise
        x_t = torch.where(context[..., None], actions, x_t)
        velocity = self.net(cond, cond_mask, self._proprio(batch, device), x_t, context, t)
        return masked_mean((velocity.float() - (noise - actions)) ** 2, future)

    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any], *, steps: int | None = None
    ) -> torch.Tensor:
        """Normalized action window [B, T, A]; past steps equal the given past actions."""
        steps = steps or self.cfg.inference_steps
        device = cond.device
        actions, context, _ = context_and_target(batch, self.dims, cond)
        proprio = self._proprio(batch, device)
        x = torch.where(context[..., None], actions, sampling_noise(actions, batch))
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((x.shape[0],), 1.0 - i * dt, device=device)
            velocity = self.net(cond, cond_mask, proprio, x, context, t).float()
            x = torch.where(context[..., None], actions, x - dt * velocity)
        return x
