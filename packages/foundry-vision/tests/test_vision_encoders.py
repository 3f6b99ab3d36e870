"""Encoders (vit, keypoint_cnn, hf_vision_encoder), the projector and freezing by pattern."""

from __future__ import annotations

import pytest
import torch

from foundry_core.errors import ComponentError, ConfigError
from foundry_core.registry import BuildContext
from foundry_vision.encoders.projector import Projector, ProjectorConfig, pixel_shuffle
from foundry_vision.testing import TINY_VIT
from foundry_vision.tiny_hf import build_tiny_hf_encoder


def _images(b=2, n=3, h=40, w=36):
    return torch.randint(0, 256, (b, n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_vit_multi_camera_tokens(vision_registry):
    vit = vision_registry.build("encoder", TINY_VIT, BuildContext(vision_registry))
    out = vit(_images())
    assert out.shape == (2, 3 * 16, 32) and vit.out_dim == 32 and vit.tokens_per_image == 16
    # the camera embedding makes the same image give different tokens in different camera slots
    with torch.no_grad():
        vit.camera.normal_()
    same = _images(1, 1).repeat(1, 2, 1, 1, 1)
    toks = vit(same)
    assert not torch.allclose(toks[:, :16], toks[:, 16:])


def test_vit_config_errors(vision_registry):
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        vision_registry.build("encoder", {**TINY_VIT, "image_size": 30})
    with pytest.raises(ConfigError, match="multiple of 4"):
        vision_registry.build("encoder", {**TINY_VIT, "width": 18, "heads": 2})
    with pytest.raises(ComponentError, match="did you mean 'vit'"):
        vision_registry.build("encoder", {"name": "vitt"})


def test_pixel_shuffle_projector():
    x = torch.arange(2 * 16 * 4, dtype=torch.float32).view(2, 16, 4)
    y = pixel_shuffle(x, 2)
    assert y.shape == (2, 4, 16)
    assert torch.equal(y[0, 0], torch.cat([x[0, 0], x[0, 1], x[0, 4], x[0, 5]]))  # a 2x2 neighbourhood
    proj = Projector(ProjectorConfig(kind="linear", pixel_shuffle=2), in_dim=4, out_dim=8)
    assert proj(torch.randn(2, 2 * 16, 4), num_images=2).shape == (2, 8, 8) and proj.tokens_out(16) == 4


@pytest.mark.parametrize("family", ["siglip", "dinov2"])
@pytest.mark.parametrize("use_processor", [True, False])
def test_hf_vision_encoder_patch_tokens(vision_registry, tmp_path, family, use_processor):
    path = build_tiny_hf_encoder(family, tmp_path / family)
    enc = vision_registry.build("encoder", {"name": "hf_vision_encoder", "path": str(path), "use_processor": use_processor})
    assert (enc.processor is not None) == use_processor
    out = enc(_images(2, 2, 32, 32))
    assert out.shape == (2, 2 * 16, 32) and enc.tokens_per_image == 16  # CLS dropped for DINOv2


def test_hf_vision_encoder_missing_folder(vision_registry, tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        vision_registry.build("encoder", {"name": "hf_vision_encoder", "path": str(tmp_path)})


def test_vit_position_embedding_starts_as_2d_sincos_and_encodes_the_grid():
    from foundry_vision.encoders.vit import ViT, sincos_2d

    vit = ViT(ViT.Config(image_size=32, patch_size=8, width=32, depth=1, heads=2))
    table = sincos_2d(4, 32)
    torch.testing.assert_close(vit.pos.data[0], table)
    assert vit.pos.requires_grad  # learned, only initialized from the table
    # every patch position is distinct, and row/column are linear functions of the embedding
    assert torch.cdist(table, table).add(torch.eye(16) * 10).min() > 0.1
    coords = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(16, 2)
    design = torch.cat([table, torch.ones(16, 1)], 1).double()
    fit = torch.linalg.lstsq(design, coords.double()).solution
    assert (design @ fit - coords).abs().max() < 1e-6


def test_keypoint_cnn_tokens_and_camera_embedding(vision_registry):
    cfg = {"name": "keypoint_cnn", "image_size": 32, "channels": [8, 8], "keypoints": 6, "width": 16}
    enc = vision_registry.build("encoder", cfg, BuildContext(vision_registry))
    out = enc(_images())  # 40x36 images are resized to 32
    assert out.shape == (2, 3 * 6, 16) and enc.out_dim == 16 and enc.tokens_per_image == 6
    with torch.no_grad():
        enc.camera.normal_()
    toks = enc(_images(1, 1).repeat(1, 2, 1, 1, 1))
    assert not torch.allclose(toks[:, :6], toks[:, 6:])


def test_spatial_softmax_finds_the_bright_pixel():
    from foundry_vision.encoders.keypoint_cnn import spatial_softmax

    maps = torch.zeros(1, 2, 5, 9)
    maps[0, 0, 0, 8] = 50.0  # top right
    maps[0, 1, 4, 0] = 50.0  # bottom left
    points = spatial_softmax(maps, torch.zeros(2))
    torch.testing.assert_close(points[0], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), atol=1e-4, rtol=0)
    # a higher temperature spreads the softmax: the point moves toward the centre
    assert spatial_softmax(maps, torch.full((2,), 4.0))[0, 0, 0] < 0.5


def test_keypoint_cnn_moves_its_keypoints_with_the_object(vision_registry):
    """A red square shifted right shifts (on average) the keypoints right: the tokens carry where."""
    enc = vision_registry.build(
        "encoder", {"name": "keypoint_cnn", "image_size": 32, "channels": [8], "keypoints": 4, "width": 8}
    )
    with torch.no_grad():  # one map that responds to red: its softmax point is the square's centre
        enc.to_maps.weight.zero_()
        enc.to_maps.bias.zero_()
        enc.trunk[0].weight.zero_()
        enc.trunk[0].weight[:, 0] = 1.0  # red channel
        enc.to_maps.weight[:, :] = 20.0
    left = torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8)
    right = left.clone()
    left[..., 0, 12:16, 2:6] = 255
    right[..., 0, 12:16, 24:28] = 255
    x_left = enc.keypoints(left)[0, 0, :, 0].mean()
    x_right = enc.keypoints(right)[0, 0, :, 0].mean()
    assert x_left < -0.3 and x_right > 0.3


def test_keypoint_cnn_config_errors(vision_registry):
    with pytest.raises(ConfigError, match="channels"):
        vision_registry.build("encoder", {"name": "keypoint_cnn", "channels": []})
    with pytest.raises(ConfigError, match="keypoints must be >= 1"):
        vision_registry.build("encoder", {"name": "keypoint_cnn", "keypoints": 0})
    with pytest.raises(ConfigError, match="even number"):
        vision_registry.build("encoder", {"name": "keypoint_cnn", "image_size": 33})
