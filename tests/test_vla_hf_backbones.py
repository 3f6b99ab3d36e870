"""Hugging Face VLMs as VLA backbones: the image read-out finds their image tokens, every expert trains on
them, and a processor that would change the image token count is a clear error.

Tiny random folders of each family are built here (no Hub); the robot data is the 2-camera 32x32 store.
"""

from __future__ import annotations

import os

import pytest
import torch

from foundry_core.errors import ConfigError, DataError
from foundry_core.plugins import get_registry
from foundry_core.registry import BuildContext

pytest.importorskip("foundry_vision")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: tiny_hf family name -> the model_type the backbone reports
FAMILIES = {
    "qwen3_vl": "qwen3_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "smolvlm": "smolvlm",
    "paligemma2": "paligemma",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    from foundry_vision.tiny_hf import build_tiny_hf_vlm

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            # 64 px: Qwen sees a 2 x 2 token grid per image, Idefics3 4 tokens, PaliGemma 8 x 8
            cache[family] = build_tiny_hf_vlm(family, tmp_path_factory.mktemp(family), image_size=64)
        return cache[family]

    return get


def _node(folder, store, expert="flow_matching", readout=4, **backbone):
    return {
        "name": "vla",
        "backbone": {"name": "hf_vlm", "path": str(folder), **backbone},
        "expert": {"name": expert, "preset": "debug", "image_readout": readout},
        "data": {
            "name": "zarr_episodes",
            "path": str(store),
            "past": 1,
            "future": 3,
            "image_offsets": [-1, 0],
            "image_size": 64,
        },
    }


def _batch(registry, node, n=4):
    source = registry.build("data_source", node["data"], BuildContext(registry))
    return next(source.batches(n, rank=0, world_size=1, seed=0))


def _train(model, batch, steps):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(steps):
        loss, metrics = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["action_loss"])
    return losses


@pytest.mark.parametrize("family", FAMILIES)
def test_vla_on_each_family_reads_out_images_trains_and_predicts(family, hf_dirs, tiny_episodes):
    registry = get_registry()
    torch.manual_seed(0)
    node = _node(hf_dirs(family), tiny_episodes)
    model = registry.build("model", node, BuildContext(registry))
    backbone = model.backbone
    assert backbone.model_type == FAMILIES[family]
    batch = _batch(registry, node)
    # the span is where the processor really put the image tokens of the batch's 4 images
    first, count = model.expert.dims.image_span
    inputs = backbone._process(batch["images"], backbone._texts(4, model.prompts(batch)))
    image_positions = (inputs["input_ids"][0] == backbone.hf.config.image_token_id).nonzero().squeeze(1)
    assert int(image_positions[0]) == first and int(image_positions[-1]) == first + count - 1
    assert len(image_positions) >= 4  # at least one token per image
    readout = model.expert.net.readout_out.weight
    before = readout.detach().clone()
    losses = _train(model, batch, 3)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert not torch.equal(readout.detach(), before)  # the read-out of the HF image tokens learns
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters()
    )  # and the VLM too
    out = model.predict(batch)
    assert out.shape == (4, 5, 10) and torch.isfinite(out).all()
    assert model.flops_per_sample(batch) > 0


@pytest.mark.parametrize("expert", ["diffusion", "l1_regression"])
def test_every_expert_reads_out_a_qwen3_vl_backbone(expert, hf_dirs, tiny_episodes):
    registry = get_registry()
    torch.manual_seed(0)
    node = _node(hf_dirs("qwen3_vl"), tiny_episodes, expert)
    model = registry.build("model", node, BuildContext(registry))
    batch = _batch(registry, node)
    losses = _train(model, batch, 12)
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert model.predict(batch).shape == (4, 5, 10)


def test_image_size_the_processor_would_count_differently_is_a_clear_error(hf_dirs, tiny_episodes):
    registry = get_registry()
    node = _node(hf_dirs("qwen3_vl"), tiny_episodes)
    model = registry.build("model", node, BuildContext(registry))
    # a real Qwen processor keeps the input's size within a pixel budget: let this one do that too
    model.backbone.processor.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
    batch = _batch(registry, node)
    model.compute_loss(batch)  # 64 x 64: the size the read-out was built for
    batch["images"] = torch.nn.functional.interpolate(batch["images"].flatten(0, 1).float(), size=(128, 128))
    batch["images"] = batch["images"].to(torch.uint8).view(4, 4, 3, 128, 128)
    with pytest.raises(DataError, match=r"qwen3_vl.*built for 4 images of 64x64.*128x128.*image_size: 64"):
        model.compute_loss(batch)


def test_tokens_last_or_no_size_cannot_give_a_span(hf_dirs, tiny_episodes):
    registry = get_registry()
    with pytest.raises(ConfigError, match="tokens: last keeps no image tokens"):
        registry.build(
            "model", _node(hf_dirs("smolvlm"), tiny_episodes, tokens="last"), BuildContext(registry)
        )
    backbone = registry.build(
        "backbone", {"name": "hf_vlm", "path": str(hf_dirs("smolvlm"))}, BuildContext(registry)
    )
    with pytest.raises(ConfigError, match=r"hf_vlm \(smolvlm\): image_token_span needs the input image size"):
        backbone.image_token_span(2)
