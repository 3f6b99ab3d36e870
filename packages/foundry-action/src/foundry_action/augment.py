"""Image resize and training augmentation (random crop + colour jitter) on uint8 torch batches.

Everything draws from an explicit ``torch.Generator`` so a batch is reproducible from (seed, batch
index): resumed runs see the same augmented images. Off by default.
Test: ``uv run pytest packages/foundry-action/tests/test_action_sampler.py -k augment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from foundry_core.errors import ConfigError


@dataclass(kw_only=True)
class AugmentConfig:
    """``enabled: true`` turns on a random crop (``crop_scale`` of each side, resized back) and jitter."""

    enabled: bool = False
    crop_scale: float = 0.9
    brightness: float = 0.2
    contrast: float = 0.2
    #: Off by default: it mixes channels and costs as much as the rest of the augmentation.
    saturation: float = 0.0

    def validate(self) -> None:
        if not 0.1 <= self.crop_scale <= 1.0:
            raise ConfigError(f"augment.crop_scale must be in [0.1, 1], got {self.crop_scale}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {getattr(self, name)}")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> uint8 [..., 3, size, size] (bilinear, antialiased; uint8 kernels are fast)."""
    if images.shape[-2:] == (size, size):
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:]).contiguous()
    out = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*lead, 3, size, size)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random crop (resized back) + brightness/contrast(/saturation) jitter of uint8 [B, N, 3, H, W].

    One draw per image. Kept cheap on CPU: the crop is resized in uint8 (bilinear), brightness and
    contrast become one 256-entry lookup table per image (the contrast mean is taken on a 1/16
    subsample), so no full-size float copy is made unless saturation jitter is on.
    """
    if not cfg.enabled:
        return images
    b, n, c, h, w = images.shape
    m = b * n
    flat = images.contiguous().reshape(m, c, h, w)  # strided crops of a permuted view are very slow
    if cfg.saturation > 0:
        sat = factor_tensor(m, cfg.saturation, generator)
        out = flat.float()
        gray = 0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]
        flat = out.mul_(sat).add_(gray * (1 - sat)).clamp_(0, 255).to(torch.uint8)
    ch, cw = (max(1, round(h * cfg.crop_scale)), max(1, round(w * cfg.crop_scale))) if cfg.crop_scale < 1.0 else (h, w)
    ys = torch.randint(0, h - ch + 1, (m,), generator=generator).tolist()
    xs = torch.randint(0, w - cw + 1, (m,), generator=generator).tolist()
    bright, contrast = factor_tensor(m, cfg.brightness, generator), factor_tensor(m, cfg.contrast, generator)
    # y = bright * (contrast * (x - mean) + mean) as one 256-entry lookup table per image, applied while
    # copying the crop out (one uint8 pass); the mean is taken on a 1/16 subsample
    src = flat.numpy()
    crops = np.empty((m, c, ch, cw), dtype=np.uint8)
    levels = np.arange(256, dtype=np.float32)
    for i, (y, x) in enumerate(zip(ys, xs)):
        view = src[i, :, y : y + ch, x : x + cw]
        mean = float(view[:, ::4, ::4].mean())
        lut = float(bright[i]) * (float(contrast[i]) * (levels - mean) + mean)
        np.take(np.clip(np.rint(lut), 0, 255).astype(np.uint8), view, out=crops[i])
    out = torch.from_numpy(crops)
    if (ch, cw) != (h, w):
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(b, n, c, h, w)


def factor_tensor(m: int, amount: float, generator: torch.Generator) -> torch.Tensor:
    """``m`` factors uniform in [1 - amount, 1 + amount], shaped [m, 1, 1, 1]."""
    return 1.0 + (torch.rand(m, 1, 1, 1, generator=generator) * 2 - 1) * amount
