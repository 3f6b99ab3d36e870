"""``vit`` encoder: a plain Vision Transformer trained from scratch.

uint8 images [B, N, 3, H, W] (N cameras) are resized and normalized here, cut into patches, given a
learned position embedding (initialized to the 2-D sin-cos table of MAE, so where a patch is can be
read off linearly from step 0: a policy must localize objects long before a random embedding would
have learned the layout) and a learned camera embedding (so tokens of different cameras differ),
and run through pre-norm transformer blocks. Output: patch tokens [B, N * (image_size/patch)^2, width].

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_encoders.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext
from foundry_vision.preprocess import check_images, resize_normalize


class ViTBlock(nn.Module):
    """Pre-norm attention + MLP block (bidirectional attention)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(att)
        return x + self.mlp(self.norm2(x))


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """[grid * grid, width] position table: sin/cos of row and column at geometric frequencies (row-major)."""
    if width % 4:
        raise ValueError(f"the 2-D sin-cos table needs a width that is a multiple of 4, got {width}")
    quarter = width // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for coord in (rows.flatten(), cols.flatten()):
        angles = coord[:, None] * freqs[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class ViT(nn.Module):
    """Vision Transformer encoder; see the module docstring."""

    @dataclass(kw_only=True)
    class Config:
        image_size: int = 224
        patch_size: int = 16
        width: int = 384
        depth: int = 6
        heads: int = 6
        mlp_ratio: float = 4.0
        #: Most cameras per sample (size of the learned camera embedding).
        max_cameras: int = 8
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
        std: tuple[float, float, float] = (0.229, 0.224, 0.225)

        def validate(self) -> None:
            if self.image_size % self.patch_size:
                raise ConfigError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
            if self.width % self.heads:
                raise ConfigError(f"width {self.width} must be a multiple of heads {self.heads}")
            if self.width % 4:
                raise ConfigError(f"width {self.width} must be a multiple of 4 (2-D sin-cos position embedding)")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.width
        self.grid = cfg.image_size // cfg.patch_size
        self.tokens_per_image = self.grid * self.grid
        self.patch = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos = nn.Parameter(sincos_2d(self.grid, cfg.width)[None])
        self.camera = nn.Parameter(torch.zeros(cfg.max_cameras, 1, cfg.width))
        self.blocks = nn.ModuleList(ViTBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> ViT:
        return cls(cfg)

    def block_types(self) -> tuple[type[nn.Module], ...]:
        return (ViTBlock,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, N, 3, H, W] -> float [B, N * tokens_per_image, width]."""
        check_images(images, "vit")
        b, n = images.shape[:2]
        if n > self.cfg.max_cameras:
            raise DataError(f"vit: {n} images per sample but max_cameras is {self.cfg.max_cameras}")
        x = resize_normalize(images.to(self.pos.device), self.cfg.image_size, self.cfg.mean, self.cfg.std)
        x = self.patch(x.reshape(b * n, 3, self.cfg.image_size, self.cfg.image_size).to(self.pos.dtype))
        x = x.flatten(2).transpose(1, 2) + self.pos  # [B*N, T, D]
        x = x.view(b, n, self.tokens_per_image, -1) + self.camera[:n][None]
        x = x.reshape(b * n, self.tokens_per_image, -1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).reshape(b, n * self.tokens_per_image, -1)
