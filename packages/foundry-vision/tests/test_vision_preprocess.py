"""Our own preprocessing: resize/normalize and seeded augmentation."""

from __future__ import annotations

import pytest
import torch

from foundry_core.config import parse_dataclass
from foundry_core.errors import ConfigError, DataError
from foundry_vision.preprocess import AugmentConfig, augment_resize, check_images, resize_normalize


def test_resize_normalize_shape_and_values():
    img = torch.full((2, 3, 3, 20, 30), 255, dtype=torch.uint8)
    out = resize_normalize(img, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.shape == (2, 3, 3, 16, 16)
    assert torch.allclose(out, torch.ones_like(out))


def test_augment_is_deterministic_per_seed_and_varies_across_seeds():
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    cfg = AugmentConfig(random_resized_crop=(0.3, 1.0), color_jitter=0.4)
    a = augment_resize(img, 32, cfg, torch.Generator().manual_seed(1))
    b = augment_resize(img, 32, cfg, torch.Generator().manual_seed(1))
    c = augment_resize(img, 32, cfg, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == (3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_augment_is_plain_resize():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(augment_resize(img, 32, AugmentConfig(), torch.Generator()), img)


def test_bad_config_and_images():
    with pytest.raises(ConfigError, match="random_resized_crop"):
        parse_dataclass(AugmentConfig, {"random_resized_crop": [0.8, 0.2]})
    with pytest.raises(DataError, match="uint8"):
        check_images(torch.zeros(1, 1, 3, 8, 8), "here")
