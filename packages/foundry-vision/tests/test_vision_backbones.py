"""Backbones built by name only (as the action package does), and the import-light plugin."""

from __future__ import annotations

import subprocess
import sys

import torch

from foundry_core.interfaces import Backbone, DataSource, Encoder
from foundry_core.registry import BuildContext
from foundry_vision.testing import TINY_VIT
from foundry_vision.tiny_hf import build_tiny_hf_encoder


def test_vision_encoder_backbone_returns_all_patch_tokens(vision_registry, tmp_path):
    ctx = BuildContext(vision_registry)
    for enc in (TINY_VIT, {"name": "hf_vision_encoder", "path": str(build_tiny_hf_encoder("dinov2", tmp_path / "d"))}):
        bb = vision_registry.build("backbone", {"name": "vision_encoder", "encoder": enc}, ctx)
        assert isinstance(bb, Backbone)
        images = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
        tokens, mask = bb.encode(images, ["ignored", "prompts"])
        assert tokens.shape == (2, 3 * 16, bb.out_dim) and bool(mask.all())
        assert bb.image_token_span(3) == (0, 3 * 16)
    # export + rebuild without the original folder (as the vla does: pretrained_dir = <export>/backbone)
    fields = bb.export_artifacts(str(tmp_path / "export"))
    assert fields["encoder"]["path"] == "encoder"
    rebuilt = vision_registry.build("backbone", {"name": "vision_encoder", **fields},
                                    BuildContext(vision_registry, pretrained_dir=str(tmp_path / "export")))
    rebuilt.load_state_dict(bb.state_dict())
    assert torch.equal(rebuilt.encode(images, ["", ""])[0], bb.encode(images, ["", ""])[0])
    frozen = vision_registry.build("backbone", {"name": "vision_encoder", "encoder": TINY_VIT, "freeze": ["encoder.*"]}, ctx)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_components_satisfy_the_contracts(vision_registry):
    ctx = BuildContext(vision_registry)
    assert isinstance(vision_registry.build("encoder", TINY_VIT, ctx), Encoder)
    src = vision_registry.build("data_source", {"name": "synthetic_image_caption", "num_samples": 4}, ctx)
    assert isinstance(src, DataSource)
    names = {s.name for s in vision_registry.specs() if s.provider == "foundry-vision"}
    assert names == {"vit", "keypoint_cnn", "hf_vision_encoder", "vlm", "hf_vlm", "foundry_vlm", "vision_encoder",
                     "wds_image_caption", "synthetic_image_caption"}


def test_plugin_module_imports_no_torch():
    code = "import sys, foundry_vision.plugin; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vision_encoder_with_instruction_bytes(vision_registry):
    """``text: bytes``: one token per UTF-8 byte after the image tokens; the instruction changes the output."""
    ctx = BuildContext(vision_registry)
    torch.manual_seed(0)
    bb = vision_registry.build("backbone", {"name": "vision_encoder", "encoder": TINY_VIT, "text": "bytes",
                                            "max_text_bytes": 8}, ctx)  # fmt: skip
    assert bb.reads_prompts
    images = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8)
    tokens, mask = bb.encode(images, ["open", "close the drawer now"])
    assert tokens.shape == (2, 16 + 8, bb.out_dim) and bb.image_token_span(1) == (0, 16)
    assert mask[0].tolist() == [True] * 16 + [True] * 4 + [False] * 4 and bool(mask[1].all())  # cut at 8 bytes
    other, _ = bb.encode(images, ["shut", "close the drawer now"])
    assert not torch.equal(other[0, 16:20], tokens[0, 16:20]) and torch.equal(other[0, :16], tokens[0, :16])
    plain = vision_registry.build("backbone", {"name": "vision_encoder", "encoder": TINY_VIT}, ctx)
    assert not plain.reads_prompts

