"""``transformer``: a decoder-only LM (RoPE, grouped-query attention, SwiGLU, RMSNorm, optional QK-norm).

Sizes come from a preset (``debug``, ``10m``, ``100m``, ``350m``, ``1b``: the name is the approximate
number of non-embedding parameters, ≈0.8M for ``debug``); explicit fields override the preset.
q/k/v are one fused projection (``attn.wqkv``) and so are SwiGLU's gate and up (``ffn.w13``): one
matmul each, fewer kernels per step. Attention is ``F.scaled_dot_product_attention``; with
``document_ids`` (packed sequences) the mask is block-diagonal causal, so attention never crosses
documents. Generation uses a pre-allocated KV cache (see :mod:`foundry_core.models.generation`).

Interface used by the trainer: ``compute_loss``, ``fsdp_block_types``, ``flops_per_sample``,
``export_artifacts``. ``compute_loss`` never forms the [tokens, vocab] logits in training (fp32, bf16 weights
or autocast): the head and the cross-entropy are one step (:mod:`foundry_core.models.linear_cross_entropy`), and with tied
weights the embedding's gradient rows are added into the head's gradient instead of a fresh table.

Interface reused as the LLM inside a VLM (the same on ``hf_causal_lm``): ``embed(input_ids) -> [B, L, D]``;
``embeds_loss(inputs_embeds, labels) -> (loss, metrics)``; ``forward(input_ids | inputs_embeds,
attention_mask [B, Lk] (1 = keep), document_ids [B, L], position_ids [B, L] or [B, L, 3], kv_cache,
output_hidden_states) -> LMOutput``;
``new_cache(batch, max_len)``; ``resize_token_embeddings(n)``; attributes ``hidden_size``,
``vocab_size`` and ``tokenizer``.

Position ids [B, L, 3] are three coordinates per token (time, row, column: a VLM's image grid, see
``vlm.image_positions``): the rotary frequencies are dealt to the three axes in turn (slot j rotates by
coordinate j mod 3, the interleaved multi-axis RoPE of Qwen3-VL), so a token with three equal coordinates
is rotated exactly as by the 1-D position, and a text-trained LM reads text as before.

FLOPs (for MFU), per sample of length L: ``6 * N * L + 12 * n_layers * d_attn * L**2`` where N counts
every weight that takes part in a matmul (all parameters except the input embedding table; the output
head is counted once, tied or not) and the second term is QK^T and AV (forward + backward, full L×L
as in PaLM's MFU convention, no causal discount).

Test: ``uv run pytest packages/foundry-core/tests/test_llm_transformer.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from foundry_core.errors import ConfigError, DataError
from foundry_core.models.generation import LMOutput, check_token_ids, generate
from foundry_core.models.linear_cross_entropy import (
    TiedGradient,
    Workspace,
    linear_cross_entropy,
    tied_embedding,
)
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import check_vocab, load_tokenizer

PRESETS: dict[str, dict[str, int]] = {
    "debug": {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 1024},
    "10m": {"dim": 384, "n_layers": 6, "n_heads": 6, "n_kv_heads": 2, "max_seq_len": 2048},
    "100m": {"dim": 768, "n_layers": 16, "n_heads": 12, "n_kv_heads": 4, "max_seq_len": 2048},
    "350m": {"dim": 1024, "n_layers": 30, "n_heads": 16, "n_kv_heads": 8, "max_seq_len": 2048},
    "1b": {"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "ffn_dim": 8192, "max_seq_len": 4096},
}
_DIM_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len")


@dataclass(frozen=True)
class Dims:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    max_seq_len: int
    rope_theta: float
    norm_eps: float
    qk_norm: bool
    tie_embeddings: bool
    init_std: float

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def _round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head (Llama's convention): x·cos + (x2, x1)·(-sin, sin).

    ``sin`` already carries the sign of each half, so the rotation is one ``roll`` and one ``addcmul``
    instead of chunk/neg/cat plus two multiplies.
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


class KVCache:
    """Keys/values of every layer, pre-allocated to ``max_len``: k, v are [n_layers, B, n_kv, max_len, hd]."""

    def __init__(self, dims: Dims, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        shape = (dims.n_layers, batch, dims.n_kv_heads, max_len, dims.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = 0
        self.max_len = max_len


class Attention(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.d = d
        hd = d.head_dim
        # q, k and v come from one fused projection (rows: n_heads q heads, then n_kv k, then n_kv v heads)
        self.wqkv = nn.Linear(d.dim, (d.n_heads + 2 * d.n_kv_heads) * hd, bias=False)
        self.wo = nn.Linear(d.n_heads * hd, d.dim, bias=False)
        self.q_norm = nn.RMSNorm(hd, eps=d.norm_eps) if d.qk_norm else None
        self.k_norm = nn.RMSNorm(hd, eps=d.norm_eps) if d.qk_norm else None

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
        cache: KVCache | None, layer: int,
    ) -> torch.Tensor:
        b, L, _ = x.shape
        nh, nkv = self.d.n_heads, self.d.n_kv_heads
        q, k, v = self.wqkv(x).view(b, L, nh + 2 * nkv, self.d.head_dim).split([nh, nkv, nkv], dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, hd]
        if cache is not None:
            end = cache.pos + L
            cache.k[layer, :, :, cache.pos : end] = k.to(cache.k.dtype)
            cache.v[layer, :, :, cache.pos : end] = v.to(cache.v.dtype)
            k, v = cache.k[layer, :, :, :end].to(q.dtype), cache.v[layer, :, :, :end].to(q.dtype)
        causal = mask is None and L > 1
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=self.d.n_heads != self.d.n_kv_heads
        )
        return self.wo(out.transpose(1, 2).reshape(b, L, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), with w1 and w3 fused into one projection ``w13`` (rows: w1, then w3)."""

    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.w13 = nn.Linear(d.dim, 2 * d.ffn_dim, bias=False)
        self.w2 = nn.Linear(d.ffn_dim, d.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-norm block; the unit FSDP wraps."""

    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(d.dim, eps=d.norm_eps)
        self.attn = Attention(d)
        self.ffn_norm = nn.RMSNorm(d.dim, eps=d.norm_eps)
        self.ffn = FeedForward(d)

    def forward(self, x, cos, sin, mask, cache, layer):  # type: ignore[no-untyped-def]
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """Decoder-only LM; see the module docstring for the interface."""

    #: Takes [B, L, 3] position ids (time, row, column) besides [B, L]: what ``vlm.image_positions: grid`` needs.
    multi_axis_positions = True

    @dataclass(kw_only=True)
    class Config:
        preset: Literal["debug", "10m", "100m", "350m", "1b"] | None = None
        #: Embedding rows; default: the tokenizer's size rounded up to a multiple of 64.
        vocab_size: int | None = None
        dim: int | None = None
        n_layers: int | None = None
        n_heads: int | None = None
        n_kv_heads: int | None = None
        #: SwiGLU hidden width; default 8/3 * dim rounded up to a multiple of 64.
        ffn_dim: int | None = None
        max_seq_len: int | None = None
        rope_theta: float = 10000.0
        norm_eps: float = 1e-5
        qk_norm: bool = False
        tie_embeddings: bool = True
        init_std: float = 0.02
        #: Local HF tokenizer folder or ``byte``; a relative path is resolved against an export folder.
        tokenizer: str | None = None

    def __init__(self, dims: Dims, tokenizer: Any = None) -> None:
        super().__init__()
        self.dims = dims
        self.tokenizer = tokenizer
        self.tok_embeddings = nn.Embedding(dims.vocab_size, dims.dim)
        self.layers = nn.ModuleList(TransformerBlock(dims) for _ in range(dims.n_layers))
        self.norm = nn.RMSNorm(dims.dim, eps=dims.norm_eps)
        self.output = nn.Linear(dims.dim, dims.vocab_size, bias=False)
        if dims.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        inv_freq = 1.0 / (dims.rope_theta ** (torch.arange(0, dims.head_dim, 2, dtype=torch.float32) / dims.head_dim))
        freqs = torch.outer(torch.arange(dims.max_seq_len, dtype=torch.float32), inv_freq)
        # [max_seq_len, head_dim]; the first half of rope_sin is negated, as _rope expects
        self.register_buffer("rope_cos", torch.cat((freqs.cos(), freqs.cos()), dim=-1), persistent=False)
        self.register_buffer("rope_sin", torch.cat((-freqs.sin(), freqs.sin()), dim=-1), persistent=False)
        # which of the three coordinates of [B, L, 3] position ids each rotary slot uses (interleaved)
        axis = torch.arange(dims.head_dim // 2) % 3
        self.register_buffer("rope_axis", torch.cat((axis, axis)), persistent=False)
        self._ce_workspace = Workspace()  # reused logits buffers of the fused head + loss (not state)
        self.reset_parameters()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, cfg: Transformer.Config, ctx: BuildContext) -> Transformer:
        tokenizer = ctx.tokenizer
        if cfg.tokenizer is not None:
            path = cfg.tokenizer
            if ctx.pretrained_dir is not None and path != "byte" and not Path(path).is_absolute():
                path = str(Path(ctx.pretrained_dir) / path)
            tokenizer = load_tokenizer(path)
        return cls(resolve_dims(cfg, tokenizer), tokenizer)

    def reset_parameters(self) -> None:
        std = self.dims.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            # residual projections are scaled down so the residual stream's variance does not grow with depth
            scale = 1.0 / math.sqrt(2 * self.dims.n_layers) if name.endswith(("wo.weight", "w2.weight")) else 1.0
            nn.init.normal_(p, mean=0.0, std=std * scale)
        for m in self.modules():
            if isinstance(m, nn.RMSNorm):
                nn.init.ones_(m.weight)

    # ------------------------------------------------------------------ attributes

    @property
    def hidden_size(self) -> int:
        return self.dims.dim

    @property
    def vocab_size(self) -> int:
        return self.tok_embeddings.num_embeddings

    # ------------------------------------------------------------------ forward

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings(input_ids)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.tok_embeddings.weight
        return KVCache(self.dims, batch, max_len, p.dtype, p.device)

    def _mask(
        self, L: int, start: int, attention_mask: torch.Tensor | None, document_ids: torch.Tensor | None,
        device: torch.device,
    ) -> torch.Tensor | None:
        """Boolean mask [B|1, 1, L, start+L] (True = attend), or None for the plain causal / one-token case."""
        if attention_mask is None and document_ids is None and (start == 0 or L == 1):
            return None
        q_pos = torch.arange(start, start + L, device=device)
        k_pos = torch.arange(start + L, device=device)
        mask = (k_pos[None, :] <= q_pos[:, None])[None, None]  # causal
        if document_ids is not None:
            if start != 0:
                raise ValueError("document_ids cannot be combined with a non-empty kv_cache")
            mask = mask & (document_ids[:, None, :, None] == document_ids[:, None, None, :])
        if attention_mask is not None:
            if attention_mask.shape[-1] != start + L:
                raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} keys, expected {start + L}")
            mask = mask & attention_mask.bool()[:, None, None, :]
            mask = mask | (k_pos[None, :] == q_pos[:, None])[None, None]  # padded queries attend to themselves
        return mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        output_hidden_states: bool = False,
    ) -> LMOutput:
        h, hidden = self._final_hidden(input_ids, inputs_embeds, attention_mask, document_ids, position_ids,
                                       kv_cache, output_hidden_states)
        return LMOutput(self.output(h), hidden, kv_cache)

    def _final_hidden(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, attention_mask: torch.Tensor | None,
        document_ids: torch.Tensor | None, position_ids: torch.Tensor | None, kv_cache: KVCache | None,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The normed hidden states the output head reads [B, L, D], and (on request) every layer's."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        h = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        b, L, _ = h.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if kv_cache is not None and start + L > kv_cache.max_len:
            raise ValueError(f"kv_cache holds {kv_cache.max_len} positions, need {start + L}")
        if position_ids is None:
            if start + L > self.dims.max_seq_len:
                raise DataError(f"sequence of {start + L} positions exceeds the model's max_seq_len {self.dims.max_seq_len}")
        elif int(position_ids.max()) >= self.dims.max_seq_len:
            raise DataError(f"position {int(position_ids.max())} exceeds the model's max_seq_len {self.dims.max_seq_len}")
        # cos/sin: [B|1, L, 1, hd], computed once per forward and broadcast over heads in every layer
        if position_ids is None:
            cos, sin = self.rope_cos[start : start + L], self.rope_sin[start : start + L]
        elif position_ids.dim() == 3:
            if position_ids.shape[-1] != 3:
                raise DataError(f"position_ids {tuple(position_ids.shape)}: expected [B, L] or [B, L, 3] (time, row, column)")
            pick = self.rope_axis.view(1, 1, 1, -1).expand(*position_ids.shape[:2], 1, -1)
            cos = self.rope_cos[position_ids].gather(2, pick).squeeze(2)
            sin = self.rope_sin[position_ids].gather(2, pick).squeeze(2)
        else:
            cos, sin = self.rope_cos[position_ids], self.rope_sin[position_ids]
        cos, sin = (t.to(h.dtype).view(-1, L, 1, self.dims.head_dim) for t in (cos, sin))
        mask = self._mask(L, start, attention_mask, document_ids, h.device)
        hidden = [h] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, kv_cache, i)
            if hidden is not None:
                hidden.append(h)
        h = self.norm(h)
        if hidden is not None:
            hidden[-1] = h
        if kv_cache is not None:
            kv_cache.pos = start + L
        return h, tuple(hidden) if hidden is not None else None

    # ------------------------------------------------------------------ trainer interface

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        input_ids = batch["input_ids"]
        check_token_ids(input_ids, self.vocab_size, "transformer input_ids")
        link = TiedGradient() if self.dims.tie_embeddings else None
        emb = tied_embedding(input_ids, self.tok_embeddings.weight, link) if link is not None else self.embed(input_ids)
        h, _ = self._final_hidden(None, emb, None, batch.get("document_ids"), batch.get("position_ids"), None, False)
        return self.head_loss(h, batch["labels"], link)

    def embeds_loss(
        self, inputs_embeds: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token loss of a sequence given as embeddings (a VLM's image + text tokens), fused head."""
        h, _ = self._final_hidden(None, inputs_embeds, None, None, position_ids, None, False)
        return self.head_loss(h, labels)

    def head_loss(
        self, h: torch.Tensor, labels: torch.Tensor, link: TiedGradient | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token loss of the output head on final hidden states ``h`` [B, L, D].

        The head and the loss are fused (:mod:`.linear_cross_entropy`: no [tokens, vocab] logits in
        autograd, fewer passes and fresh buffers, same value and gradients; under autocast or bf16 weights
        bf16 matmuls with a float32 log-softmax). ``link``: see ``compute_loss`` (tied weights).
        """
        loss, n = linear_cross_entropy(h, self.output.weight, labels, self._ce_workspace, link)
        return loss, {"tokens": float(n)}

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        return (TransformerBlock,)

    def matmul_params(self) -> int:
        """Parameters that take part in a matmul: all but the input embedding table (+ the head if tied)."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.tok_embeddings.weight.numel()
        return total - emb + (emb if self.dims.tie_embeddings else 0)

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        L = int(batch["input_ids"].shape[1])
        d = self.dims
        return float(6 * self.matmul_params() * L + 12 * d.n_layers * d.n_heads * d.head_dim * L * L)

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """Save the tokenizer into ``out_dir/tokenizer``; returns config fields that point inside the export."""
        fields: dict[str, Any] = {"vocab_size": self.vocab_size}
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(Path(out_dir) / "tokenizer"))
            fields["tokenizer"] = "tokenizer"
        return fields

    def generate(
        self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
        top_p: float | None = None, **kwargs: Any,
    ) -> torch.Tensor:
        return generate(self, input_ids, max_new_tokens, temperature, top_k, top_p, **kwargs)

    def resize_token_embeddings(self, n: int) -> None:
        """Grow/shrink the vocabulary; new rows start at the mean of the old embeddings."""
        old = self.tok_embeddings.weight.data
        if n == old.shape[0]:
            return
        keep = min(n, old.shape[0])
        new_emb = nn.Embedding(n, old.shape[1], device=old.device, dtype=old.dtype)
        new_emb.weight.data[:keep] = old[:keep]
        new_emb.weight.data[keep:] = old.mean(dim=0, keepdim=True)
        self.tok_embeddings = new_emb
        if self.dims.tie_embeddings:
            self.output = nn.Linear(old.shape[1], n, bias=False, device=old.device, dtype=old.dtype)
            self.output.weight = self.tok_embeddings.weight
        else:
            old_out = self.output.weight.data
            head = nn.Linear(old.shape[1], n, bias=False, device=old.device, dtype=old.dtype)
            head.weight.data[:keep] = old_out[:keep]
            head.weight.data[keep:] = old_out.mean(dim=0, keepdim=True)
            self.output = head
        self.dims = Dims(**{**self.dims.__dict__, "vocab_size": n})


def resolve_dims(cfg: Transformer.Config, tokenizer: Any = None) -> Dims:
    """Preset values, overridden by explicit fields, validated."""
    values: dict[str, Any] = dict(PRESETS[cfg.preset]) if cfg.preset else {}
    for name in _DIM_FIELDS:
        if getattr(cfg, name) is not None:
            values[name] = getattr(cfg, name)
    missing = [n for n in ("dim", "n_layers", "n_heads") if n not in values]
    if missing:
        raise ConfigError(f"model: set a preset ({', '.join(PRESETS)}) or give {', '.join(missing)}")
    values.setdefault("n_kv_heads", values["n_heads"])
    values.setdefault("ffn_dim", _round_up(int(8 * values["dim"] / 3), 64))
    values.setdefault("max_seq_len", 2048)
    vocab = cfg.vocab_size
    if vocab is None:
        if tokenizer is None:
            raise ConfigError("model.vocab_size: give vocab_size or a tokenizer to derive it from")
        vocab = _round_up(len(tokenizer), 64)
    if tokenizer is not None:
        check_vocab(tokenizer, vocab, "model")
    if values["dim"] % values["n_heads"] or (values["dim"] // values["n_heads"]) % 2:
        raise ConfigError(f"model: dim {values['dim']} must split into n_heads {values['n_heads']} even-sized heads")
    if values["n_heads"] % values["n_kv_heads"]:
        raise ConfigError(f"model: n_heads {values['n_heads']} must be a multiple of n_kv_heads {values['n_kv_heads']}")
    return Dims(
        vocab_size=vocab, rope_theta=cfg.rope_theta, norm_eps=cfg.norm_eps, qk_norm=cfg.qk_norm,
        tie_embeddings=cfg.tie_embeddings, init_std=cfg.init_std, **values,
    )
