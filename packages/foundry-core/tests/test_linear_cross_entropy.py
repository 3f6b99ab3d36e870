"""The fused head + loss (and the tied-embedding gradient hand-over) against the generic logits path."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import pytest
import torch

from foundry_core.errors import DataError
from foundry_core.models import linear_cross_entropy as lce
from foundry_core.models.generation import next_token_loss
from foundry_core.models.transformer import Transformer, resolve_dims


def _model(tie: bool, vocab: int = 320) -> Transformer:
    torch.manual_seed(0)
    return Transformer(resolve_dims(Transformer.Config(preset="debug", vocab_size=vocab, tie_embeddings=tie)))


def _batch(vocab: int = 320) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 37), generator=g)
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    labels[1, :9] = -100  # a prompt that is not counted
    return {"input_ids": ids, "labels": labels}


def _grads(model: Transformer) -> dict[str, torch.Tensor]:
    out = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("workspace_elements", [1 << 24, 8 * 320])  # one block; several blocks of 8 rows
def test_fused_loss_equals_logits_path(tie, workspace_elements, monkeypatch):
    monkeypatch.setattr(lce, "WORKSPACE_ELEMENTS", workspace_elements)
    monkeypatch.setattr(lce, "MIN_ROWS", 8)
    model, batch = _model(tie), _batch()
    fused, metrics = model.compute_loss(batch)
    fused.backward()
    g_fused = _grads(model)
    plain, n = next_token_loss(model(batch["input_ids"]).logits, batch["labels"])
    plain.backward()
    g_plain = _grads(model)
    assert metrics["tokens"] == n == 3 * 36 - 9
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    assert g_fused.keys() == g_plain.keys()
    for k in g_plain:
        torch.testing.assert_close(g_fused[k], g_plain[k], rtol=1e-4, atol=1e-7, msg=k)


def test_scaled_loss_and_accumulated_microbatches():
    """Backward of 0.5·loss twice accumulates like the generic path (the grad_loss factor and .grad reuse)."""
    model, batch = _model(True), _batch()
    for _ in range(2):
        (0.5 * model.compute_loss(batch)[0]).backward()
    g_fused = _grads(model)
    for _ in range(2):
        (0.5 * next_token_loss(model(batch["input_ids"]).logits, batch["labels"])[0]).backward()
    g_plain = _grads(model)
    for k in g_plain:
        torch.testing.assert_close(g_fused[k], g_plain[k], rtol=1e-4, atol=1e-7, msg=k)


def test_no_grad_computes_only_the_loss():
    model, batch = _model(True), _batch()
    with torch.no_grad():
        loss, _ = model.compute_loss(batch)
        plain, _ = next_token_loss(model(batch["input_ids"]).logits, batch["labels"])
    assert not loss.requires_grad
    torch.testing.assert_close(loss, plain)


def test_batch_without_targets_and_bad_labels():
    model, batch = _model(True), _batch()
    batch["labels"][:] = -100
    loss, metrics = model.compute_loss(batch)
    assert loss.item() == 0.0 and metrics["tokens"] == 0
    loss.backward()  # still differentiable: zero gradients
    assert model.output.weight.grad is not None and model.output.weight.grad.abs().sum() == 0
    batch["labels"][0, 0] = 320
    with pytest.raises(DataError, match="labels: token id 320"):
        model.compute_loss(batch)
    batch["labels"][0, 0] = -3
    with pytest.raises(DataError, match="labels: token id -3"):
        model.compute_loss(batch)


def test_second_backward_through_the_fused_head_is_a_clear_error():
    model, batch = _model(False), _batch()
    loss, _ = model.compute_loss(batch)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


def test_tied_embedding_without_head_gradient_falls_back_to_dense():
    """Only the embedding in the loss: its gradient is the plain scattered rows."""
    w = torch.randn(10, 4, requires_grad=True)
    ids = torch.tensor([[1, 3, 3]])
    lce.tied_embedding(ids, w, lce.TiedGradient()).sum().backward()
    expected = torch.zeros(10, 4)
    expected[1] = 1
    expected[3] = 2
    torch.testing.assert_close(w.grad, expected)


@contextlib.contextmanager
def _precision(model: Transformer, mode: str) -> Iterator[Transformer]:
    """``autocast``: fp32 weights under bf16 autocast (a GPU run's default); ``bf16``: bf16 weights (FSDP2's param_dtype)."""
    if mode == "bf16":
        yield model.to(torch.bfloat16)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield model


@pytest.mark.parametrize("mode", ["autocast", "bf16"])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("workspace_elements", [1 << 24, 8 * 320])
def test_bf16_fused_loss_equals_logits_path(mode, tie, workspace_elements, monkeypatch):
    """Same equivalence as float32, with bf16 tolerances: bf16 matmuls, float32 log-softmax and accumulation."""
    monkeypatch.setattr(lce, "WORKSPACE_ELEMENTS", workspace_elements)
    monkeypatch.setattr(lce, "MIN_ROWS", 8)
    batch = _batch()
    with _precision(_model(tie), mode) as model:
        fused, metrics = model.compute_loss(batch)
        assert model._ce_workspace.logits.dtype == torch.bfloat16  # the fused path ran, in bf16
        assert model._ce_workspace.logp.dtype == torch.float32
        fused.backward()
        g_fused = _grads(model)
        plain, n = next_token_loss(model(batch["input_ids"]).logits, batch["labels"])
        plain.backward()
        g_plain = _grads(model)
    assert fused.dtype == torch.float32 and metrics["tokens"] == n
    torch.testing.assert_close(fused, plain, rtol=1e-3, atol=1e-3)
    assert g_fused.keys() == g_plain.keys()
    for k in g_plain:
        assert g_fused[k].dtype == g_plain[k].dtype, k
        a, b = g_fused[k].float(), g_plain[k].float()
        # bf16 keeps 8 bits of mantissa: compare relative to the tensor's scale, and demand the same direction
        assert (a - b).norm() <= 0.02 * b.norm() + 1e-6, (k, float((a - b).norm() / b.norm()))
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999, k


@pytest.mark.parametrize("mode", ["autocast", "bf16"])
def test_bf16_fused_loss_is_close_to_float32(mode):
    """Against the float32 model: the float32 log-softmax keeps the loss within bf16 rounding of the true one."""
    batch = _batch()
    exact, _ = _model(True).compute_loss(batch)
    with _precision(_model(True), mode) as model:
        low, _ = model.compute_loss(batch)
    torch.testing.assert_close(low, exact, rtol=2e-2, atol=2e-2)


def test_workspace_is_reused_and_not_copied():
    model, batch = _model(True), _batch()
    model.compute_loss(batch)[0].backward()
    buf = model._ce_workspace.logits
    assert buf is not None and buf.shape == (3 * 36 - 9, 320)  # only rows with a target reach the head
    model.compute_loss(batch)[0].backward()
    assert model._ce_workspace.logits is buf  # same memory, no fresh [tokens, vocab] buffer
    assert copy.deepcopy(model)._ce_workspace.logits is None


def test_embeds_loss_skips_rows_without_targets_and_matches_logits_path():
    """A VLM-like batch: most rows (image/prompt tokens) have no target; only the others reach the head."""
    model, batch = _model(False), _batch()
    embeds = model.embed(batch["input_ids"]).detach().requires_grad_(True)
    labels = batch["labels"].clone()
    labels[:, :30] = -100
    loss, metrics = model.embeds_loss(embeds, labels)
    loss.backward()
    g_fused, g_embeds = _grads(model), embeds.grad.clone()
    embeds.grad = None
    plain, n = next_token_loss(model(inputs_embeds=embeds).logits, labels)
    plain.backward()
    assert metrics["tokens"] == n == 3 * 6
    assert model._ce_workspace.logits.shape[0] == n
    torch.testing.assert_close(loss, plain)
    torch.testing.assert_close(g_embeds, embeds.grad, rtol=1e-4, atol=1e-7)
    assert g_embeds[:, :30].abs().sum() > 0  # rows without a target still get gradient through attention
    for k, g in _grads(model).items():
        torch.testing.assert_close(g_fused[k], g, rtol=1e-4, atol=1e-7, msg=k)
