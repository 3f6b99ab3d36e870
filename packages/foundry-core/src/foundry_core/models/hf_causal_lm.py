"""``hf_causal_lm``: any local Hugging Face causal LM folder (``AutoModelForCausalLM``) behind our LM interface.

Same interface as ``transformer`` (see :mod:`foundry_core.models.transformer`): ``compute_loss``,
``embeds_loss``, ``fsdp_block_types`` (the decoder-layer classes named by the model's ``_no_split_modules``),
``flops_per_sample`` (same formula), ``export_artifacts``, ``generate`` (our loop over HF's cache),
``embed``, ``forward(...) -> LMOutput``, ``new_cache``, ``resize_token_embeddings``, ``hidden_size``,
``vocab_size``, ``tokenizer``. Labels in our batches are already shifted, so the loss is computed
here, never by HF. Packed batches: ``document_ids`` become a 4-D boolean block-diagonal causal mask,
which HF's attention uses as given (eager and SDPA attention).

Weights (:mod:`foundry_core.models.hf_weights`): a folder without a loadable weight file is an error
unless ``init: random`` (random weights of the architecture, on purpose) or it sits inside a Foundry
export (the weights are the export's safetensors). Nothing is downloaded: ``local_files_only`` always. :meth:`HFCausalLM.save_hf`
writes a plain HF folder (weights + config + tokenizer) that ``transformers`` loads directly.

Test: ``uv run pytest packages/foundry-core/tests/test_llm_hf_causal_lm.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foundry_core.errors import ConfigError
from foundry_core.models.generation import LMOutput, check_token_ids, generate, next_token_loss
from foundry_core.models.hf_weights import Init, load_pretrained_checked, wants_pretrained_weights
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import check_vocab, load_tokenizer


class HFCausalLM(nn.Module):
    """A wrapped ``AutoModelForCausalLM``; ``self.model`` is the HF module (its state dict keys get ``model.``)."""

    @dataclass(kw_only=True)
    class Config:
        #: Local HF model folder (``config.json`` and usually weights); relative paths resolve in an export.
        path: str
        #: Tokenizer folder (or ``byte``); default: ``path`` when it holds tokenizer files.
        tokenizer: str | None = None
        #: ``pretrained``: the folder's weights (an error when it has none); ``random``: random weights of
        #: the same architecture, on purpose.
        init: Init = "pretrained"
        attn_implementation: str = "sdpa"

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer is not None:
            check_vocab(tokenizer, self.vocab_size, f"hf_causal_lm ({model.config.model_type})")

    @classmethod
    def from_config(cls, cfg: HFCausalLM.Config, ctx: BuildContext) -> HFCausalLM:
        from transformers import AutoConfig, AutoModelForCausalLM

        def resolve(p: str) -> str:
            if ctx.pretrained_dir is not None and p != "byte" and not Path(p).is_absolute():
                return str(Path(ctx.pretrained_dir) / p)
            return p

        folder = Path(resolve(cfg.path))
        if not (folder / "config.json").is_file():
            raise ConfigError(f"hf_causal_lm.path: no config.json in {folder} (give a local Hugging Face model folder)")
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if wants_pretrained_weights(folder, cfg.init, "hf_causal_lm", in_export=ctx.pretrained_dir is not None):
            model = load_pretrained_checked(
                AutoModelForCausalLM.from_pretrained, folder, "hf_causal_lm",
                dtype=torch.float32, attn_implementation=cfg.attn_implementation,
            )
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=cfg.attn_implementation)
        tokenizer = ctx.tokenizer
        if cfg.tokenizer is not None:
            tokenizer = load_tokenizer(resolve(cfg.tokenizer))
        elif (folder / "tokenizer_config.json").exists() or (folder / "tokenizer.json").exists():
            tokenizer = load_tokenizer(folder)
        return cls(model, tokenizer)

    # ------------------------------------------------------------------ attributes

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

    # ------------------------------------------------------------------ forward

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def new_cache(self, batch: int, max_len: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: Any = None,
        output_hidden_states: bool = False,
    ) -> LMOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        mask = attention_mask
        if document_ids is not None:
            if kv_cache is not None and kv_cache.get_seq_length() > 0:
                raise ValueError("document_ids cannot be combined with a non-empty kv_cache")
            L = document_ids.shape[1]
            causal = torch.ones(L, L, dtype=torch.bool, device=document_ids.device).tril()
            mask = causal[None, None] & (document_ids[:, None, :, None] == document_ids[:, None, None, :])
            if attention_mask is not None:
                mask = mask & attention_mask.bool()[:, None, None, :]
        out = self.model(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
            cache=kv_cache, use_cache=kv_cache is not None, output_hidden_states=output_hidden_states,
        )
        hidden = tuple(out.hidden_states) if output_hidden_states else None
        return LMOutput(out.logits, hidden, out.get("cache", kv_cache))

    # ------------------------------------------------------------------ trainer interface

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        input_ids = batch["input_ids"]
        check_token_ids(input_ids, self.vocab_size, f"hf_causal_lm ({self.model.config.model_type}) input_ids")
        out = self(input_ids, document_ids=batch.get("document_ids"), position_ids=batch.get("position_ids"))
        loss, n = next_token_loss(out.logits, batch["labels"])
        return loss, {"tokens": float(n)}

    def embeds_loss(self, inputs_embeds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token loss of a sequence given as embeddings (a VLM's image + text tokens)."""
        loss, n = next_token_loss(self(inputs_embeds=inputs_embeds).logits, labels)
        return loss, {"tokens": float(n)}

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        names = set(getattr(self.model, "_no_split_modules", None) or [])
        types = {type(m) for m in self.model.modules() if type(m).__name__ in names}
        if not types:
            raise ConfigError(
                f"hf_causal_lm: cannot find the decoder layer class of {type(self.model).__name__} "
                f"(_no_split_modules={sorted(names)})"
            )
        return tuple(sorted(types, key=lambda t: t.__name__))

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        L = int(batch["input_ids"].shape[1])
        cfg = self.model.config.get_text_config()
        emb = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings()
        n = sum(p.numel() for p in self.model.parameters()) - emb.numel()
        if head is not None and head.weight is emb:
            n += emb.numel()  # tied: the table is used once more as the output matmul
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return float(6 * n * L + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * L * L)

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """Write the HF config (weights live in the trainer's safetensors) and the tokenizer into ``out_dir``."""
        self.model.config.save_pretrained(str(Path(out_dir) / "hf_config"))
        fields: dict[str, Any] = {"path": "hf_config", "init": "pretrained"}
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(Path(out_dir) / "tokenizer"))
            fields["tokenizer"] = "tokenizer"
        return fields

    def save_hf(self, out_dir: str) -> None:
        """A plain Hugging Face folder (weights, config, tokenizer) that ``from_pretrained`` loads."""
        self.model.save_pretrained(out_dir)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out_dir)

    def generate(
        self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
        top_p: float | None = None, **kwargs: Any,
    ) -> torch.Tensor:
        return generate(self, input_ids, max_new_tokens, temperature, top_k, top_p, **kwargs)

    def resize_token_embeddings(self, n: int) -> None:
        self.model.resize_token_embeddings(n, mean_resizing=True)
