"""The core's own components, registered through the same hooks as every plugin.

Import-light: only strings here, so ``foundry --help`` imports no torch.
"""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    register("transformer", "foundry_core.models.transformer:Transformer", description="decoder-only LM (RoPE, GQA, SwiGLU)")
    register("hf_causal_lm", "foundry_core.models.hf_causal_lm:HFCausalLM", description="any local Hugging Face causal LM folder")
    register("toy_regression", "foundry_core.models.toy:ToyMLP", description="tiny residual MLP (trainer tests, benchmarks)")


@hookimpl
def register_data_sources(register: Register) -> None:
    register("wds_text", "foundry_core.data.text:TokenizedTextShards", description="pre-tokenized text WebDataset shards + manifest")
    register("wds_text_untokenized", "foundry_core.data.text:RawTextShards", description="raw text WebDataset shards, tokenized on the fly")
    register("synthetic_regression", "foundry_core.data.synthetic:SyntheticRegression", description="in-memory y = xW + noise (tests, benchmarks)")


@hookimpl
def register_optimizers(register: Register) -> None:
    register("adamw", "foundry_core.train.optim:AdamW", description="AdamW; no decay on norms, biases, embeddings")
    register("sgd", "foundry_core.train.optim:SGD", description="SGD with momentum (Nesterov optional)")


@hookimpl
def register_schedules(register: Register) -> None:
    register("cosine", "foundry_core.train.schedule:Cosine", description="linear warmup, cosine decay")
    register("constant", "foundry_core.train.schedule:Constant", description="linear warmup, constant")
    register("wsd", "foundry_core.train.schedule:WarmupStableDecay", description="warmup, stable, linear decay")
