"""``backbone`` components for action experts: ``foundry_vlm`` (our VLM export) and ``vision_encoder``.

Both implement the :class:`foundry_core.interfaces.Backbone` contract: ``encode(images uint8
[B, N, 3, H, W], prompts) -> (tokens [B, L, out_dim], mask bool [B, L])`` plus ``out_dim``. (``hf_vlm``
is registered as a backbone directly: :class:`foundry_vision.models.hf_vlm.HFVLM`.) The action
package builds them with ``registry.build("backbone", node, ctx)`` and never imports this module.

``export_artifacts(out_dir)`` writes what rebuilds the backbone without its original folder and
returns the node fields to store (paths relative to ``out_dir``).

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_backbones.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from foundry_core.config import Node, component, to_dict
from foundry_core.errors import ConfigError
from foundry_core.freeze import freeze_by_patterns
from foundry_core.registry import BuildContext


class FoundryVLMBackbone(nn.Module):
    """A VLM trained by our trainer, loaded from its export folder (``load_pretrained``): a composed
    ``vlm`` or a fine-tuned ``hf_vlm`` (LLM -> VLM -> VLA and HF VLM -> VLA are the same one line)."""

    @dataclass(kw_only=True)
    class Config:
        #: The VLM run's ``export/`` folder (local path or fsspec URL) of a ``vlm`` or ``hf_vlm``.
        path: str
        #: Hidden-state layers (0 = embeddings, -1 = last), concatenated on the feature axis.
        layers: list[int] = field(default_factory=lambda: [-1])
        #: Every token of images + prompt (``all``) or only the last token (``last``).
        tokens: Literal["all", "last"] = "all"
        #: Parameter globs (``vision*``, ``projector*``, ``llm*``) to freeze. Only these: what the VLM's
        #: own run froze (its ``freeze``) trains here unless named again.
        freeze: list[str] = field(default_factory=list)
        #: ``pretrained``: the export's weights. ``random``: the same architecture and tokenizer with every
        #: weight freshly initialized, the honest baseline for what LLM/VLM pretraining buys.
        init: Literal["pretrained", "random"] = "pretrained"
        #: ``P > 0``: the instruction first, padded to P tokens, then the images (at fixed positions): in a
        #: causal LLM the image tokens then read the instruction, so the flat image read-out of an action
        #: expert sees which object it names. 0: images first (the VLM's captioning layout).
        prompt_first: int = 0

    def __init__(self, cfg: Config, vlm: nn.Module, vlm_node: dict[str, Any]) -> None:
        super().__init__()
        if not hasattr(vlm, "encode"):
            raise ConfigError(
                f"backbone foundry_vlm: the export at {cfg.path} is a {type(vlm).__name__}, not a vlm"
            )
        self.cfg = cfg
        self.vlm = vlm
        self.vlm_node = vlm_node  # the export's model node: re-exporting the VLM writes it again
        vlm.cfg.layers = list(cfg.layers)
        self.out_dim = int(vlm.hidden_size) * len(cfg.layers)
        # The VLM run's own `freeze` (kept in its exported config, re-applied when the VLM is built) was a
        # choice for that run; here only this backbone's `freeze` decides what trains.
        for p in vlm.parameters():
            p.requires_grad_(True)
        if cfg.freeze:
            freeze_by_patterns(vlm, cfg.freeze, "backbone.freeze")

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> FoundryVLMBackbone:
        from foundry_core.export import build_exported_architecture, export_folder, load_pretrained

        path = cfg.path
        if ctx.pretrained_dir is not None and "://" not in path and not Path(path).is_absolute():
            path = str(Path(ctx.pretrained_dir) / path)
        folder = export_folder(path)
        node = yaml.safe_load((folder / "config.yaml").read_text())["model"]
        if cfg.init == "random":
            vlm, _ = build_exported_architecture(folder, device=ctx.device, registry=ctx.registry)
        else:
            vlm = load_pretrained(folder, device=ctx.device, registry=ctx.registry)
        return cls(cfg, vlm.train(), node)

    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.prompt_first:
            tokens, mask = self.vlm.encode(images, list(prompts), prompt_first=self.cfg.prompt_first)
        else:
            tokens, mask = self.vlm.encode(images, list(prompts))
        if self.cfg.tokens == "last":
            last = mask.long().sum(1) - 1
            tokens = tokens[torch.arange(tokens.shape[0], device=tokens.device), last][:, None]
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask

    def image_token_span(self, num_images: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(first, count) of the image tokens in ``encode``'s output. A ``vlm``: after BOS, before the
        prompt (prompts without ``<image>`` placeholders, as the VLA's instructions are); its encoder
        resizes every image to its own size, so ``image_size`` does not change the count. An ``hf_vlm``
        derives it from its processor."""
        if self.cfg.tokens != "all":
            raise ConfigError(
                "backbone foundry_vlm: tokens: last keeps no image tokens (image_readout needs tokens: all)"
            )
        if hasattr(self.vlm, "image_token_span"):
            if self.cfg.prompt_first:
                raise ConfigError("backbone foundry_vlm: prompt_first needs a composed vlm export, not an hf_vlm")
            return self.vlm.image_token_span(num_images, image_size)
        first = (0 if self.vlm.tokenizer.bos_token_id is None else 1) + self.cfg.prompt_first
        return first, num_images * int(self.vlm.tokens_per_image)

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        return tuple(self.vlm.fsdp_block_types())

    def encode_flops(self) -> float:
        """Forward FLOPs per sample of the last ``encode``."""
        own = getattr(self.vlm, "encode_flops", None)
        return float(own()) if own is not None else 0.0

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """A full VLM export in ``out_dir`` (the owner's weights overwrite it on load)."""
        from foundry_core.export import export_model

        export_model(self.vlm, self.vlm_node, out_dir)
        return {"path": "."}


class VisionEncoderBackbone(nn.Module):
    """An image encoder as a backbone: all patch tokens, and optionally the instruction's UTF-8 bytes.

    Without ``text`` it ignores the prompt (the vision-only VLA baseline; a VLA that asks for the
    instruction is refused at build time). With ``text: bytes`` each byte of the instruction becomes one
    token (a learned byte embedding plus a learned position), appended after the image tokens: language
    conditioning trained from scratch that needs no tokenizer and no pretrained language model, enough
    to tell apart the instructions of a multi-task mix (e.g. Meta-World MT10).
    """

    @dataclass(kw_only=True)
    class Config:
        encoder: Node = component("encoder")
        freeze: list[str] = field(default_factory=list)
        #: ``none``: the prompt is ignored; ``bytes``: one token per UTF-8 byte of the prompt.
        text: Literal["none", "bytes"] = "none"
        #: With ``text: bytes``: longer prompts are cut to this many bytes.
        max_text_bytes: int = 96

        def validate(self) -> None:
            if self.max_text_bytes < 1:
                raise ConfigError(f"backbone.max_text_bytes must be >= 1, got {self.max_text_bytes}")

    def __init__(self, cfg: Config, encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.out_dim = int(encoder.out_dim)
        self.reads_prompts = cfg.text != "none"
        if self.reads_prompts:
            self.byte_embedding = nn.Embedding(256, self.out_dim)
            self.byte_position = nn.Parameter(torch.randn(cfg.max_text_bytes, self.out_dim) * 0.02)
        if cfg.freeze:
            freeze_by_patterns(self, cfg.freeze, "backbone.freeze")

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> VisionEncoderBackbone:
        return cls(cfg, ctx.registry.build("encoder", cfg.encoder, ctx, where="backbone.encoder"))

    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(images)
        self._tokens = int(tokens.shape[1])  # image tokens (for encode_flops)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if not self.reads_prompts:
            return tokens, mask
        text, text_mask = self._byte_tokens(prompts, tokens.device)
        return torch.cat([tokens, text.to(tokens.dtype)], 1), torch.cat([mask, text_mask], 1)

    def _byte_tokens(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        limit = self.cfg.max_text_bytes
        encoded = [p.encode("utf-8")[:limit] for p in prompts]
        length = max(1, max((len(b) for b in encoded), default=0))
        ids = torch.zeros(len(prompts), length, dtype=torch.long)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, b in enumerate(encoded):
            ids[i, : len(b)] = torch.tensor(list(b), dtype=torch.long)
            mask[i, : len(b)] = True
        ids, mask = ids.to(device), mask.to(device)
        return self.byte_embedding(ids) + self.byte_position[:length], mask

    def encode_flops(self) -> float:
        """Forward FLOPs per sample of the last ``encode``: 2 x encoder params x image tokens (a lower
        bound: the encoder's attention is left out)."""
        return 2.0 * sum(p.numel() for p in self.encoder.parameters()) * getattr(self, "_tokens", 0)

    def image_token_span(self, num_images: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(first, count) of the image tokens in ``encode``'s output: all of them (the encoder resizes
        to its own size, so ``image_size`` does not change the count)."""
        per_image = getattr(self.encoder, "tokens_per_image", None)
        if per_image is None:
            raise ConfigError(
                f"backbone vision_encoder: {type(self.encoder).__name__} has no fixed tokens_per_image"
            )
        return 0, num_images * int(per_image)

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """The encoder's own files (HF config + processor) under ``encoder/``; nothing for a ``vit``."""
        inner = getattr(self.encoder, "export_artifacts", None)
        if inner is None:
            return {}
        fields = inner(str(Path(out_dir) / "encoder")) or {}
        paths = {k: str(Path("encoder") / v) for k, v in fields.items() if k == "path"}
        return {"encoder": {**to_dict(self.cfg.encoder), **fields, **paths}}
