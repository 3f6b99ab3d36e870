"""``keypoint_cnn`` encoder: a small CNN whose feature maps become 2-D keypoints by a spatial softmax.

The visuomotor encoder of Levine et al. (2016, "End-to-end training of deep visuomotor policies"),
kept by robomimic and Diffusion Policy: convolutions, then a 1x1 convolution to K maps, and for each
map the softmax-weighted mean pixel position, i.e. K (x, y) points in [-1, 1]. Why: a policy must
know *where* things are, and this bottleneck outputs exactly that, by construction and from the first
step; a ViT from scratch has to learn to carry position through attention (on push_to_target its
policy reached the block but pushed it along a wrong direction).

uint8 images [B, N, 3, H, W] (N cameras, one shared CNN) -> K tokens per image, [B, N * K, width]:
token k = a linear map of keypoint k's (x, y) + a learned embedding of k + a learned embedding of the
camera (so tokens of different cameras and keypoints differ where their coordinates agree).

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_encoders.py -k keypoint``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext
from foundry_vision.preprocess import check_images, resize_normalize


def spatial_softmax(maps: torch.Tensor, log_temperature: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] feature maps -> [B, K, 2] expected (x, y) in [-1, 1] of each map's softmax.

    ``log_temperature`` [K]: the softmax is over ``maps / exp(log_temperature)``, so a lower value
    makes a sharper (more argmax-like) point."""
    b, k, h, w = maps.shape
    weights = torch.softmax((maps / log_temperature.exp()[None, :, None, None]).flatten(2), dim=-1)
    ys, xs = torch.meshgrid(
        torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype),
        torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype),
        indexing="ij",
    )
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # [H*W, 2]
    return weights @ grid


class KeypointCNN(nn.Module):
    """CNN + spatial softmax encoder; see the module docstring."""

    @dataclass(kw_only=True)
    class Config:
        image_size: int = 64
        #: Output channels of the 3x3 convolutions (each followed by GroupNorm + ReLU); the first has
        #: stride 2, so the keypoint maps have image_size / 2 pixels a side.
        channels: list[int] = field(default_factory=lambda: [16, 32, 32])
        #: Keypoints (= tokens) per image.
        keypoints: int = 32
        #: Token width.
        width: int = 64
        #: Most cameras per sample (size of the learned camera embedding).
        max_cameras: int = 8
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
        std: tuple[float, float, float] = (0.229, 0.224, 0.225)

        def validate(self) -> None:
            if self.image_size < 8 or self.image_size % 2:
                raise ConfigError(f"image_size must be an even number >= 8, got {self.image_size}")
            if not self.channels or any(c < 1 for c in self.channels):
                raise ConfigError(
                    f"channels must be a non-empty list of positive numbers, got {self.channels}"
                )
            for name in ("keypoints", "width", "max_cameras"):
                if getattr(self, name) < 1:
                    raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.width
        self.tokens_per_image = cfg.keypoints
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(cfg.channels):
            layers += [
                nn.Conv2d(c_in, c, kernel_size=3, stride=2 if i == 0 else 1, padding=1),
                nn.GroupNorm(_groups(c), c),
                nn.ReLU(),
            ]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        self.to_maps = nn.Conv2d(c_in, cfg.keypoints, kernel_size=1)
        self.log_temperature = nn.Parameter(torch.zeros(cfg.keypoints))
        self.point_in = nn.Linear(2, cfg.width)
        self.keypoint = nn.Parameter(torch.randn(cfg.keypoints, cfg.width) * 0.02)
        self.camera = nn.Parameter(torch.zeros(cfg.max_cameras, 1, cfg.width))

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> KeypointCNN:
        return cls(cfg)

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, N, 3, H, W] -> keypoints [B, N, K, 2], (x, y) in [-1, 1] (x right, y down)."""
        check_images(images, "keypoint_cnn")
        b, n = images.shape[:2]
        if n > self.cfg.max_cameras:
            raise DataError(f"keypoint_cnn: {n} images per sample but max_cameras is {self.cfg.max_cameras}")
        size = self.cfg.image_size
        x = resize_normalize(images.to(self.keypoint.device), size, self.cfg.mean, self.cfg.std)
        maps = self.to_maps(self.trunk(x.reshape(b * n, 3, size, size).to(self.keypoint.dtype)))
        return spatial_softmax(maps, self.log_temperature).view(b, n, self.cfg.keypoints, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, N, 3, H, W] -> float [B, N * keypoints, width]."""
        points = self.keypoints(images)
        b, n = points.shape[:2]
        tokens = self.point_in(points) + self.keypoint + self.camera[:n][None]
        return tokens.reshape(b, n * self.cfg.keypoints, self.cfg.width)


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when they divide the channels (robomimic/Diffusion Policy use 16 of
    ResNet's 64+ channels; ours are fewer), else the largest divisor up to 8."""
    return max(g for g in range(1, 9) if channels % g == 0)
