"""Composed ``vlm``: caption-only loss, text batches, placeholders, KV-cache generation, vocab resize, freezing."""

from __future__ import annotations

import pytest
import torch

from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext
from foundry_vision.testing import TINY_LLM, TINY_VIT


def _vlm(registry, **kw):
    node = {"name": "vlm", "llm": TINY_LLM, "encoder": TINY_VIT, **kw}
    torch.manual_seed(0)
    return registry.build("model", node, BuildContext(registry))


def _images(b=2, n=1):
    return torch.randint(0, 256, (b, n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_loss_only_on_caption_tokens(vision_registry):
    vlm = _vlm(vision_registry)
    batch = {"modality": "image_caption", "images": _images(), "captions": ["a cube", "dog"], "prompts": ["what is it? ", ""]}
    loss, metrics = vlm.compute_loss(batch)
    assert metrics["tokens"] == (6 + 1) + (3 + 1)  # byte tokenizer: caption bytes + eos, nothing of the prompt
    loss.backward()
    assert vlm.flops_per_sample(batch) > vlm.llm.flops_per_sample({"input_ids": torch.zeros(1, 16, dtype=torch.long)})
    assert vlm.vision.patch.weight.grad is not None and vlm.projector.net[0].weight.grad is not None


def test_text_batches_use_the_llm_loss(vision_registry):
    vlm = _vlm(vision_registry)
    ids = torch.randint(0, 256, (2, 8))
    batch = {"modality": "text", "input_ids": ids, "labels": ids.roll(-1, 1)}
    assert torch.allclose(vlm.compute_loss(batch)[0], vlm.llm.compute_loss(batch)[0])


def test_image_tokens_replace_placeholders(vision_registry):
    vlm = _vlm(vision_registry, projector={"kind": "linear", "pixel_shuffle": 2})
    assert vlm.tokens_per_image == 4
    ids = vlm._pad([vlm._prefix_ids("<image> left <image> right", 2, "k")], vlm.pad_id)
    assert int((ids == vlm.image_token_id).sum()) == 8
    emb = vlm._embed(ids, _images(1, 2))
    feats = vlm.projector(vlm.vision(_images(1, 2)), 2)
    assert torch.allclose(emb[ids == vlm.image_token_id], feats.reshape(-1, feats.shape[-1]))
    with pytest.raises(DataError, match="sample 'k7' has 2 <image> placeholders in its prompt but 1 images"):
        vlm.compute_loss({"modality": "image_caption", "images": _images(1, 1), "captions": ["x"],
                          "prompts": ["<image><image>"], "keys": ["k7"]})


def test_generation_with_kv_cache_matches_full_recompute(vision_registry):
    vlm = _vlm(vision_registry).eval()
    images = _images(1)
    text = vlm.generate(images, ["describe: "], max_new_tokens=6)[0]
    ids = vlm._pad([vlm._prefix_ids("describe: ", 1, "0")], vlm.pad_id)
    new = []
    with torch.no_grad():
        for _ in range(6):  # reference: re-run the whole sequence at every step, no cache
            nxt = int(vlm.llm(inputs_embeds=vlm._embed(ids, images)).logits[0, -1].argmax())
            if nxt == vlm.tokenizer.eos_token_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert text == vlm.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_encode_layers_and_freeze(vision_registry):
    vlm = _vlm(vision_registry, layers=[-1, 0], freeze=["vision*", "llm.layers.0.*"])
    tokens, mask = vlm.encode(_images(), ["a", "longer prompt"])
    assert tokens.shape[-1] == vlm.out_dim == 128 and mask.shape == tokens.shape[:2]
    assert mask[0].sum() < mask[1].sum()
    frozen = {n for n, p in vlm.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("vision.", "llm.layers.0.")) for n in frozen) and "vision.patch.weight" in frozen


def _hf_llm_folder(tmp_path):
    """A tiny HF causal LM whose tokenizer has no <image> token and exactly vocab_size entries."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from foundry_vision.tiny_hf import tiny_tokenizer

    tok = tiny_tokenizer("qwen2_5_vl")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    return tmp_path / "llm", len(tok)


def test_hf_llm_vocab_resize_mean_rows_and_conflict(vision_registry, tmp_path):
    folder, n = _hf_llm_folder(tmp_path)
    vlm = _vlm(vision_registry, llm={"path": str(folder)})
    assert vlm.llm.vocab_size == n + 1 and vlm.image_token_id == n
    emb = vlm.llm.model.get_input_embeddings().weight
    head = vlm.llm.model.get_output_embeddings().weight
    assert torch.allclose(emb[n], emb[:n].mean(0)) and torch.allclose(head[n], head[:n].mean(0))
    loss, _ = vlm.compute_loss({"modality": "image_caption", "images": _images(), "captions": ["a cube", "dog"]})
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="resize_embeddings is false"):
        _vlm(vision_registry, llm={"path": str(folder)}, resize_embeddings=False)


def test_llm_node_errors(vision_registry, tmp_path):
    with pytest.raises(ConfigError, match="neither a Foundry export"):
        _vlm(vision_registry, llm={"path": str(tmp_path)})
    with pytest.raises(ConfigError, match="no other key"):
        _vlm(vision_registry, llm={"path": str(tmp_path), "dim": 3})


def test_grid_positions_give_image_tokens_rows_and_columns(vision_registry):
    vlm = _vlm(vision_registry, image_positions="grid", projector={"kind": "mlp", "pixel_shuffle": 2}).eval()
    assert (vlm.tokens_per_image, vlm.grid) == (4, 2)
    ids = vlm._pad([vlm._prefix_ids("ab<image>c<image>d", 2, "k")], vlm.pad_id)
    # bos a b | image 1: time 3, rows/cols 3..4 | c advances one past the image | image 2 | d
    assert vlm._positions(ids)[0].tolist() == [
        [0, 0, 0], [1, 1, 1], [2, 2, 2],
        [3, 3, 3], [3, 3, 4], [3, 4, 3], [3, 4, 4],
        [5, 5, 5],
        [6, 6, 6], [6, 6, 7], [6, 7, 6], [6, 7, 7],
        [8, 8, 8],
    ]
    assert _vlm(vision_registry)._positions(ids) is None  # sequence (the default): the LLM's own positions
    images = _images(1)
    text = vlm.generate(images, ["describe: "], max_new_tokens=6)[0]
    ids = vlm._pad([vlm._prefix_ids("describe: ", 1, "0")], vlm.pad_id)
    new = []
    with torch.no_grad():
        for _ in range(6):  # reference: the whole sequence at every step, positions recomputed, no cache
            nxt = int(vlm.llm(inputs_embeds=vlm._embed(ids, images), position_ids=vlm._positions(ids)).logits[0, -1].argmax())
            if nxt == vlm.tokenizer.eos_token_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert text == vlm.tokenizer.decode(new, skip_special_tokens=True).strip()
    tokens, mask = vlm.encode(_images(2), ["go left", "go"], prompt_first=8)
    assert tokens.shape[:2] == mask.shape and bool(mask[:, -4:].all())
    loss, _ = vlm.compute_loss({"modality": "image_caption", "images": _images(), "captions": ["a cube", "dog"]})
    loss.backward()
    assert vlm.projector.net[0].weight.grad is not None


def test_grid_positions_need_an_llm_that_takes_them(vision_registry, tmp_path):
    folder, _ = _hf_llm_folder(tmp_path)
    with pytest.raises(ConfigError, match="grid needs an LLM that takes .time, row, column. position ids; HFCausalLM"):
        _vlm(vision_registry, llm={"path": str(folder)}, image_positions="grid")
