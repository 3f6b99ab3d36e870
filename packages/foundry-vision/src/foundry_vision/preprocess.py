"""Image preprocessing done by us (torch only): resize + normalize for models, and train-time augmentation.

Used when no Hugging Face image processor is given (``vit``, a HF encoder folder without
``preprocessor_config.json``) and by the image-caption data source (random resized crop, color jitter).

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_preprocess.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from foundry_core.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: torch.Tensor, where: str) -> None:
    """Images must be uint8 [B, N, 3, H, W]; anything else is an error naming the caller."""
    if images.dtype != torch.uint8 or images.dim() != 5 or images.shape[2] != 3:
        raise DataError(f"{where}: expected images uint8 [B, N, 3, H, W], got {images.dtype} {tuple(images.shape)}")


def resize_normalize(
    images: torch.Tensor, size: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float [..., 3, size, size] resized (bilinear, antialiased) and normalized."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).reshape(*lead, 3, size, size)


@dataclass(kw_only=True)
class AugmentConfig:
    """Train-time augmentation of image-caption samples (applied on uint8 CHW tensors).

    Attributes:
        random_resized_crop: crop area fraction range ``[min, max]`` (``null`` = plain resize).
        ratio: aspect-ratio range of the crop.
        color_jitter: strength of brightness/contrast/saturation jitter (0 = off).
        hflip: probability of a horizontal flip (off by default: captions say "left"/"right").
    """

    random_resized_crop: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float = 0.0
    hflip: float = 0.0

    def validate(self) -> None:
        if self.random_resized_crop is not None:
            lo, hi = self.random_resized_crop
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"random_resized_crop must satisfy 0 < min <= max <= 1, got {self.random_resized_crop}")
        if self.color_jitter < 0 or not 0 <= self.hflip <= 1:
            raise ConfigError("color_jitter must be >= 0 and hflip a probability")


def _crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator) -> tuple[int, int, int, int]:
    area = h * w
    log_r = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
        aspect = float(torch.exp(torch.empty(1).uniform_(float(log_r[0]), float(log_r[1]), generator=g)))
        cw, ch = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def augment_resize(image: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, size, size]: optional random crop, flip and color jitter, then resize.

    All randomness comes from ``g`` so a data source seeded per sample is deterministic.
    """
    x = image
    if cfg.random_resized_crop is not None:
        top, left, ch, cw = _crop_box(x.shape[1], x.shape[2], cfg.random_resized_crop, cfg.ratio, g)
        x = x[:, top : top + ch, left : left + cw]
    x = x.float()[None] / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    if cfg.hflip > 0 and float(torch.rand(1, generator=g)) < cfg.hflip:
        x = x.flip(-1)
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        b, c, s = (1 + (torch.rand(3, generator=g) * 2 - 1) * j).tolist()
        x = x * b
        x = (x - x.mean()) * c + x.mean()
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = (x - gray) * s + gray
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)
