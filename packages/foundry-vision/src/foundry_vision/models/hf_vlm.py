"""``hf_vlm``: Hugging Face VLMs (Qwen3-VL, Qwen2.5-VL, SmolVLM2/Idefics3, PaliGemma2) behind one interface.

Loaded from a local folder with ``AutoModelForImageTextToText`` + ``AutoProcessor`` (never the Hub).
One interface for every family: ``(images uint8 [B, N, 3, H, W], prompts) ->`` loss
(:meth:`compute_loss`), text (:meth:`generate`) or conditioning tokens (:meth:`encode`, the
``backbone`` contract). The processor handles each family's pixel layout (Qwen's flattened patches +
``image_grid_thw``, Idefics3's 5-D ``pixel_values`` + ``pixel_attention_mask``, PaliGemma's plain 4-D
pixels); this class only writes the family's image placeholder into the text and passes every tensor
the processor returns to the model.

Registered as ``model: hf_vlm`` (trainable) and ``backbone: hf_vlm`` (for action experts).

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_hf_vlm.py``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from foundry_core.errors import ConfigError, DataError
from foundry_core.freeze import freeze_by_patterns
from foundry_core.models.hf_weights import Init, load_pretrained_checked, wants_pretrained_weights
from foundry_core.registry import BuildContext
from foundry_vision.preprocess import check_images

#: model_type -> (family, accepted processor classes, placeholder text for one image)
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "qwen3_vl": ("qwen", ("Qwen3VLProcessor",), "<|vision_start|><|image_pad|><|vision_end|>"),
    "qwen2_5_vl": ("qwen", ("Qwen2_5_VLProcessor",), "<|vision_start|><|image_pad|><|vision_end|>"),
    "smolvlm": ("idefics", ("SmolVLMProcessor",), "<image>"),
    "idefics3": ("idefics", ("Idefics3Processor", "SmolVLMProcessor"), "<image>"),
    "paligemma": ("paligemma", ("PaliGemmaProcessor",), "<image>"),
}
#: What a prompt writes for "an image here", whatever the family.
IMAGE_TOKEN = "<image>"
#: Freeze aliases per family -> globs over the HF parameter names.
FREEZE_GROUPS: dict[str, dict[str, list[str]]] = {
    "qwen": {"vision": ["model.visual.blocks.*", "model.visual.patch_embed.*", "model.visual.pos_embed.*"],
             "projector": ["model.visual.merger.*", "model.visual.deepstack_merger_list.*"],
             "llm": ["model.language_model.*", "lm_head.*"]},
    "idefics": {"vision": ["model.vision_model.*"], "projector": ["model.connector.*"], "llm": ["model.text_model.*", "lm_head.*"]},
    "paligemma": {"vision": ["model.vision_tower.*"], "projector": ["model.multi_modal_projector.*"],
                  "llm": ["model.language_model.*", "lm_head.*"]},
}


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """HF-style labels (token i predicts itself) -> ours (position i predicts token i + 1)."""
    return F.pad(labels[:, 1:], (0, 1), value=-100)


def resolve_freeze(model: nn.Module, patterns: list[str], family: str, where: str) -> list[str]:
    """Expand aliases (``vision``/``projector``/``llm``); a glob may also omit the leading ``model.``."""
    names = [n for n, _ in model.named_parameters()]
    out: list[str] = []
    for p in patterns:
        if p in FREEZE_GROUPS[family]:
            out.extend(g for g in FREEZE_GROUPS[family][p] if any(fnmatch.fnmatchcase(n, g) for n in names))
        elif not p.startswith(("model.", "lm_head")) and any(fnmatch.fnmatchcase(n, "model." + p) for n in names):
            out.append("model." + p)
        else:
            out.append(p)
    return out


class HFVLM(nn.Module):
    """A local Hugging Face VLM folder; see the module docstring."""

    @dataclass(kw_only=True)
    class Config:
        #: Local folder with the model (``config.json`` + weights).
        path: str
        #: Processor folder; defaults to ``path``.
        processor: str | None = None
        #: Parameter globs or aliases (``vision``, ``projector``, ``llm``) to freeze.
        freeze: list[str] = field(default_factory=list)
        #: Backbone: which hidden-state layers to return (concatenated on the feature axis).
        layers: list[int] = field(default_factory=lambda: [-1])
        #: Backbone: every prompt token (``all``) or only the last one (``last``).
        tokens: Literal["all", "last"] = "all"
        dtype: Literal["float32", "bfloat16"] = "float32"
        max_new_tokens: int = 32
        #: ``pretrained``: the folder's weights (an error when it has none); ``random``: on purpose.
        init: Init = "pretrained"

    def __init__(self, cfg: Config, *, in_export: bool = False) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.cfg = cfg
        folder = Path(cfg.path)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"hf_vlm.path: {folder} is not a local Hugging Face model folder (no config.json)")
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model_type = config.model_type
        if model_type not in FAMILIES:
            raise ConfigError(f"hf_vlm.path: model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)}")
        self.model_type = model_type
        self.family, accepted, self.placeholder = FAMILIES[model_type]
        proc_dir = cfg.processor or cfg.path
        try:
            self.processor = AutoProcessor.from_pretrained(proc_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"hf_vlm.processor: cannot load a processor from {proc_dir}: {exc}") from None
        pname = type(self.processor).__name__
        if pname not in accepted:
            raise ConfigError(
                f"hf_vlm.processor: {proc_dir} holds a {pname}, but the model at {cfg.path} is {model_type!r} "
                f"(expects {' or '.join(accepted)}): processor and model families differ"
            )
        dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        if wants_pretrained_weights(folder, cfg.init, "hf_vlm", in_export=in_export):
            self.hf = load_pretrained_checked(AutoModelForImageTextToText.from_pretrained, folder, "hf_vlm", dtype=dtype)
        else:  # init: random, or an export folder (the weights come from the export's safetensors)
            self.hf = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        self.tokenizer = self.processor.tokenizer
        image_id = self.hf.config.image_token_id
        if self.tokenizer.convert_tokens_to_ids(self.processor.image_token) != image_id:
            raise ConfigError(
                f"hf_vlm.processor: the processor's image token {self.processor.image_token!r} has id "
                f"{self.tokenizer.convert_tokens_to_ids(self.processor.image_token)} but the model expects {image_id}"
            )
        self.hidden_size = int(self.hf.config.get_text_config().hidden_size)
        self.vocab_size = int(self.hf.get_input_embeddings().weight.shape[0])
        if len(self.tokenizer) > self.vocab_size:
            raise ConfigError(f"hf_vlm.path: tokenizer has {len(self.tokenizer)} tokens but the model only {self.vocab_size} embeddings")
        self.out_dim = self.hidden_size * len(cfg.layers)
        if cfg.freeze:
            freeze_by_patterns(self.hf, resolve_freeze(self.hf, cfg.freeze, self.family, "hf_vlm.freeze"), "hf_vlm.freeze")

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> HFVLM:
        if ctx.pretrained_dir is not None:  # relative paths point inside an export folder
            fix = {k: str(Path(ctx.pretrained_dir) / v) for k in ("path", "processor")
                   if isinstance(v := getattr(cfg, k), str) and not Path(v).is_absolute()}
            cfg = HFVLM.Config(**{**cfg.__dict__, **fix})
        return cls(cfg, in_export=ctx.pretrained_dir is not None).to(ctx.device)

    # ------------------------------------------------------------------ inputs

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def _texts(self, num_images: int, prompts: list[str], keys: list[str] | None = None) -> list[str]:
        """Prompts with the family's image placeholder: each ``<image>`` in a prompt becomes one, and a
        prompt without any gets ``num_images`` prepended; a count other than ``num_images`` is an error."""
        out = []
        for i, p in enumerate(prompts):
            n = p.count(IMAGE_TOKEN)
            if n == 0:
                out.append(self.placeholder * num_images + p)
                continue
            if n != num_images:
                key = keys[i] if keys else str(i)
                raise DataError(f"hf_vlm: sample {key!r} has {n} {IMAGE_TOKEN} placeholders in its prompt but {num_images} images")
            out.append(p.replace(IMAGE_TOKEN, self.placeholder) if self.placeholder != IMAGE_TOKEN else p)
        return out

    def _process(self, images: torch.Tensor, texts: list[str], suffix: list[str] | None = None, left_pad: bool = False) -> dict[str, Any]:
        check_images(images, f"hf_vlm ({self.model_type})")
        if len(texts) != images.shape[0]:
            raise DataError(f"hf_vlm: {images.shape[0]} image groups but {len(texts)} prompts")
        nested = [[img for img in sample] for sample in images.cpu()]
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt", "padding_side": "left" if left_pad else "right"}
        if suffix is not None:
            kwargs["suffix"] = suffix
        try:
            inputs = self.processor(images=nested, text=texts, **kwargs)
        except ValueError as exc:
            raise DataError(f"hf_vlm ({self.model_type}): the processor rejected the batch: {exc}") from None
        out = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.hf.dtype)
        n_placeholders = int((out["input_ids"] == self.hf.config.image_token_id).sum())
        if n_placeholders == 0:
            raise DataError(f"hf_vlm ({self.model_type}): no image tokens in the processed prompts")
        return out

    def _caption_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        images, captions = batch["images"], list(batch["captions"])
        prompts = list(batch.get("prompts") or [""] * len(captions))
        keys = batch.get("keys") or [str(i) for i in range(len(captions))]
        for key, cap in zip(keys, captions):
            if not cap:
                raise DataError(f"hf_vlm: sample {key!r} has an empty caption")
        if self.family == "paligemma":  # the processor builds prefix/suffix labels and token types
            inputs = self._process(images, self._texts(images.shape[1], prompts, keys), suffix=captions)
            inputs["labels"] = shift_labels(inputs["labels"])
            return inputs
        eos = self.tokenizer.eos_token or ""
        texts = [t + c + eos for t, c in zip(self._texts(images.shape[1], prompts, keys), captions)]
        inputs = self._process(images, texts)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        labels = torch.full_like(ids, -100)
        for i, cap in enumerate(captions):
            n = len(self.tokenizer(cap + eos, add_special_tokens=False)["input_ids"])
            end = int(mask[i].sum())  # right padding: real tokens are [0, end)
            labels[i, end - n : end] = ids[i, end - n : end]
        inputs["labels"] = shift_labels(labels)
        return inputs

    # ------------------------------------------------------------------ TrainableModel

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Caption/answer tokens only for ``image_caption`` batches; every label for ``text`` batches."""
        modality = batch.get("modality")
        if modality == "image_caption":
            inputs = self._caption_inputs(batch)
            labels = inputs.pop("labels")
        elif modality == "text":
            ids = batch["input_ids"].to(self.device)
            if int(ids.max()) >= self.vocab_size:
                raise DataError(f"hf_vlm: text batch has token id {int(ids.max())} >= vocab size {self.vocab_size}")
            inputs = {"input_ids": ids}
            labels = batch["labels"].to(self.device)
        else:
            raise DataError(f"hf_vlm: cannot train on modality {modality!r} (expected 'image_caption' or 'text')")
        try:
            logits = self.hf(**inputs, use_cache=False).logits
        except ValueError as exc:  # e.g. image features vs image placeholder tokens mismatch
            keys = batch.get("keys") or "(no keys)"
            raise DataError(f"hf_vlm ({self.model_type}): batch with sample keys {keys}: {exc}") from None
        n = int((labels != -100).sum())
        if n == 0:
            return logits.sum() * 0.0, {"tokens": 0.0}
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return loss, {"tokens": float(n)}

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        names = set(getattr(self.hf, "_no_split_modules", None) or [])
        return tuple({type(m) for m in self.hf.modules() if type(m).__name__ in names})

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        return 0.0

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """HF config + processor under ``hf_vlm/`` (weights live in the owner's safetensors)."""
        sub = Path(out_dir) / "hf_vlm"
        self.hf.config.save_pretrained(str(sub))
        self.processor.save_pretrained(str(sub))
        return {"path": "hf_vlm", "processor": None}

    def save_hf(self, out_dir: str) -> None:
        """A plain Hugging Face folder (weights, config, processor) that ``from_pretrained`` loads."""
        self.hf.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)

    # ------------------------------------------------------------------ generation / backbone

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding (HF's generate with its KV cache); returns the new text per sample."""
        inputs = self._process(images, self._texts(images.shape[1], prompts), left_pad=True)
        out = self.hf.generate(**inputs, max_new_tokens=max_new_tokens or self.cfg.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning tokens: hidden states of ``cfg.layers`` over the prompt (images included)."""
        inputs = self._process(images, self._texts(images.shape[1], list(prompts)))
        hs = self.hf(**inputs, output_hidden_states=True, use_cache=False).hidden_states
        try:
            tokens = torch.cat([hs[i] for i in self.cfg.layers], dim=-1)
        except IndexError:
            raise ConfigError(f"hf_vlm.layers: {self.cfg.layers} out of range for {len(hs)} hidden states") from None
        mask = inputs["attention_mask"].bool()
        if self.cfg.tokens == "last":
            last = mask.long().sum(1) - 1
            tokens = tokens[torch.arange(tokens.shape[0], device=tokens.device), last][:, None]
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens.float(), mask
