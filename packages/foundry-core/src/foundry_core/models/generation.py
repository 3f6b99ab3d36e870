"""Shared pieces of the causal LMs: the forward output type, the next-token loss, sampling and generation.

Both ``transformer`` and ``hf_causal_lm`` implement ``forward(input_ids=..., inputs_embeds=...,
kv_cache=..., use_cache=...) -> LMOutput`` and ``new_cache(batch_size, max_len)``; :func:`generate`
drives either one (greedy when ``temperature == 0``, otherwise temperature / top-k / top-p sampling).

Test: ``uv run pytest packages/foundry-core/tests/test_llm_transformer.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from foundry_core.errors import DataError


@dataclass
class LMOutput:
    """Output of an LM forward pass.

    Attributes:
        logits: float [B, L, V].
        hidden_states: when requested, the input embeddings and every block's output (each [B, L, D]),
            the last one after the final norm.
        kv_cache: the cache to pass to the next call (``None`` without caching).
    """

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    kv_cache: Any = None


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, where: str) -> None:
    """A token id outside the embedding table is a data error, not an opaque index error."""
    if input_ids.numel() == 0:
        return
    hi, lo = int(input_ids.max()), int(input_ids.min())
    if hi >= vocab_size or lo < 0:
        bad = hi if hi >= vocab_size else lo
        raise DataError(f"{where}: token id {bad} is outside the model's vocabulary [0, {vocab_size})")


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over positions whose label is not -100 (labels are already shifted).

    Returns the loss and the number of counted tokens. A batch without any target yields a zero loss
    that still depends on the logits, so backward works uniformly.
    """
    n = int((labels != -100).sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    return loss, n


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from logits [B, V]; greedy when ``temperature <= 0``. Returns int64 [B]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    *,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Autoregressive generation for prompts of equal length [B, L]; returns [B, L + new] token ids.

    With ``use_cache`` the prompt is encoded once and each new token attends to the cached keys and
    values; without it every step re-runs the whole sequence (the reference the cache is tested against).
    Sequences that emitted ``eos_token_id`` keep emitting it.
    """
    was_training = model.training
    model.eval()
    try:
        ids = input_ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        cache = model.new_cache(ids.shape[0], ids.shape[1] + max_new_tokens) if use_cache else None
        step_input = ids
        for _ in range(max_new_tokens):
            out = model(input_ids=step_input if use_cache else ids, kv_cache=cache)
            nxt = sample_next(out.logits[:, -1], temperature, top_k, top_p, generator)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            cache = out.kv_cache
            step_input = nxt[:, None]
            if eos_token_id is not None and bool(done.all()):
                break
        return ids
    finally:
        model.train(was_training)
