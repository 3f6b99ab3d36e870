"""Vision → language projector: optional pixel-shuffle token reduction, then a linear layer or a 2-layer MLP.

Pixel shuffle (as in Idefics3/SmolVLM) merges each ``factor x factor`` group of neighbouring patch
tokens into one token of ``factor^2`` times the width, cutting the image token count by ``factor^2``.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_encoders.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from foundry_core.errors import ConfigError, DataError


@dataclass(kw_only=True)
class ProjectorConfig:
    kind: Literal["linear", "mlp"] = "mlp"
    #: Merge factor x factor neighbouring patches into one token (1 = off).
    pixel_shuffle: int = 1


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, T, D] with T = g*g per image -> [B, T / factor^2, D * factor^2]."""
    b, t, d = x.shape
    g = int(round(t**0.5))
    if g * g != t or g % factor:
        raise DataError(f"pixel_shuffle: {t} tokens per image are not a square grid divisible by {factor}")
    x = x.view(b, g // factor, factor, g // factor, factor, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (g // factor) ** 2, d * factor * factor)


class Projector(nn.Module):
    """Maps encoder tokens (per image) to LLM-width tokens; see the module docstring."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if cfg.pixel_shuffle < 1:
            raise ConfigError(f"projector.pixel_shuffle must be >= 1, got {cfg.pixel_shuffle}")
        self.factor = cfg.pixel_shuffle
        width = in_dim * self.factor**2
        if cfg.kind == "linear":
            self.net: nn.Module = nn.Linear(width, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(width, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def tokens_out(self, tokens_per_image: int) -> int:
        return tokens_per_image // (self.factor**2)

    def forward(self, tokens: torch.Tensor, num_images: int) -> torch.Tensor:
        """[B, N * T, D_enc] -> [B, N * T', D_llm]."""
        if self.factor > 1:
            b, nt, d = tokens.shape
            x = pixel_shuffle(tokens.reshape(b * num_images, nt // num_images, d), self.factor)
            tokens = x.reshape(b, -1, x.shape[-1])
        return self.net(tokens)
