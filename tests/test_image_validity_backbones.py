"""Image validity through every registered backbone: the pixels of frames marked invalid never change
a vla's loss, chunk or conditioning (vision_encoder + vit, foundry_vlm with all / last tokens, hf_vlm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_action.testing import assert_invalid_frames_ignored, tiny_vla_node
from foundry_core.export import export_model
from foundry_core.plugins import get_registry
from foundry_core.registry import BuildContext

pytest.importorskip("foundry_vision")

VLM = {
    "name": "vlm",
    "llm": {
        "name": "transformer",
        "dim": 32,
        "n_layers": 1,
        "n_heads": 2,
        "max_seq_len": 128,
        "tokenizer": "byte",
    },
    "encoder": {"name": "vit", "image_size": 32, "patch_size": 16, "width": 32, "depth": 1, "heads": 2},
    "projector": {"kind": "mlp", "pixel_shuffle": 1},
    "max_length": 96,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def _check(backbone, tiny_episodes, readout=0, **fields):
    registry = get_registry()
    torch.manual_seed(0)
    expert = {"name": "flow_matching", "preset": "debug", "inference_steps": 2, "image_readout": readout}
    node = tiny_vla_node(tiny_episodes, expert, backbone, **fields)
    model = registry.build("model", node, BuildContext(registry))
    source = registry.build("data_source", node["data"], BuildContext(registry))
    batch = source.make_batch(np.arange(4), torch.Generator().manual_seed(0))
    batch["image_mask"][2, 3] = False
    assert_invalid_frames_ignored(model, batch)
    return model, batch


def test_vision_encoder_vit(tiny_episodes):
    vit = {"name": "vit", "image_size": 32, "patch_size": 16, "width": 32, "depth": 1, "heads": 2}
    model, batch = _check(
        {"name": "vision_encoder", "encoder": vit}, tiny_episodes, readout=2, use_instruction=False
    )
    _tokens, mask = model.condition(batch)
    assert mask[0].tolist() == [False] * 8 + [True] * 8  # 4 tokens per image; t-1 of anchor 0 masked


@pytest.mark.parametrize("tokens", ["all", "last"])
def test_foundry_vlm(tiny_episodes, tmp_path, tokens):
    registry = get_registry()
    torch.manual_seed(0)
    vlm_dir = export_model(registry.build("model", VLM, BuildContext(registry)), VLM, tmp_path / "vlm")
    _check({"name": "foundry_vlm", "path": str(vlm_dir), "tokens": tokens}, tiny_episodes)


def test_hf_vlm(tiny_episodes, tmp_path):
    from foundry_vision.tiny_hf import build_tiny_hf_vlm

    path = build_tiny_hf_vlm("smolvlm", tmp_path / "hf", layers=1)
    _check({"name": "hf_vlm", "path": str(path)}, tiny_episodes)
