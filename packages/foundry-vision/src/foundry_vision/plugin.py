"""foundry-vision plugin entry module. Import-light: register strings, never import torch here."""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl


@hookimpl
def register_encoders(register: Register) -> None:
    register("vit", "foundry_vision.encoders.vit:ViT", description="Vision Transformer from scratch (multi-camera)")
    register(
        "keypoint_cnn",
        "foundry_vision.encoders.keypoint_cnn:KeypointCNN",
        description="small CNN + spatial softmax -> 2-D keypoint tokens, from scratch (multi-camera)",
    )
    register(
        "hf_vision_encoder",
        "foundry_vision.encoders.hf_vision:HFVisionEncoder",
        description="local Hugging Face vision tower (SigLIP/SigLIP2, DINOv2/v3) -> patch tokens",
    )


@hookimpl
def register_data_sources(register: Register) -> None:
    register(
        "wds_image_caption",
        "foundry_vision.data.image_caption:ImageCaptionShards",
        description="image-caption WebDataset shards + manifest (augmentation, exact resume)",
    )
    register(
        "synthetic_image_caption",
        "foundry_vision.data.shapes:SyntheticImageCaption",
        description="rendered shapes + captions, no files (debug recipes, tests)",
    )


@hookimpl
def register_models(register: Register) -> None:
    register("vlm", "foundry_vision.models.vlm:VLM", description="composed VLM: encoder -> projector -> LLM (transformer / HF)")
    register("hf_vlm", "foundry_vision.models.hf_vlm:HFVLM", description="local HF VLM (Qwen3-VL, Qwen2.5-VL, SmolVLM2, PaliGemma2)")


@hookimpl
def register_backbones(register: Register) -> None:
    register("foundry_vlm", "foundry_vision.backbones:FoundryVLMBackbone", description="our VLM export -> hidden states of chosen layers")
    register("hf_vlm", "foundry_vision.models.hf_vlm:HFVLM", description="local HF VLM -> hidden states of chosen layers")
    register("vision_encoder", "foundry_vision.backbones:VisionEncoderBackbone", description="image encoder only: all patch tokens, no language")


@hookimpl
def register_commands(cli):  # type: ignore[no-untyped-def]
    from foundry_vision.cli import add_commands

    add_commands(cli)
