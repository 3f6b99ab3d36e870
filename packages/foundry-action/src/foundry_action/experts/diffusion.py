"""Diffusion action expert: DDPM training, DDIM or DDPM sampling (both tested end to end).

Discrete steps ``k`` in ``{0, ..., N-1}`` (``N = num_train_timesteps``) with a cosine
("squaredcos_cap_v2") or linear beta schedule; ``x_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps`` on the
non-context steps. The network sees ``t = k / N`` in [0, 1) and predicts the clean sample
(``prediction: sample``, the default) or ``eps`` (``prediction: epsilon``). Why sample prediction by
default: at the noisiest step ``abar`` is ~1e-7, so an eps error of d becomes a clean-sample error of
d / sqrt(abar); with few DDIM steps that collapses or blows up samples unless ``clip_sample`` is set
(measured on the 1-D bimodal test), while sample prediction is stable at every noise level. Sampling runs the generalised DDIM update over a descending
subset of steps; ``sampler: ddpm`` is the same update over all ``N`` steps with ``eta = 1``, which
is exactly the DDPM ancestral sampler (posterior variance ``beta~``). Past actions are re-pinned
after every step. Test: ``uv run pytest packages/foundry-action/tests/test_action_experts.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from foundry_action.experts.base import (
    ExpertBase,
    ExpertConfig,
    ExpertDims,
    context_and_target,
    masked_mean,
    repeat_batch,
    sampling_noise,
)
from foundry_core.errors import ConfigError


def make_alpha_bars(n: int, schedule: str) -> torch.Tensor:
    """Cumulative products ``abar_k`` for k = 0..n-1."""
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64) * (1000.0 / n)
    else:
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas.clamp(max=0.999), dim=0).float()


class DiffusionExpert(ExpertBase):
    """Denoising-diffusion action expert."""

    @dataclass(kw_only=True)
    class Config(ExpertConfig):
        num_train_timesteps: int = 100
        beta_schedule: Literal["cosine", "linear"] = "cosine"
        prediction: Literal["sample", "epsilon"] = "sample"
        sampler: Literal["ddim", "ddpm"] = "ddim"
        #: DDIM steps (ignored by ``sampler: ddpm``, which uses all ``num_train_timesteps``).
        inference_steps: int = 10
        #: DDIM stochasticity: 0 = deterministic DDIM, 1 = DDPM-like noise.
        eta: float = 0.0
        #: Clamp the predicted clean sample to [-v, v] (normalized units); null = no clamp.
        clip_sample: float | None = None

        def validate(self) -> None:
            super().validate()
            if self.num_train_timesteps < 2:
                raise ConfigError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
            if not 1 <= self.inference_steps <= self.num_train_timesteps:
                raise ConfigError(
                    f"inference_steps must be in [1, num_train_timesteps={self.num_train_timesteps}], "
                    f"got {self.inference_steps}"
                )

    def __init__(self, cfg: DiffusionExpert.Config, dims: ExpertDims) -> None:
        super().__init__(cfg, dims)
        self.register_buffer("alpha_bars", make_alpha_bars(cfg.num_train_timesteps, cfg.beta_schedule), persistent=False)

    def _t(self, k: torch.Tensor) -> torch.Tensor:
        return k.float() / self.cfg.num_train_timesteps

    def loss(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        cond, cond_mask, batch = repeat_batch(self.cfg.num_action_head_repeats, cond, cond_mask, batch)
        device = cond.device
        actions, context, future = context_and_target(batch, self.dims, cond)
        noise = torch.randn_like(actions)
        k = torch.randint(0, self.cfg.num_train_timesteps, (actions.shape[0],), device=device)
        abar = self.alpha_bars.to(device)[k][:, None, None]
        x_k = abar.sqrt() * actions + (1 - abar).sqrt() * noise
        x_k = torch.where(context[..., None], actions, x_k)
        pred = self.net(cond, cond_mask, self._proprio(batch, device), x_k, context, self._t(k)).float()
        target = noise if self.cfg.prediction == "epsilon" else actions
        return masked_mean((pred - target) ** 2, future)

    def timesteps(self, sampler: str, steps: int) -> list[int]:
        """Descending step indices visited by the sampler."""
        n = self.cfg.num_train_timesteps
        if sampler == "ddpm":
            return list(range(n - 1, -1, -1))
        return sorted({round(x) for x in torch.linspace(n - 1, 0, steps).tolist()}, reverse=True)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        batch: dict[str, Any],
        *,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Normalized action window [B, T, A]; past steps equal the given past actions."""
        sampler = sampler or self.cfg.sampler
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"unknown diffusion sampler {sampler!r}: use 'ddim' or 'ddpm'")
        eta = 1.0 if sampler == "ddpm" else self.cfg.eta
        device = cond.device
        actions, context, _ = context_and_target(batch, self.dims, cond)
        proprio = self._proprio(batch, device)
        abars = self.alpha_bars.to(device)
        x = torch.where(context[..., None], actions, sampling_noise(actions, batch))
        ks = self.timesteps(sampler, steps or self.cfg.inference_steps)
        for i, k in enumerate(ks):
            abar = abars[k]
            abar_prev = abars[ks[i + 1]] if i + 1 < len(ks) else torch.ones((), device=device)
            t = torch.full((x.shape[0],), k, device=device)
            out = self.net(cond, cond_mask, proprio, x, context, self._t(t)).float()
            if self.cfg.prediction == "epsilon":
                x0 = (x - (1 - abar).sqrt() * out) / abar.sqrt()
            else:
                x0 = out
            if self.cfg.clip_sample is not None:
                x0 = x0.clamp(-self.cfg.clip_sample, self.cfg.clip_sample)
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp_min(0).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps
            if i + 1 < len(ks):
                x = x + sigma * sampling_noise(x, batch)
            x = torch.where(context[..., None], actions, x)
        return x
