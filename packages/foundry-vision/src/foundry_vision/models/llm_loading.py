"""Load the LLM of a composed VLM from one config node, and make room for the VLM's special tokens.

``llm:`` accepts three forms:

* ``{path: runs/llm/export}``: a Foundry export folder (has ``config.yaml``), rebuilt with
  ``foundry_core.export.load_pretrained`` so the trained weights are really loaded;
* ``{path: /models/Qwen3-0.6B}``: a local Hugging Face causal-LM folder (``config.json``), built as
  ``hf_causal_lm``;
* ``{name: transformer, preset: debug, tokenizer: byte}`` (any ``model`` node): a fresh LLM.

Vocabulary: the VLM needs ``<image>`` in the tokenizer. When it is missing it is added as a special
token; when the tokenizer then outgrows the embedding table, the table is resized with
``resize_token_embeddings`` whose new rows are the **mean of the existing embeddings** (output head
too when untied), so a new token starts as an "average" token instead of noise.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_vlm_chain.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import SPECIAL_TOKENS

IMAGE_TOKEN = SPECIAL_TOKENS["image"]


def load_llm(node: Mapping[str, Any], ctx: BuildContext, where: str = "vlm.llm") -> tuple[nn.Module, dict[str, Any]]:
    """Build the LLM; return it and the ``model`` node that rebuilds it (for the VLM's export)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: expected a mapping ({{path: <export or HF folder>}} or a model node), got {node!r}")
    node = dict(node)
    if "name" in node:
        return ctx.registry.build("model", node, ctx, where=where), node
    if set(node) - {"path"}:
        raise ConfigError(f"{where}: with 'path' no other key is allowed (got {sorted(node)}); use a model node with 'name' instead")
    if "path" not in node:
        raise ConfigError(f"{where}: give 'path' (an LLM export or a Hugging Face folder) or a model node with 'name'")
    folder = Path(str(node["path"]))
    if ctx.pretrained_dir is not None and not folder.is_absolute():
        folder = Path(ctx.pretrained_dir) / folder
    if (folder / "config.yaml").is_file():
        from foundry_core.export import load_pretrained

        model = load_pretrained(str(folder), device=ctx.device, registry=ctx.registry).train()
        return model, dict(yaml.safe_load((folder / "config.yaml").read_text())["model"])
    if (folder / "config.json").is_file():
        hf_node = {"name": "hf_causal_lm", "path": str(folder)}
        return ctx.registry.build("model", hf_node, ctx, where=where), hf_node
    raise ConfigError(f"{where}.path: {folder} is neither a Foundry export (config.yaml) nor a Hugging Face folder (config.json)")


def ensure_image_token(llm: nn.Module, resize: bool, where: str = "vlm.llm") -> int:
    """Add ``<image>`` to the LLM's tokenizer if needed, resize the embeddings, return the token id."""
    tok = getattr(llm, "tokenizer", None)
    if tok is None:
        raise ConfigError(f"{where}: the LLM has no tokenizer (set the LLM's 'tokenizer' field)")
    if tok.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tok.unk_token_id):
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    need = len(tok)
    have = int(llm.vocab_size)
    if need > have:
        if not resize:
            raise ConfigError(
                f"{where}: the tokenizer has {need} tokens (with {IMAGE_TOKEN}) but the LLM's embedding table has "
                f"{have} rows and vlm.resize_embeddings is false; set it to true or give an LLM with vocab_size >= {need}"
            )
        llm.resize_token_embeddings(need)
        _mean_init_new_rows(llm, have, need)
    return int(tok.convert_tokens_to_ids(IMAGE_TOKEN))


def _mean_init_new_rows(llm: nn.Module, old: int, new: int) -> None:
    """Set rows ``old..new`` of every input/output embedding matrix to the mean of rows ``0..old``.

    The LLMs' own ``resize_token_embeddings`` may initialise differently (HF samples around the mean);
    doing it here makes the documented rule exact for every LLM.
    """
    import torch

    seen: set[int] = set()
    with torch.no_grad():
        for m in llm.modules():
            w = getattr(m, "weight", None)
            if isinstance(m, (nn.Embedding, nn.Linear)) and w is not None and w.shape[0] == new and id(w) not in seen:
                seen.add(id(w))
                w[old:] = w[:old].mean(dim=0, keepdim=True)
