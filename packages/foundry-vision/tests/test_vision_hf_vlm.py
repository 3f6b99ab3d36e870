"""``hf_vlm`` for every family: tiny random models built offline, reloaded, trained through our trainer.

Each family's folder is built from its config classes (tiny tokenizer trained here, processor built
from its classes), saved, and reloaded with ``HF_HUB_OFFLINE=1`` (set in conftest).
"""

from __future__ import annotations

import json

import pytest
import torch

from foundry_core.errors import ConfigError, DataError
from foundry_core.export import load_pretrained
from foundry_core.registry import BuildContext
from foundry_core.testing import run_config
from foundry_core.train.run import train_from_config
from foundry_vision.models.hf_vlm import HFVLM
from foundry_vision.testing import CPU_RUN, SLOW_LR
from foundry_vision.tiny_hf import VLM_FAMILIES


def _batch(n_images=1):
    g = torch.Generator().manual_seed(0)
    return {"modality": "image_caption", "images": torch.randint(0, 256, (2, n_images, 3, 56, 48), dtype=torch.uint8, generator=g),
            "captions": ["a red cube", "a dog on a sofa"], "prompts": ["", "describe"], "keys": ["a", "b"]}


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_family_loss_generate_encode(family, tiny_hf_dir, vision_registry):
    model = vision_registry.build("model", {"name": "hf_vlm", "path": str(tiny_hf_dir(family))}, BuildContext(vision_registry))
    batch = _batch()
    loss, metrics = model.compute_loss(batch)
    assert torch.isfinite(loss) and loss.requires_grad
    caption_tokens = sum(len(model.tokenizer(c + model.tokenizer.eos_token, add_special_tokens=False)["input_ids"])
                         for c in batch["captions"])
    assert metrics["tokens"] == caption_tokens  # loss on caption (+ eos) tokens only
    loss.backward()
    texts = model.generate(batch["images"], ["", "what?"], max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    backbone = vision_registry.build("backbone", {"name": "hf_vlm", "path": str(tiny_hf_dir(family)), "layers": [-1, -2]})
    tokens, mask = backbone.encode(batch["images"], ["pick", "place the cube"])
    assert tokens.shape[:2] == mask.shape and tokens.shape[-1] == backbone.out_dim == 2 * backbone.hidden_size
    assert mask.dtype == torch.bool and bool(mask[:, 0].all())
    last = vision_registry.build("backbone", {"name": "hf_vlm", "path": str(tiny_hf_dir(family)), "tokens": "last"})
    assert last.encode(batch["images"], ["a", "b"])[0].shape == (2, 1, last.out_dim)
    text = {"modality": "text", "input_ids": torch.randint(0, 200, (2, 6)), "labels": torch.randint(0, 200, (2, 6))}
    assert torch.isfinite(model.compute_loss(text)[0])


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_family_trains_through_trainer_and_exports(family, tiny_hf_dir, vision_pm, tmp_path):
    node = {"name": "hf_vlm", "path": str(tiny_hf_dir(family)), "freeze": ["vision"]}
    mix = [{"source": {"name": "synthetic_image_caption", "num_samples": 8, "image_size": 56}}]
    cfg = run_config(tmp_path / "run", model=node, mix=mix, steps=2, batch=2, run=CPU_RUN, train=SLOW_LR)
    run_dir = train_from_config(cfg, pm=vision_pm)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r and r["loss"] > 0 for r in rows)
    from foundry_core.registry import collect

    reloaded = load_pretrained(run_dir / "export", registry=collect(vision_pm))
    original = HFVLM(HFVLM.Config(path=str(tiny_hf_dir(family))))
    vision_name = next(n for n, p in original.hf.named_parameters() if not p.requires_grad or "vision" in n or "visual" in n)
    llm_name = next(n for n, _ in original.hf.named_parameters() if "layers.0" in n and ("language_model" in n or "text_model" in n))
    new, old = dict(reloaded.hf.named_parameters()), dict(original.hf.named_parameters())
    assert torch.equal(new[vision_name], old[vision_name])  # frozen: unchanged
    assert not torch.equal(new[llm_name], old[llm_name])  # trained: changed


def test_freeze_aliases_and_globs(tiny_hf_dir):
    model = HFVLM(HFVLM.Config(path=str(tiny_hf_dir("smolvlm")), freeze=["vision*", "llm"]))
    trainable = [n for n, p in model.hf.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.connector") for n in trainable)
    with pytest.raises(ConfigError, match="matches no parameter"):
        HFVLM(HFVLM.Config(path=str(tiny_hf_dir("smolvlm")), freeze=["visoin*"]))


def test_processor_model_family_mismatch(tiny_hf_dir):
    with pytest.raises(ConfigError, match="Idefics3Processor.*processor and model families differ|families differ"):
        HFVLM(HFVLM.Config(path=str(tiny_hf_dir("qwen3_vl")), processor=str(tiny_hf_dir("idefics3"))))


def test_bad_inputs(tiny_hf_dir, tmp_path):
    model = HFVLM(HFVLM.Config(path=str(tiny_hf_dir("qwen2_5_vl"))))
    with pytest.raises(DataError, match="empty caption"):
        model.compute_loss({**_batch(), "captions": ["", "x"]})
    with pytest.raises(DataError, match="sample 'b' has 2 <image> placeholders in its prompt but 1 images"):
        model.compute_loss({**_batch(), "prompts": ["<image> what?", "<image><image>"]})
    loss_explicit = model.compute_loss({**_batch(), "prompts": ["<image>", "<image>describe"]})[0]
    assert torch.allclose(loss_explicit, model.compute_loss(_batch())[0])  # explicit placeholder = prepended one
    with pytest.raises(DataError, match="modality 'robot'"):
        model.compute_loss({"modality": "robot"})
    with pytest.raises(DataError, match="uint8"):
        model.encode(torch.zeros(1, 1, 3, 8, 8), ["x"])
    with pytest.raises(ConfigError, match="no config.json"):
        HFVLM(HFVLM.Config(path=str(tmp_path)))
