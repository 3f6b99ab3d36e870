"""The ``transformer`` model: presets, masks, KV cache, loss, FLOPs, export round trip."""

from __future__ import annotations

import pytest
import torch

from foundry_core.errors import ConfigError, DataError
from foundry_core.models.generation import sample_next
from foundry_core.models.transformer import PRESETS, Transformer, TransformerBlock, resolve_dims
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import byte_tokenizer


def _model(**fields) -> Transformer:
    cfg = Transformer.Config(**{"preset": "debug", "vocab_size": 320, **fields})
    torch.manual_seed(0)
    return Transformer(resolve_dims(cfg))


def test_debug_preset_is_about_one_million_parameters(foundry_registry):
    model = foundry_registry.build("model", {"name": "transformer", "preset": "debug", "tokenizer": "byte"})
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 1.5e6
    assert model.vocab_size == 320 and model.hidden_size == 128
    assert model.fsdp_block_types() == (TransformerBlock,)


@pytest.mark.parametrize("preset,size", [("10m", 10e6), ("100m", 100e6), ("350m", 350e6), ("1b", 1e9)])
def test_preset_names_are_non_embedding_sizes(preset, size):
    d = resolve_dims(Transformer.Config(preset=preset, vocab_size=32000))
    per_layer = 2 * d.dim * d.dim + 2 * d.dim * d.n_kv_heads * d.head_dim + 3 * d.dim * d.ffn_dim
    assert 0.9 * size < d.n_layers * per_layer < 1.1 * size
    assert set(PRESETS) == {"debug", "10m", "100m", "350m", "1b"}


def test_explicit_fields_override_preset_and_bad_shapes_fail():
    d = resolve_dims(Transformer.Config(preset="debug", vocab_size=300, n_layers=2, qk_norm=True))
    assert d.n_layers == 2 and d.dim == 128 and d.qk_norm
    with pytest.raises(ConfigError, match="n_kv_heads"):
        resolve_dims(Transformer.Config(preset="debug", vocab_size=300, n_kv_heads=3))
    with pytest.raises(ConfigError, match="vocab_size"):
        resolve_dims(Transformer.Config(preset="debug"))


def test_tokenizer_model_vocab_mismatch_is_an_error(foundry_registry):
    with pytest.raises(ConfigError, match="261 tokens.*vocab_size is 100"):
        foundry_registry.build("model", {"name": "transformer", "preset": "debug", "vocab_size": 100, "tokenizer": "byte"})


@pytest.mark.parametrize("qk_norm,tie", [(False, True), (True, False)])
def test_document_mask_equals_separate_forwards(qk_norm, tie):
    model = _model(qk_norm=qk_norm, tie_embeddings=tie).eval()
    a, b = torch.randint(0, 320, (1, 7)), torch.randint(0, 320, (1, 5))
    packed = torch.cat([a, b], dim=1)
    docs = torch.tensor([[0] * 7 + [1] * 5])
    # positions restart per document so the packed logits equal the separate ones exactly
    pos = torch.tensor([list(range(7)) + list(range(5))])
    with torch.no_grad():
        out = model(packed, document_ids=docs, position_ids=pos).logits
        sep = torch.cat([model(a).logits, model(b).logits], dim=1)
        crossing = model(packed).logits
    torch.testing.assert_close(out, sep, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(crossing[:, 7:], sep[:, 7:], atol=1e-3)


def test_kv_cache_generation_equals_no_cache():
    model = _model()
    prompt = torch.randint(0, 320, (2, 6))
    with_cache = model.generate(prompt, 12, use_cache=True)
    without = model.generate(prompt, 12, use_cache=False)
    assert torch.equal(with_cache, without) and with_cache.shape == (2, 18)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = model.generate(prompt, 10, temperature=0.8, top_k=20, top_p=0.9, generator=g1, use_cache=True)
    s2 = model.generate(prompt, 10, temperature=0.8, top_k=20, top_p=0.9, generator=g2, use_cache=False)
    assert torch.equal(s1, s2)


def test_cached_logits_match_full_forward():
    model = _model().eval()
    ids = torch.randint(0, 320, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(2, 10)
        first = model(ids[:, :4], kv_cache=cache).logits
        rest = [model(ids[:, i : i + 1], kv_cache=cache).logits for i in range(4, 10)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert sample_next(logits).item() == 3
    draws = {sample_next(logits, 1.0, top_k=2, generator=torch.Generator().manual_seed(i)).item() for i in range(50)}
    assert draws == {2, 3}
    draws = {sample_next(logits, 1.0, top_p=0.5, generator=torch.Generator().manual_seed(i)).item() for i in range(50)}
    assert draws == {3}


def test_loss_and_bad_token_id():
    model = _model()
    ids = torch.randint(0, 320, (2, 16))
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    loss, metrics = model.compute_loss({"modality": "text", "input_ids": ids, "labels": labels})
    assert abs(loss.item() - torch.log(torch.tensor(320.0)).item()) < 0.3
    assert metrics["tokens"] == 30
    loss.backward()
    assert model.tok_embeddings.weight.grad is not None
    ids[0, 3] = 320
    with pytest.raises(DataError, match="token id 320"):
        model.compute_loss({"modality": "text", "input_ids": ids, "labels": labels})


def test_flops_formula():
    model = _model()
    d = model.dims
    L = 64
    n = sum(p.numel() for p in model.parameters())  # tied: the embedding counts once, as the head
    expected = 6 * n * L + 12 * d.n_layers * d.dim * L * L
    assert model.flops_per_sample({"input_ids": torch.zeros(3, L, dtype=torch.long)}) == expected


def test_export_round_trip_same_logits(tmp_path, foundry_registry):
    from safetensors.torch import load_file, save_file

    model = foundry_registry.build("model", {"name": "transformer", "preset": "debug", "n_layers": 2, "tokenizer": "byte"})
    fields = model.export_artifacts(str(tmp_path))
    assert fields["tokenizer"] == "tokenizer" and (tmp_path / "tokenizer" / "tokenizer.json").exists()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "output.weight"}, tmp_path / "m.safetensors")
    ctx = BuildContext(registry=foundry_registry, pretrained_dir=str(tmp_path))
    node = {"name": "transformer", "preset": "debug", "n_layers": 2, **fields}
    again = foundry_registry.build("model", node, ctx)
    again.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=False)
    ids = torch.randint(0, 261, (1, 9))
    torch.testing.assert_close(again(ids).logits, model(ids).logits)
    assert len(again.tokenizer) == len(byte_tokenizer())


def test_resize_token_embeddings_keeps_old_rows():
    model = _model()
    old = model.tok_embeddings.weight.detach().clone()
    model.resize_token_embeddings(400)
    assert model.vocab_size == 400 and model.output.weight is model.tok_embeddings.weight
    torch.testing.assert_close(model.tok_embeddings.weight[:320], old)
    assert model(torch.tensor([[399]])).logits.shape == (1, 1, 400)


def test_inputs_embeds_and_hidden_states():
    model = _model().eval()
    ids = torch.randint(0, 320, (2, 5))
    a = model(ids, output_hidden_states=True)
    b = model(inputs_embeds=model.embed(ids), attention_mask=torch.ones(2, 5), output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits)
    assert len(a.hidden_states) == model.dims.n_layers + 1 and a.hidden_states[-1].shape == (2, 5, 128)


def test_three_axis_positions_rotate_text_as_one_axis_and_images_by_row_and_column():
    model = _model().eval()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(12).expand(2, 12)
    with torch.no_grad():
        one_axis = model(ids, position_ids=pos).logits
        three_equal = model(ids, position_ids=pos[..., None].expand(2, 12, 3)).logits
        assert torch.allclose(one_axis, three_equal, atol=1e-6)  # a text-trained LM reads text as before
        # each axis drives its own rotary slots: moving only the column coordinate changes the output
        grid = pos[..., None].expand(2, 12, 3).clone()
        grid[:, 4:, 2] += 3
        assert not torch.allclose(model(ids, position_ids=grid).logits[:, 4:], one_axis[:, 4:], atol=1e-4)
    assert model.rope_axis[: model.dims.head_dim // 2].tolist()[:6] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(DataError, match=r"expected \[B, L\] or \[B, L, 3\]"):
        model(ids, position_ids=pos[..., None].expand(2, 12, 2))


def test_compiled_loss_and_gradients_equal_eager():
    """``train.compile: true`` on the transformer: the fused head/loss is a graph break (dynamo cannot
    trace its autograd function); before that it failed with an internal dynamo error."""
    eager, compiled = _model(), _model()
    ids = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    batch = {"modality": "text", "input_ids": ids, "labels": labels}
    loss_eager = eager.compute_loss(batch)[0]
    loss_eager.backward()
    loss_compiled = torch.compile(compiled.compute_loss)(batch)[0]
    loss_compiled.backward()
    assert loss_compiled.item() == pytest.approx(loss_eager.item(), rel=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
