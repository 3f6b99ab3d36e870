"""``hf_causal_lm`` on tiny random Llama / Qwen3 folders built from config classes (no hub access)."""

from __future__ import annotations

import pytest
import torch

from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import byte_tokenizer


def tiny_hf_folder(path, arch: str = "llama", vocab: int = 320):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(params=["llama", "qwen3"])
def hf_model(request, tmp_path, foundry_registry):
    folder = tiny_hf_folder(tmp_path / "hf", request.param)
    return foundry_registry.build("model", {"name": "hf_causal_lm", "path": str(folder)}), request.param


def test_interface(hf_model):
    model, arch = hf_model
    assert [t.__name__ for t in model.fsdp_block_types()] == [f"{'Llama' if arch == 'llama' else 'Qwen3'}DecoderLayer"]
    assert model.hidden_size == 64 and model.vocab_size == 320 and len(model.tokenizer) == 261
    ids = torch.randint(0, 261, (2, 12))
    labels = ids.roll(-1, 1)
    loss, metrics = model.compute_loss({"modality": "text", "input_ids": ids, "labels": labels})
    assert torch.isfinite(loss) and metrics["tokens"] == 24
    assert model.flops_per_sample({"input_ids": ids}) > 6 * 12 * 2 * 64 * 64
    out = model(inputs_embeds=model.embed(ids), output_hidden_states=True)
    torch.testing.assert_close(out.logits, model(ids).logits)
    assert len(out.hidden_states) == 3


def test_document_mask_equals_separate_forwards(hf_model):
    model, _ = hf_model
    model.eval()
    a, b = torch.randint(0, 261, (1, 6)), torch.randint(0, 261, (1, 4))
    docs = torch.tensor([[0] * 6 + [1] * 4])
    pos = torch.tensor([list(range(6)) + list(range(4))])
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), document_ids=docs, position_ids=pos).logits
        sep = torch.cat([model(a).logits, model(b).logits], 1)
    torch.testing.assert_close(packed, sep, atol=1e-5, rtol=1e-5)


def test_kv_cache_generation_equals_no_cache(hf_model):
    model, _ = hf_model
    prompt = torch.randint(0, 261, (2, 5))
    assert torch.equal(model.generate(prompt, 8, use_cache=True), model.generate(prompt, 8, use_cache=False))


def test_export_and_hf_round_trip_same_logits(tmp_path, foundry_registry):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    folder = tiny_hf_folder(tmp_path / "hf", "llama")
    model = foundry_registry.build("model", {"name": "hf_causal_lm", "path": str(folder)})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "trained" weights differ from the folder's
    export = tmp_path / "export"
    fields = model.export_artifacts(str(export))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, export / "model.safetensors")
    ctx = BuildContext(registry=foundry_registry, pretrained_dir=str(export))
    again = foundry_registry.build("model", {"name": "hf_causal_lm", **fields}, ctx)
    again.load_state_dict(load_file(export / "model.safetensors"))
    ids = torch.randint(0, 261, (1, 9))
    torch.testing.assert_close(again(ids).logits, model(ids).logits)
    model.save_hf(str(tmp_path / "plain"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "plain"), local_files_only=True)
    torch.testing.assert_close(hf(ids).logits, model(ids).logits)


def test_tokenizer_larger_than_model_vocab_is_an_error(tmp_path, foundry_registry):
    folder = tiny_hf_folder(tmp_path / "hf", "llama", vocab=200)
    with pytest.raises(ConfigError, match="261 tokens but the model's vocab_size is 200"):
        foundry_registry.build("model", {"name": "hf_causal_lm", "path": str(folder)})
    with pytest.raises(ConfigError, match="no config.json"):
        foundry_registry.build("model", {"name": "hf_causal_lm", "path": str(tmp_path / "nothing")})


def test_trains_a_few_steps(tmp_path, foundry_registry):
    folder = tiny_hf_folder(tmp_path / "hf", "qwen3")
    model = foundry_registry.build("model", {"name": "hf_causal_lm", "path": str(folder)})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 261, (4, 16))
    batch = {"modality": "text", "input_ids": ids, "labels": ids.roll(-1, 1)}
    first = model.compute_loss(batch)[0].item()
    for _ in range(20):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0
