"""HF weights never fall back to random silently (``hf_causal_lm``; the vision loaders: test_vision_hf_weights.py).

Before: a folder whose weight file was not one of the expected names was built with random weights and
no warning; a truncated ``model.safetensors`` ended in a traceback; a partial file loaded without notice.
"""

from __future__ import annotations

import pytest
import torch

from foundry_core.errors import ConfigError, FoundryError
from foundry_core.export import export_model, load_pretrained


def tiny_llama(path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def build(registry, folder, **fields):
    return registry.build(
        "model", {"name": "hf_causal_lm", "path": str(folder), "tokenizer": "byte", **fields}
    )


def test_folder_without_loadable_weights_is_an_error_unless_init_random(tmp_path, foundry_registry):
    folder = tiny_llama(tmp_path / "hf")
    (folder / "model.safetensors").rename(folder / "weights.safetensors")  # a name HF does not load
    with pytest.raises(ConfigError) as err:
        build(foundry_registry, folder)
    msg = str(err.value)
    assert f"hf_causal_lm.path: {folder} has no loadable weights" in msg
    assert "weight-like files there: weights.safetensors" in msg and "init: random" in msg
    model = build(foundry_registry, folder, init="random")  # on purpose: allowed
    assert model.vocab_size == 300
    with pytest.raises(ConfigError, match=r"init: 'randm' is not one of \['pretrained', 'random'\]"):
        build(foundry_registry, folder, init="randm")


def test_loaded_weights_are_the_folders(tmp_path, foundry_registry):
    from safetensors.torch import load_file

    folder = tiny_llama(tmp_path / "hf")
    model = build(foundry_registry, folder)
    stored = load_file(str(folder / "model.safetensors"))
    assert torch.equal(model.model.model.embed_tokens.weight, stored["model.embed_tokens.weight"])


def test_truncated_weights_are_one_clear_error(tmp_path, foundry_registry):
    folder = tiny_llama(tmp_path / "hf")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=rf"cannot load the weights in {folder}.*truncated or corrupt"):
        build(foundry_registry, folder)


def test_partial_weights_list_the_missing_tensors(tmp_path, foundry_registry, caplog):
    from safetensors.torch import load_file, save_file

    folder = tiny_llama(tmp_path / "hf")
    sd = load_file(str(folder / "model.safetensors"))
    del sd["model.layers.0.mlp.down_proj.weight"]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    build(foundry_registry, folder)
    assert "lack 1 tensor(s), left randomly initialized: model.layers.0.mlp.down_proj.weight" in caplog.text


def test_export_with_missing_or_truncated_weights_names_the_file(tmp_path, foundry_registry):
    model = build(foundry_registry, tiny_llama(tmp_path / "hf"))
    out = export_model(
        model, {"name": "hf_causal_lm", "path": "unused", "tokenizer": "byte"}, tmp_path / "export"
    )
    assert (
        load_pretrained(out, registry=foundry_registry) is not None
    )  # config-only HF folder inside an export
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(FoundryError, match=rf"{weights}: unreadable .*truncated or corrupt"):
        load_pretrained(out, registry=foundry_registry)
    weights.unlink()
    with pytest.raises(FoundryError, match=rf"{weights}: missing; .* incomplete export"):
        load_pretrained(out, registry=foundry_registry)
