"""A tiny self-contained backbone (conv patch tokens + a byte-level prompt token) for tests and benchmarks.

It implements :class:`foundry_core.interfaces.Backbone` without foundry-vision, so foundry-action's
tests and ``benchmarks/policy_latency.py`` run on their own. It is deliberately not registered by
the plugin: tests register it on an isolated plugin manager (``register_tiny_backbone(pm)``).
Test: ``uv run pytest packages/foundry-action/tests/test_action_vla.py``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TinyBackbone(nn.Module):
    """images uint8 [B, N, 3, H, W] + prompts -> tokens [B, N * grid^2 + 1, width]."""

    @dataclass(kw_only=True)
    class Config:
        width: int = 32
        #: Each image is pooled to grid x grid tokens.
        grid: int = 2

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.width
        self.conv = nn.Sequential(
            nn.Conv2d(3, cfg.width, 5, stride=2, padding=2), nn.GELU(), nn.Conv2d(cfg.width, cfg.width, 3, stride=2, padding=1)
        )
        self.slot = nn.Embedding(64, cfg.width)  # which image slot (camera x time)
        self.byte_emb = nn.Embedding(256, cfg.width)

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any) -> TinyBackbone:
        return cls(cfg)

    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = images.shape[:2]
        x = images.flatten(0, 1).float() / 127.5 - 1.0
        x = F.adaptive_avg_pool2d(self.conv(x), self.cfg.grid)  # [B*N, W, g, g]
        x = x.flatten(2).transpose(1, 2).reshape(b, n, -1, self.out_dim)
        x = (x + self.slot.weight[:n, None]).reshape(b, -1, self.out_dim)
        ids = [torch.tensor(list(p.encode()[:64]) or [0]) for p in prompts]
        text = torch.stack([self.byte_emb(i.to(x.device)).mean(0) for i in ids])[:, None]
        tokens = torch.cat([x, text], dim=1)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def image_token_span(self, num_images: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(first, count) of the image tokens: grid^2 per image, before the prompt token."""
        return 0, num_images * self.cfg.grid**2


def register_tiny_backbone(pm: Any, name: str = "tiny_test") -> None:
    """Register ``TinyBackbone`` as backbone ``name`` on a plugin manager (tests, benchmarks)."""
    from foundry_core.hookspecs import hookimpl

    plugin = types.ModuleType(f"foundry_action_tiny_backbone_{name}")

    @hookimpl
    def register_backbones(register: Any) -> None:
        register(name, TinyBackbone, description="tiny conv backbone for tests")

    plugin.register_backbones = register_backbones  # type: ignore[attr-defined]
    pm.register(plugin, name=f"tiny-backbone-{name}")
