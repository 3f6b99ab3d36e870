"""``hf_vlm``: Hugging Face VLMs (Qwen3-VL, Qwen2.5-VL, SmolVLM2/Idefics3, PaliGemma2) behind one interface.

Loaded from a local folder with ``AutoModelForImageTextToText`` + ``AutoProcessor`` (never the Hub).
One interface for every family: ``(images uint8 [B, N, 3, H, W], prompts) ->`` loss
(:meth:`compute_loss`), text (:meth:`generate`) or conditioning tokens (:meth:`encode`, the
``backbone`` contract). The processor handles each family's pixel layout (Qwen's flattened patches +
``image_grid_thw``, Idefics3's 5-D ``pixel_values`` + ``pixel_attention_mask``, PaliGemma's plain 4-D
pixels); this class only writes the family's image placeholder into the text and passes every tensor
the processor returns to the model.

Registered as ``model: hf_vlm`` (trainable) and ``backbone: hf_vlm`` (for action experts).

Image read-out (``image_token_span``): an expert's flat read-out needs the image tokens at fixed
positions. The placeholder goes before the prompt and padding is on the right, so the positions depend
only on the image count and size: they are found at build time by running the processor on blank images
of the policy's input size (with two different prompts: a processor that moved them is refused), and
every ``encode`` checks its batch has the same layout, failing with the family and the size to use
(e.g. Qwen's processor picks the patch grid from the input size, so other camera sizes give other counts).
The span covers the first to the last image token; families that wrap each image in marker tokens
(Qwen's vision start/end, Idefics3's ``<fake_token_around_image>``) have those few markers inside it.

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
        #: The Hub repo the folder comes from; only named in the error when the folder is missing (never fetched).
        hub_id: str | None = None
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
            if (folder / "config.yaml").is_file():
                raise ConfigError(f"hf_vlm.path: {folder} is a Foundry export, not a Hugging Face folder; load it as "
                                  f"a backbone with {{name: foundry_vlm, path: {folder}}}")
            raise ConfigError(f"hf_vlm.path: {folder} is not a local Hugging Face model folder (no config.json); "
                              f"get the weights with `huggingface-cli download {cfg.hub_id or '<repo id>'} --local-dir {folder}`")
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
        #: (num_images, (H, W), image-token positions) fixed by image_token_span, checked by encode
        self._image_layout: tuple[int, tuple[int, int], torch.Tensor] | None = None
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
        self._loss_flops = self._forward_flops(inputs, with_head=True)
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

    def _matmul_params(self) -> tuple[int, int]:
        """(language model, vision tower + projector) parameters that take part in a matmul per token.

        The language side excludes the input embedding table and counts the output head once (tied or
        not), as our transformer's MFU does; the vision side is every parameter under the family's
        ``vision``/``projector`` groups. Counted once (parameters do not change size)."""
        if not hasattr(self, "_param_counts"):
            groups = FREEZE_GROUPS[self.family]
            globs = groups["vision"] + groups["projector"]
            named = dict(self.hf.named_parameters())
            vision = sum(p.numel() for n, p in named.items() if any(fnmatch.fnmatchcase(n, g) for g in globs))
            emb, head = self.hf.get_input_embeddings().weight, self.hf.get_output_embeddings().weight
            text = sum(p.numel() for p in named.values()) - vision - emb.numel() + (head.numel() if head is emb else 0)
            self._param_counts = (text, vision)
        return self._param_counts

    def _forward_flops(self, inputs: dict[str, Any], with_head: bool) -> float:
        """Forward FLOPs per sample of one batch of processed ``inputs``: 2 x params x tokens for the
        language model (+ QK^T and AV over the full L x L, PaLM's convention) and for the vision tower over
        its patches (its attention term is left out: a lower bound). ``with_head``: the LM head ran."""
        text_params, vision_params = self._matmul_params()
        if not with_head:
            text_params -= self.hf.get_output_embeddings().weight.numel()
        ids = inputs["input_ids"]
        b, length = int(ids.shape[0]), int(ids.shape[1])
        tc = self.hf.config.get_text_config()
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        attn = 4 * tc.num_hidden_layers * tc.num_attention_heads * head_dim * length * length
        pixels = inputs.get("pixel_values")
        patches = 0.0
        if pixels is not None:
            if self.family == "qwen":  # rows are patches already
                patches = pixels.shape[0] / b
            else:
                vc = self.hf.config.vision_config
                patches = pixels.numel() / (3 * vc.patch_size**2) / b
        return float(2 * text_params * length + attn + 2 * vision_params * patches)

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        """Training FLOPs per sample (forward + backward = 3 x forward) of the last ``compute_loss``."""
        return 3.0 * getattr(self, "_loss_flops", 0.0)

    def encode_flops(self) -> float:
        """Forward FLOPs per sample of the last ``encode`` (the vla adds the backward when it trains)."""
        return getattr(self, "_encode_flops", 0.0)

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

    def image_token_span(self, num_images: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(first, count) of the image tokens in ``encode``'s output for ``num_images`` images of
        ``image_size`` (H, W), derived from the processor; ``encode`` then accepts only that layout."""
        where = f"hf_vlm ({self.model_type})"
        if self.cfg.tokens != "all":
            raise ConfigError(f"{where}: tokens: last keeps no image tokens (image_readout needs tokens: all)")
        if image_size is None:
            raise ConfigError(f"{where}: image_token_span needs the input image size: this family's image token "
                              "count depends on it (the vla passes its data source's image_size)")
        h, w = (int(x) for x in image_size)
        if self._image_layout is not None and self._image_layout[:2] == (num_images, (h, w)):
            positions = self._image_layout[2]  # derived before (the vla asks again to mask invalid images)
            return int(positions[0]), int(positions[-1]) - int(positions[0]) + 1
        blank = torch.zeros(1, num_images, 3, h, w, dtype=torch.uint8)
        layouts = []
        for prompt in ("", "pick up the red block and put it in the bin"):
            ids = self._process(blank, self._texts(num_images, [prompt]))["input_ids"][0].cpu()
            layouts.append((ids == self.hf.config.image_token_id).nonzero().squeeze(1))
        if not torch.equal(layouts[0], layouts[1]):
            raise ConfigError(f"{where}: the processor puts the image tokens of {num_images} images of {h}x{w} at "
                              "positions that depend on the prompt; the image read-out needs fixed positions")
        positions = layouts[0]
        self._image_layout = (num_images, (h, w), positions)
        first = int(positions[0])
        return first, int(positions[-1]) - first + 1

    def _check_image_layout(self, images: torch.Tensor, input_ids: torch.Tensor) -> None:
        """The batch's image tokens sit where ``image_token_span`` said (or fail naming the size to use)."""
        assert self._image_layout is not None
        n, (h, w), positions = self._image_layout
        is_image = input_ids == self.hf.config.image_token_id
        per_sample = is_image.sum(1)
        positions = positions.to(input_ids.device)
        ok = images.shape[1] == n and input_ids.shape[1] > int(positions[-1])
        ok = ok and bool((per_sample == len(positions)).all()) and bool(is_image[:, positions].all())
        if not ok:
            got = int(per_sample.max())
            raise DataError(
                f"hf_vlm ({self.model_type}): the image read-out was built for {n} images of {h}x{w} "
                f"({len(positions)} image tokens at fixed positions), but this batch has {images.shape[1]} images of "
                f"{images.shape[3]}x{images.shape[4]} giving {got} image tokens: this family's processor varies the "
                f"count with the input size; feed {h}x{w} images (set the data source's image_size: {h})"
            )

    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning tokens: hidden states of ``cfg.layers`` over the prompt (images included)."""
        inputs = self._process(images, self._texts(images.shape[1], list(prompts)))
        if self._image_layout is not None:
            self._check_image_layout(images, inputs["input_ids"])
        self._encode_flops = self._forward_flops(inputs, with_head=False)
        # the base model (no LM head): the conditioning needs hidden states, not [tokens, vocab] logits
        hs = self.hf.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
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
