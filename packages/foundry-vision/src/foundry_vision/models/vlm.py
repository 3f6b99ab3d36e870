"""``vlm``: the composed vision-language model, encoder -> projector -> LLM.

Each image becomes ``tokens_per_image`` projected tokens that replace the ``<image>`` placeholders of
the prompt (one ``<image>`` per image, expanded here to ``tokens_per_image`` copies; a prompt with no
``<image>`` gets them prepended). The LLM is our ``transformer`` or an ``hf_causal_lm`` (both expose
``embed``, ``forward(inputs_embeds=...)``, ``new_cache``, ``resize_token_embeddings``), loaded from an
LLM run's export in one config line (``llm: {path: runs/llm/export}``, see :mod:`.llm_loading`).

Loss: caption/answer tokens only for ``image_caption`` batches; ``text`` batches (co-training) go
to the LLM's own loss. Generation uses the LLM's KV cache. ``encode`` (hidden states of chosen layers
over images + prompt) is what the ``foundry_vlm`` backbone returns.

Parameter names start with ``vision.``, ``projector.``, ``llm.`` so ``freeze: ["vision*"]`` works.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_vlm.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from foundry_core.config import Node, component, to_dict
from foundry_core.errors import ConfigError, DataError
from foundry_core.freeze import freeze_by_patterns
from foundry_core.models.generation import next_token_loss
from foundry_core.registry import BuildContext
from foundry_vision.encoders.projector import Projector, ProjectorConfig
from foundry_vision.models.llm_loading import IMAGE_TOKEN, ensure_image_token, load_llm
from foundry_vision.preprocess import check_images


class VLM(nn.Module):
    """Composed VLM; see the module docstring."""

    @dataclass(kw_only=True)
    class Config:
        #: ``{path: <LLM export or HF folder>}`` or a model node (``{name: transformer, ...}``).
        llm: dict[str, Any]
        encoder: Node = component("encoder")
        projector: ProjectorConfig = field(default_factory=ProjectorConfig)
        #: Parameter globs to freeze (``vision*``, ``projector*``, ``llm*``, ``llm.layers.0.*``).
        freeze: list[str] = field(default_factory=list)
        #: Grow the LLM's embedding table when ``<image>`` is new (new rows = mean of the old rows).
        resize_embeddings: bool = True
        #: Longest training sequence (image tokens included); longer captions are truncated.
        max_length: int = 512
        max_new_tokens: int = 32
        #: Hidden-state layers returned by :meth:`encode` (concatenated on the feature axis).
        layers: list[int] = field(default_factory=lambda: [-1])
        #: LLM positions of the image tokens. ``sequence``: one after the other, row by row, like text.
        #: ``grid``: (time, row, column) coordinates, each image one time step (Qwen2-VL's M-RoPE; the
        #: LLM must take [B, L, 3] position ids, as ``transformer`` does). With ``sequence`` a small LLM
        #: finds an object's row from how far back it is but not its column (measured on the pipeline's
        #: held-out caption scenes, 16 image tokens: depth words right 88%, side words 44%; with the token
        #: order transposed, 63% and 77%); ``grid`` gives both axes the same footing (same budget: 88% and
        #: 51%, attributes 59% -> 66%; with 64 image tokens 99% and 75%, attributes 85%).
        image_positions: Literal["sequence", "grid"] = "sequence"

    def __init__(self, cfg: Config, vision: nn.Module, llm: nn.Module, llm_node: dict[str, Any], encoder_node: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.llm = llm
        self.llm_node = llm_node
        self.encoder_node = encoder_node
        self.image_token_id = ensure_image_token(llm, cfg.resize_embeddings)
        self.tokenizer = llm.tokenizer
        self.projector = Projector(cfg.projector, int(vision.out_dim), int(llm.hidden_size))
        self.tokens_per_image = self.projector.tokens_out(int(vision.tokens_per_image))
        self.hidden_size = int(llm.hidden_size)
        self.out_dim = self.hidden_size * len(cfg.layers)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id or 0
        self.grid = int(round(self.tokens_per_image**0.5))
        if cfg.image_positions == "grid":
            if self.grid * self.grid != self.tokens_per_image:
                raise ConfigError(
                    f"vlm.image_positions: grid needs a square grid of image tokens; the encoder + projector give "
                    f"{self.tokens_per_image} per image"
                )
            if not getattr(llm, "multi_axis_positions", False):
                raise ConfigError(
                    f"vlm.image_positions: grid needs an LLM that takes (time, row, column) position ids; "
                    f"{type(llm).__name__} does not (use image_positions: sequence)"
                )
        if cfg.freeze:
            freeze_by_patterns(self, cfg.freeze, "vlm.freeze")

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> VLM:
        llm, llm_node = load_llm(cfg.llm, ctx)
        enc_ctx = BuildContext(ctx.registry, ctx.device, dict(ctx.dims), None, ctx.pretrained_dir, dict(ctx.extras))
        vision = ctx.registry.build("encoder", cfg.encoder, enc_ctx, where="vlm.encoder")
        if not hasattr(vision, "tokens_per_image"):
            raise ConfigError(f"vlm.encoder: {cfg.encoder.name!r} has no fixed tokens_per_image; the VLM needs one")
        return cls(cfg, vision, llm, llm_node, to_dict(cfg.encoder)).to(ctx.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ tokens

    def _prefix_ids(self, prompt: str, num_images: int, key: str) -> list[int]:
        """``<image>`` x N (prepended when the prompt has none) + prompt, each ``<image>`` expanded."""
        text = prompt if IMAGE_TOKEN in prompt else IMAGE_TOKEN * num_images + prompt
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        found = sum(1 for i in ids if i == self.image_token_id)
        if found != num_images:
            raise DataError(f"vlm: sample {key!r} has {found} {IMAGE_TOKEN} placeholders in its prompt but {num_images} images")
        out: list[int] = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        for i in ids:
            out.extend([i] * self.tokens_per_image if i == self.image_token_id else [i])
        return out

    def _prompt_first_rows(self, num_images: int, prompts: list[str], length: int) -> tuple[list[list[int]], list[list[int]]]:
        """BOS + prompt padded to ``length`` + image tokens, and which of them are real (1) or padding (0)."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        image = [self.image_token_id] * (num_images * self.tokens_per_image)
        rows, keep = [], []
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if len(ids) > length or self.image_token_id in ids:
                raise DataError(
                    f"vlm: prompt {i} ({prompt!r}) has {len(ids)} tokens; prompt_first allows {length} "
                    "and no <image> placeholder (raise the backbone's prompt_first)"
                )
            pad = length - len(ids)
            rows.append(bos + ids + [self.pad_id] * pad + image)
            keep.append([1] * (len(bos) + len(ids)) + [0] * pad + [1] * len(image))
        return rows, keep

    def _positions(self, ids: torch.Tensor) -> torch.Tensor | None:
        """[B, L, 3] (time, row, column) LLM positions for ``image_positions: grid``, else None (sequential).

        A text token advances all three by one; an image's tokens share the time coordinate of where the
        image starts and add their row and column to the other two; the image as a whole advances the
        position by its side (the next token is one past its largest coordinate).
        """
        if self.cfg.image_positions != "grid":
            return None
        is_img = (ids == self.image_token_id).long()
        text_before = torch.cumsum(1 - is_img, 1) - (1 - is_img)
        img_before = torch.cumsum(is_img, 1) - is_img  # image tokens before this one (each image complete)
        base = text_before + self.grid * torch.div(img_before, self.tokens_per_image, rounding_mode="floor")
        cell = img_before % self.tokens_per_image
        row = torch.div(cell, self.grid, rounding_mode="floor") * is_img
        col = (cell % self.grid) * is_img
        return torch.stack((base, base + row, base + col), dim=-1)

    def _pad(self, rows: list[list[int]], fill: int) -> torch.Tensor:
        n = max(len(r) for r in rows)
        return torch.tensor([r + [fill] * (n - len(r)) for r in rows], dtype=torch.long, device=self.device)

    def _embed(self, ids: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the projected image tokens written at the placeholder positions."""
        emb = self.llm.embed(ids)
        feats = self.projector(self.vision(images.to(self.device)), images.shape[1]).to(emb.dtype)
        mask = ids == self.image_token_id
        per_sample = mask.sum(1)
        expected = images.shape[1] * self.tokens_per_image
        if bool((per_sample != expected).any()):
            raise DataError(f"vlm: image token count {per_sample.tolist()} != {expected} placeholders per sample")
        return emb.masked_scatter(mask[..., None], feats)

    # ------------------------------------------------------------------ TrainableModel

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        modality = batch.get("modality")
        if modality == "text":
            return self.llm.compute_loss(batch)
        if modality != "image_caption":
            raise DataError(f"vlm: cannot train on modality {modality!r} (expected 'image_caption' or 'text')")
        images = batch["images"]
        check_images(images, "vlm")
        captions = list(batch["captions"])
        prompts = list(batch.get("prompts") or [""] * len(captions))
        keys = list(batch.get("keys") or [str(i) for i in range(len(captions))])
        eos = self.tokenizer.eos_token_id
        rows, targets = [], []
        for prompt, cap, key in zip(prompts, captions, keys):
            if not cap:
                raise DataError(f"vlm: sample {key!r} has an empty caption")
            prefix = self._prefix_ids(prompt, images.shape[1], key)
            if len(prefix) >= self.cfg.max_length:
                raise DataError(f"vlm: sample {key!r}: prompt + image tokens ({len(prefix)}) exceed vlm.max_length {self.cfg.max_length}")
            cap_ids = self.tokenizer(cap, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
            seq = (prefix + cap_ids)[: self.cfg.max_length]
            rows.append(seq)
            # position t predicts token t + 1; only caption tokens are targets
            targets.append([-100] * (len(prefix) - 1) + seq[len(prefix) :] + [-100])
        ids = self._pad(rows, self.pad_id)
        labels = self._pad(targets, -100)
        embeds = self._embed(ids, images)
        positions = self._positions(ids)
        if positions is not None:  # grid positions: only an LLM that takes them (checked at construction)
            return self.llm.embeds_loss(embeds, labels, position_ids=positions)
        if hasattr(self.llm, "embeds_loss"):  # our LMs (the transformer fuses head + loss, skips image rows)
            return self.llm.embeds_loss(embeds, labels)
        loss, n = next_token_loss(self.llm(inputs_embeds=embeds).logits, labels)
        return loss, {"tokens": float(n)}

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        vis = getattr(self.vision, "block_types", lambda: ())()
        return tuple(vis) + tuple(self.llm.fsdp_block_types())

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        """LLM FLOPs at the mean sequence length + 6 x (encoder + projector params) x patch tokens."""
        if batch.get("modality") == "text":
            return float(self.llm.flops_per_sample(batch))
        n_img = int(batch["images"].shape[1])
        caps = list(batch["captions"])
        cap_len = sum(len(self.tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for c in caps) // max(1, len(caps))
        length = n_img * self.tokens_per_image + 1 + cap_len
        llm = float(self.llm.flops_per_sample({"input_ids": torch.zeros(1, length, dtype=torch.long)}))
        vis_params = sum(p.numel() for p in self.vision.parameters()) + sum(p.numel() for p in self.projector.parameters())
        return llm + 6.0 * vis_params * n_img * int(self.vision.tokens_per_image)

    def encode_flops(self) -> float:
        """Forward FLOPs per sample of the last ``encode`` (a third of the training estimate above)."""
        length = getattr(self, "_encode_length", 0)
        if not length:
            return 0.0
        llm = float(self.llm.flops_per_sample({"input_ids": torch.zeros(1, length, dtype=torch.long)})) / 3.0
        vis_params = sum(p.numel() for p in self.vision.parameters()) + sum(p.numel() for p in self.projector.parameters())
        return llm + 2.0 * vis_params * self._encode_images * int(self.vision.tokens_per_image)

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """LLM (tokenizer with ``<image>``, config) under ``llm/``, encoder files under ``encoder/``."""
        llm_fields = self.llm.export_artifacts(str(Path(out_dir) / "llm")) or {}
        llm_node = {**self.llm_node, **{k: _under("llm", v, k) for k, v in llm_fields.items()}}
        fields: dict[str, Any] = {"llm": llm_node}
        enc_export = getattr(self.vision, "export_artifacts", None)
        if enc_export is not None:
            enc_fields = enc_export(str(Path(out_dir) / "encoder")) or {}
            fields["encoder"] = {**self.encoder_node, **{k: _under("encoder", v, k) for k, v in enc_fields.items()}}
        return fields

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy captioning with the LLM's KV cache: the prompt (images included) is encoded once."""
        check_images(images, "vlm.generate")
        steps = max_new_tokens or self.cfg.max_new_tokens
        eos = self.tokenizer.eos_token_id
        was_training = self.training
        self.eval()
        texts = []
        try:
            for i, prompt in enumerate(prompts):
                ids = self._pad([self._prefix_ids(prompt, images.shape[1], str(i))], self.pad_id)
                cache = self.llm.new_cache(1, ids.shape[1] + steps)
                positions = self._positions(ids)
                out = self.llm(inputs_embeds=self._embed(ids, images[i : i + 1]), kv_cache=cache, position_ids=positions)
                new: list[int] = []
                for k in range(steps):
                    nxt = int(out.logits[0, -1].argmax())
                    if nxt == eos:
                        break
                    new.append(nxt)
                    step_pos = None if positions is None else (positions.max() + 1 + k).view(1, 1, 1).expand(1, 1, 3)
                    out = self.llm(input_ids=torch.tensor([[nxt]], device=self.device), kv_cache=out.kv_cache,
                                   position_ids=step_pos)
                texts.append(self.tokenizer.decode(new, skip_special_tokens=True).strip())
        finally:
            self.train(was_training)
        return texts

    def encode(
        self, images: torch.Tensor, prompts: list[str], prompt_first: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of ``cfg.layers`` over images + prompt: ``(tokens [B, L, out_dim], mask [B, L])``.

        ``prompt_first = P > 0``: the prompt comes first, padded to ``P`` tokens (masked), then the
        images, at the fixed positions ``1 + P ...``: in a causal LLM the image tokens then read the
        instruction (which object it names), and a flat read-out of them sees it."""
        check_images(images, "vlm.encode")
        if prompt_first:
            rows, keep = self._prompt_first_rows(images.shape[1], prompts, prompt_first)
            ids, mask = self._pad(rows, self.pad_id), self._pad(keep, 0).bool()
            out = self.llm(inputs_embeds=self._embed(ids, images), attention_mask=mask, position_ids=self._positions(ids),
                           output_hidden_states=True)
            hs = out.hidden_states
        else:
            rows = [self._prefix_ids(p, images.shape[1], str(i)) for i, p in enumerate(prompts)]
            ids = self._pad(rows, self.pad_id)
            mask = self._pad([[1] * len(r) for r in rows], 0).bool()
            hs = self.llm(inputs_embeds=self._embed(ids, images), position_ids=self._positions(ids),
                          output_hidden_states=True).hidden_states
        self._encode_length, self._encode_images = int(ids.shape[1]), int(images.shape[1])
        try:
            tokens = torch.cat([hs[i] for i in self.cfg.layers], dim=-1)
        except IndexError:
            raise ConfigError(f"layers: {self.cfg.layers} out of range for {len(hs)} hidden states") from None
        return tokens, mask


def _under(sub: str, value: Any, key: str) -> Any:
    """Paths written by a sub-model's ``export_artifacts`` are relative to its folder; make them relative to ours."""
    if key in ("path", "tokenizer") and isinstance(value, str) and value != "byte" and not Path(value).is_absolute():
        return f"{sub}/{value}"
    return value
