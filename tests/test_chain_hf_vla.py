"""HF VLM -> VLA chain: an ``hf_vlm`` fine-tuned by our trainer and exported is a VLA backbone in one line,
the VLA trains through the trainer and exports, and MFU counts the HF VLM and the whole VLA."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from foundry_core.errors import ConfigError
from foundry_core.plugins import get_registry, plugin_manager
from foundry_core.registry import BuildContext
from foundry_core.train.run import train_from_config

pytest.importorskip("foundry_vision")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_finetuned_hf_vlm_export_is_a_vla_backbone_in_one_line(tiny_episodes, tmp_path):
    from foundry_action.policy import Policy
    from foundry_core.testing import run_config
    from foundry_vision.testing import CPU_RUN, SLOW_LR
    from foundry_vision.tiny_hf import build_tiny_hf_vlm

    hf_dir = build_tiny_hf_vlm("qwen3_vl", tmp_path / "qwen3_vl", image_size=64)
    pm = plugin_manager()
    registry = get_registry()
    # 1. fine-tune the HF VLM with our trainer: MFU is counted (it was 0)
    mix = [{"source": {"name": "synthetic_image_caption", "num_samples": 8, "image_size": 64}}]
    vlm_run = train_from_config(
        run_config(tmp_path / "vlm", model={"name": "hf_vlm", "path": str(hf_dir)}, mix=mix, steps=2, batch=2,
                   run=CPU_RUN, train=SLOW_LR),
        pm=pm,
    )
    assert any(r.get("mfu", 0) > 0 for r in _rows(vlm_run)), _rows(vlm_run)

    # 2. the VLA: backbone is the export, one line; trains through the trainer and exports (it crashed here)
    data = {"name": "zarr_episodes", "path": str(tiny_episodes), "past": 1, "future": 3, "image_size": 64}
    node = {
        "name": "vla",
        "backbone": {"name": "foundry_vlm", "path": str(vlm_run / "export")},
        "expert": {"name": "flow_matching", "preset": "debug", "inference_steps": 2, "image_readout": 2},
        "data": data,
    }
    vla_cfg = run_config(tmp_path / "vla", model=node, source=data, steps=2, batch=2, run=CPU_RUN, train=SLOW_LR)
    vla_run = train_from_config(vla_cfg, pm=pm)
    rows = _rows(vla_run)
    assert any("model/action_loss" in r for r in rows)
    # MFU of the whole VLA: the backbone's FLOPs are in it (the expert alone is far smaller)
    vla = get_registry().build("model", node, BuildContext(registry))
    batch = next(
        registry.build("data_source", data, BuildContext(registry)).batches(2, rank=0, world_size=1, seed=0)
    )
    vla.compute_loss(batch)
    encode = vla.backbone.encode_flops()
    assert encode > 0 and vla.flops_per_sample(batch) > 3 * encode

    # 3. the VLA export is self-contained: it acts with the VLM run and the data gone
    shutil.rmtree(vlm_run)
    tiny_episodes.rename(tmp_path / "moved.zarr")
    policy = Policy.from_pretrained(vla_run / "export", registry=registry)
    assert policy.model.backbone.vlm.model_type == "qwen3_vl"
    obs = {
        "images": {c: np.zeros((64, 64, 3), np.uint8) for c in ("scene", "wrist")},
        "proprio": np.zeros(10, np.float32),
        "instruction": "do thing number 0",
    }
    assert policy.act(obs).shape == (4, 10)


def test_hf_vlm_flops_follow_the_processed_batch(tmp_path):
    """6 x matmul params x tokens (+ attention, + the vision tower over its patches): grows with the batch's length."""
    from foundry_vision.models.hf_vlm import HFVLM
    from foundry_vision.tiny_hf import build_tiny_hf_vlm

    model = HFVLM(HFVLM.Config(path=str(build_tiny_hf_vlm("smolvlm", tmp_path / "smol", image_size=64))))
    images = torch.zeros(2, 1, 3, 64, 64, dtype=torch.uint8)
    short = {"modality": "image_caption", "images": images, "captions": ["a cube", "a dog"]}
    model.compute_loss(short)
    f_short = model.flops_per_sample(short)
    long = {**short, "captions": ["a red cube on a table " * 4, "a dog sitting in a christmas wreath " * 4]}
    model.compute_loss(long)
    text, vision = model._matmul_params()
    assert text > 0 and vision > 0
    assert model.flops_per_sample(long) > f_short > 6 * text * 4  # at least 4 image tokens per sample
    tokens, _ = model.encode(images, ["pick", "place"])
    # the backbone pass is the base model (no LM head) and is counted without it
    head = model.hf.get_output_embeddings().weight.numel()
    length = tokens.shape[1]
    assert model.encode_flops() < 2 * text * length + 2 * vision * 16 + 1e9
    assert model.encode_flops() >= 2 * (text - head) * length


def test_hf_vlm_path_errors_name_the_fix(tmp_path):
    from foundry_vision.models.hf_vlm import HFVLM

    with pytest.raises(ConfigError, match=r"huggingface-cli download <repo id> --local-dir .*missing"):
        HFVLM(HFVLM.Config(path=str(tmp_path / "missing")))
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "config.yaml").write_text("model: {name: hf_vlm}\n")
    with pytest.raises(ConfigError, match="is a Foundry export.*name: foundry_vlm"):
        HFVLM(HFVLM.Config(path=str(tmp_path / "export")))
