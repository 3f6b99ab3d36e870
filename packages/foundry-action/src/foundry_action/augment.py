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
    """uint8 [..., 3, H, W] -> uint8 [..., 3, size, size] (bilinear, antialiased; uint8 kernels are fast).

    Channels-last input (a permuted view of decoded HWC frames) is resized in place by the faster
    channels-last kernel and comes back channels-last; anything else is made contiguous first.
    """
    if images.shape[-2:] == (size, size):
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    if not flat.is_contiguous(memory_format=torch.channels_last):
        flat = flat.contiguous()
    out = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*lead, 3, size, size)


#: Images per chunk of the channels-last path (16 crops of 224x224 are ~2 MB: they stay in cache).
CHUNK = 16


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random crop (resized back) + brightness/contrast(/saturation) jitter of uint8 [B, N, 3, H, W].

    One draw per image; returns a contiguous tensor. Kept cheap on CPU: brightness and contrast become
    one 256-entry lookup table per image, applied while copying the crop out (one uint8 pass; the
    contrast mean is taken on every 8th row of the image), and the crop is resized back in uint8
    (bilinear). Images laid out channels-last in memory (e.g. ``hwc.permute(0, 1, 4, 2, 3)`` of
    decoded frames) are read in place, resized by the channels-last kernel (about twice as fast as the
    planar one) and written into the CHW output chunk by chunk, so no full-size intermediate exists;
    planar input takes one pass per step. No float copy is made unless saturation jitter is on.
    """
    if not cfg.enabled:
        return images
    b, n, c, h, w = images.shape
    m = b * n
    flat = images.reshape(m, c, h, w)  # a view for contiguous and for channels-last strides
    if cfg.saturation > 0:
        sat = factor_tensor(m, cfg.saturation, generator)
        out = flat.float()
        gray = 0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]
        flat = out.mul_(sat).add_(gray * (1 - sat)).clamp_(0, 255).to(torch.uint8)
    ch, cw = (max(1, round(h * cfg.crop_scale)), max(1, round(w * cfg.crop_scale))) if cfg.crop_scale < 1.0 else (h, w)
    ys = torch.randint(0, h - ch + 1, (m,), generator=generator).tolist()
    xs = torch.randint(0, w - cw + 1, (m,), generator=generator).tolist()
    bright = factor_tensor(m, cfg.brightness, generator).numpy().reshape(m, 1)
    contrast = factor_tensor(m, cfg.contrast, generator).numpy().reshape(m, 1)
    channels_last = flat.permute(0, 2, 3, 1).is_contiguous()
    # strided crops of a permuted (neither planar nor channels-last) view are very slow: copy it once
    src = flat.permute(0, 2, 3, 1).numpy() if channels_last else flat.contiguous().numpy()
    rows = src[:, ::8] if channels_last else src[:, :, ::8]  # same pixels in both layouts
    mean = rows.reshape(m, -1).sum(axis=1, dtype=np.uint64).astype(np.float32)[:, None] / rows[0].size
    # y = bright * (contrast * (x - mean) + mean): one lookup table per image, [m, 256]
    levels = np.arange(256, dtype=np.float32)[None, :]
    luts = np.clip(np.rint(bright * (contrast * (levels - mean) + mean)), 0, 255).astype(np.uint8)
    if channels_last:  # chunk by chunk, so crops and resized images stay in cache until written out as CHW
        out = torch.empty((m, c, h, w), dtype=torch.uint8)
        crops = np.empty((min(CHUNK, m), ch, cw, c), dtype=np.uint8)
        for start in range(0, m, CHUNK):
            stop = min(start + CHUNK, m)
            for j, i in enumerate(range(start, stop)):  # mode="clip": no bounds check, no buffered out (uint8 < 256)
                np.take(luts[i], src[i, ys[i] : ys[i] + ch, xs[i] : xs[i] + cw], out=crops[j], mode="clip")
            part = torch.from_numpy(crops[: stop - start]).permute(0, 3, 1, 2)  # channels-last: the fast kernel
            if (ch, cw) != (h, w):
                part = F.interpolate(part, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
            out[start:stop].copy_(part)
        return out.reshape(b, n, c, h, w)
    crops = np.empty((m, c, ch, cw), dtype=np.uint8)
    for i, (y, x) in enumerate(zip(ys, xs)):
        np.take(luts[i], src[i, :, y : y + ch, x : x + cw], out=crops[i], mode="clip")
    out = torch.from_numpy(crops)
    if (ch, cw) != (h, w):
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(b, n, c, h, w)


def factor_tensor(m: int, amount: float, generator: torch.Generator) -> torch.Tensor:
    """``m`` factors uniform in [1 - amount, 1 + amount], shaped [m, 1, 1, 1]."""
    return 1.0 + (torch.rand(m, 1, 1, 1, generator=generator) * 2 - 1) * amount
