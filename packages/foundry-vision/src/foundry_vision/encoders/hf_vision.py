"""``hf_vision_encoder``: a Hugging Face vision tower from a local folder, returning patch tokens.

Supports SigLIP/SigLIP2 (``SiglipVisionModel``, or the vision half of a full SigLIP model) and
DINOv2/DINOv3-style ``AutoModel`` ViTs: the CLS and register tokens are dropped, so the output is
patch tokens only, ``[B, N * tokens_per_image, hidden]``. Preprocessing is done by the folder's HF
image processor when it has one (``use_processor: true``), otherwise by us (resize to the config's
``image_size`` and normalize with the processor-less defaults: 0.5/0.5 for SigLIP, ImageNet for DINO).

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_encoders.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foundry_core.errors import ConfigError
from foundry_core.models.hf_weights import Init, load_pretrained_checked, wants_pretrained_weights
from foundry_core.registry import BuildContext
from foundry_vision.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_images, resize_normalize


class HFVisionEncoder(nn.Module):
    """A local HF vision tower; see the module docstring."""

    @dataclass(kw_only=True)
    class Config:
        #: Local folder (``config.json`` + weights); relative paths resolve inside an export.
        path: str
        #: Use the folder's image processor (when present) instead of our torch resize/normalize.
        use_processor: bool = True
        #: Hidden-state layer to return (-1 = last).
        layer: int = -1
        #: ``pretrained``: the folder's weights (an error when it has none); ``random``: on purpose.
        init: Init = "pretrained"

    def __init__(self, cfg: Config, folder: Path, load_weights: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        self.cfg = cfg
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if hasattr(config, "vision_config") and getattr(config, "model_type", "").startswith("siglip"):
            from transformers import SiglipVisionModel

            config = config.vision_config  # full SigLIP (text + vision): keep the vision tower
            if load_weights:
                model = load_pretrained_checked(SiglipVisionModel.from_pretrained, folder, "hf_vision_encoder")
            else:
                model = SiglipVisionModel(config)
        elif load_weights:
            model = load_pretrained_checked(AutoModel.from_pretrained, folder, "hf_vision_encoder", dtype=torch.float32)
            config = model.config
        else:
            model = AutoModel.from_config(config, dtype=torch.float32)
        self.model = model
        self.model_type = str(config.model_type)
        self.image_size = int(getattr(config, "image_size", 224))
        patch = int(getattr(config, "patch_size", 16))
        self.out_dim = int(config.hidden_size)
        self.tokens_per_image = (self.image_size // patch) ** 2
        self.skip = 0 if self.model_type.startswith("siglip") else 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.processor = None
        if cfg.use_processor and (folder / "preprocessor_config.json").is_file():
            self.processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        siglip = self.model_type.startswith("siglip")
        self.mean = (0.5, 0.5, 0.5) if siglip else IMAGENET_MEAN
        self.std = (0.5, 0.5, 0.5) if siglip else IMAGENET_STD

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> HFVisionEncoder:
        folder = Path(cfg.path)
        if ctx.pretrained_dir is not None and not folder.is_absolute():
            folder = Path(ctx.pretrained_dir) / folder
        if not (folder / "config.json").is_file():
            raise ConfigError(f"hf_vision_encoder.path: no config.json in {folder} (give a local Hugging Face folder)")
        in_export = ctx.pretrained_dir is not None
        return cls(cfg, folder, load_weights=wants_pretrained_weights(folder, cfg.init, "hf_vision_encoder", in_export=in_export))

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """Config + image processor (weights live in the owner's safetensors); returns the new ``path``."""
        self.model.config.save_pretrained(out_dir)
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)
        return {"path": "."}

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(-1, *images.shape[-3:])
        dev = next(self.model.parameters()).device
        if self.processor is not None:
            pix = self.processor(images=list(flat.cpu()), return_tensors="pt")["pixel_values"]
            if pix.shape[-1] != self.image_size or pix.shape[-2] != self.image_size:
                raise ConfigError(
                    f"hf_vision_encoder: the image processor gives {tuple(pix.shape[-2:])} pixels but the model expects "
                    f"{self.image_size}; fix the processor's size or set use_processor: false"
                )
            return pix.to(dev)
        return resize_normalize(flat.to(dev), self.image_size, self.mean, self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, N, 3, H, W] -> patch tokens [B, N * tokens_per_image, hidden]."""
        check_images(images, f"hf_vision_encoder ({self.model_type})")
        b = images.shape[0]
        pix = self._pixels(images).to(next(self.model.parameters()).dtype)
        out = self.model(pixel_values=pix, output_hidden_states=self.cfg.layer != -1)
        h = out.last_hidden_state if self.cfg.layer == -1 else out.hidden_states[self.cfg.layer]
        return h[:, self.skip :].reshape(b, -1, h.shape[-1])
