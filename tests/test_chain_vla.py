"""VLM -> VLA chain: a VLA whose backbone is ``foundry_vlm`` loads the VLM export's weights exactly,
co-trains on caption batches through the VLM's loss, and its own export is self-contained."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from foundry_core.export import export_model, load_pretrained
from foundry_core.plugins import get_registry
from foundry_core.registry import BuildContext

pytest.importorskip("foundry_vision")

VLM = {
    "name": "vlm",
    "llm": {"name": "transformer", "dim": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 128, "tokenizer": "byte"},
    "encoder": {"name": "vit", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2},
    "projector": {"kind": "mlp", "pixel_shuffle": 1},
    "max_length": 96,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def test_vlm_to_vla_chain(tiny_episodes, tmp_path):
    registry = get_registry()
    torch.manual_seed(0)
    vlm = registry.build("model", VLM, BuildContext(registry))
    vlm_dir = export_model(vlm, VLM, tmp_path / "vlm_export")
    reference = {k: v.clone() for k, v in load_pretrained(vlm_dir, registry=registry).state_dict().items()}

    node = {
        "name": "vla",
        "backbone": {"name": "foundry_vlm", "path": str(vlm_dir)},  # VLM -> VLA in one line
        "expert": {"name": "flow_matching", "preset": "debug", "inference_steps": 2},
        "data": {"name": "zarr_episodes", "path": str(tiny_episodes), "past": 1, "future": 3},
    }
    torch.manual_seed(1)
    vla = registry.build("model", node, BuildContext(registry))
    got = vla.backbone.vlm.state_dict()
    assert set(got) == set(reference)
    for name, tensor in reference.items():
        torch.testing.assert_close(got[name], tensor, msg=f"VLM weight {name} was not loaded")

    # robot batches train the expert (and the backbone) ...
    source = registry.build("data_source", node["data"], BuildContext(registry))
    batch = next(source.batches(4, rank=0, world_size=1, seed=0))
    loss, metrics = vla.compute_loss(batch)
    loss.backward()
    assert "action_loss" in metrics and vla.expert.net.out.weight.grad is not None
    # ... and caption batches are delegated to the VLM's own loss (co-training)
    vla.zero_grad()
    caption = {"modality": "image_caption", "images": torch.randint(0, 255, (2, 1, 3, 32, 32), dtype=torch.uint8),
               "captions": ["a red square", "a blue circle"]}
    loss, _ = vla.compute_loss(caption)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in vla.backbone.parameters())

    # the VLA export rebuilds without the VLM export or the data
    vla_dir = export_model(vla, node, tmp_path / "vla_export")
    shutil.rmtree(vlm_dir)
    tiny_episodes.rename(tmp_path / "moved.zarr")
    from foundry_action.policy import Policy

    policy = Policy.from_pretrained(vla_dir, registry=registry)
    for name, tensor in vla.state_dict().items():
        torch.testing.assert_close(policy.model.state_dict()[name], tensor, msg=name)
    obs = {"images": {c: np.zeros((32, 32, 3), np.uint8) for c in ("scene", "wrist")},
           "proprio": np.zeros(10, np.float32), "instruction": "do thing number 0"}
    assert policy.act(obs).shape == (4, 10)
