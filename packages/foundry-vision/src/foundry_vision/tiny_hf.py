"""Build tiny random Hugging Face models offline (no Hub): VLM families and vision encoders.

Each builder writes a complete local folder (weights, config, tokenizer, processor) that
``from_pretrained`` loads with ``HF_HUB_OFFLINE=1``. The tokenizer is a byte-level BPE trained here
with the ``tokenizers`` library and wrapped as ``PreTrainedTokenizerFast``, with the family's special
tokens added; the image processor is built from its class. Widths are tiny (hidden 32, 1-2 layers,
images 32-64 px) so tests and benchmarks run in seconds on CPU.

Families: ``qwen3_vl``, ``qwen2_5_vl``, ``smolvlm`` (SmolVLM2, the Idefics3 architecture),
``idefics3``, ``paligemma2``; encoders: ``siglip``, ``dinov2``.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_hf_vlm.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VLM_FAMILIES = ("qwen3_vl", "qwen2_5_vl", "smolvlm", "idefics3", "paligemma2")
ENCODER_FAMILIES = ("siglip", "dinov2")

_CORPUS = [
    "a photo of a red cube on a table",
    "a dog sitting in a christmas wreath",
    "the robot picks up the blue block and puts it in the bin",
    "describe the image. caption: a small green ball next to a cup",
    "what is in the picture? a cat on a sofa",
    "User: Assistant: question answer left right top bottom",
]

_SPECIALS: dict[str, list[str]] = {
    "qwen3_vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "qwen2_5_vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "smolvlm": ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>", "<video>"],
    "idefics3": ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"],
    "paligemma2": ["<pad>", "<eos>", "<bos>", "<image>"],
}


def tiny_tokenizer(family: str, vocab_size: int = 384) -> Any:
    """A byte-level BPE trained on a few sentences, with ``family``'s special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if family == "paligemma2":
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", extra_special_tokens={"image_token": "<image>"}
        )
    if family.startswith("qwen"):
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<end_of_utterance>", bos_token="<|im_start|>",
        extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                              "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
    )


def _text(vocab: int, hidden: int, layers: int, **extra: Any) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2, max_position_embeddings=512, **extra)


def build_tiny_hf_vlm(family: str, out_dir: str | Path, *, hidden: int = 32, layers: int = 2, image_size: int = 56, seed: int = 0) -> Path:
    """Write a tiny random ``family`` VLM + processor to ``out_dir`` and return the folder."""
    import transformers as tf

    if family not in VLM_FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(VLM_FAMILIES)}")
    torch.manual_seed(seed)
    out = Path(out_dir)
    tok = tiny_tokenizer(family)
    ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIALS[family]}
    vocab = len(tok)
    if family in ("qwen3_vl", "qwen2_5_vl"):
        half = hidden // 4  # head_dim / 2
        sec = [half - 2 * (half // 3), half // 3, half // 3]
        token_ids = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                         vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        if family == "qwen3_vl":
            config = tf.Qwen3VLConfig(
                text_config=_text(vocab, hidden, layers, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sec, "mrope_interleaved": True}),
                vision_config=dict(depth=2, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=2, out_hidden_size=hidden,
                                   patch_size=16, spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0], num_position_embeddings=64),
                **token_ids,
            )
            model = tf.Qwen3VLForConditionalGeneration(config)
            patch, proc_cls, video_cls = 16, tf.Qwen3VLProcessor, tf.Qwen3VLVideoProcessor
        else:
            config = tf.Qwen2_5_VLConfig(
                text_config=_text(vocab, hidden, layers, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sec}),
                vision_config=dict(depth=1, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=2, out_hidden_size=hidden,
                                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0]),
                **token_ids,
            )
            model = tf.Qwen2_5_VLForConditionalGeneration(config)
            patch, proc_cls, video_cls = 14, tf.Qwen2_5_VLProcessor, tf.Qwen2VLVideoProcessor
        pixels = (image_size // (2 * patch) * 2 * patch) ** 2
        image_proc = tf.Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                              size={"shortest_edge": pixels, "longest_edge": pixels})
        video_proc = video_cls(patch_size=patch, merge_size=2, temporal_patch_size=2, size={"shortest_edge": pixels, "longest_edge": pixels})
        processor = proc_cls(image_processor=image_proc, tokenizer=tok, video_processor=video_proc)
    elif family in ("smolvlm", "idefics3"):
        patch, scale = 16, 2
        size = image_size // (patch * scale) * patch * scale
        vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2, image_size=size, patch_size=patch)
        text = dict(model_type="llama", **_text(vocab, hidden, layers))
        seq_len = (size // patch) ** 2 // scale**2
        proc_kw = dict(do_image_splitting=False, size={"longest_edge": size}, max_image_size={"longest_edge": size})
        if family == "smolvlm":
            config = tf.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=scale, image_token_id=ids["<image>"])
            model = tf.SmolVLMForConditionalGeneration(config)
            processor = tf.SmolVLMProcessor(image_processor=tf.SmolVLMImageProcessor(**proc_kw), tokenizer=tok,
                                            video_processor=tf.SmolVLMVideoProcessor(), image_seq_len=seq_len)
        else:
            config = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=scale, image_token_id=ids["<image>"])
            model = tf.Idefics3ForConditionalGeneration(config)
            processor = tf.Idefics3Processor(image_processor=tf.Idefics3ImageProcessor(**proc_kw), tokenizer=tok, image_seq_len=seq_len)
    else:  # paligemma2: SigLIP tower + Gemma2 text
        patch = 8
        size = image_size // patch * patch
        vision = dict(model_type="siglip_vision_model", hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                      num_attention_heads=2, image_size=size, patch_size=patch, projection_dim=hidden)
        image_proc = tf.SiglipImageProcessor(size={"height": size, "width": size})
        image_proc.image_seq_length = (size // patch) ** 2
        processor = tf.PaliGemmaProcessor(image_processor=image_proc, tokenizer=tok)  # adds <loc…>/<seg…> tokens
        text = dict(model_type="gemma2", **_text(len(processor.tokenizer), hidden, layers))
        config = tf.PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=ids["<image>"], projection_dim=hidden)
        model = tf.PaliGemmaForConditionalGeneration(config)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


def build_tiny_hf_encoder(family: str, out_dir: str | Path, *, hidden: int = 32, image_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny random vision encoder (``siglip`` or ``dinov2``) + image processor to ``out_dir``."""
    import transformers as tf

    torch.manual_seed(seed)
    out = Path(out_dir)
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2, image_size=image_size, patch_size=8)
    if family == "siglip":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**common))
        proc = tf.SiglipImageProcessor(size={"height": image_size, "width": image_size})
    elif family == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**{**common, "mlp_ratio": 2}))
        proc = tf.BitImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"unknown encoder family {family!r}; known: {', '.join(ENCODER_FAMILIES)}")
    model.save_pretrained(str(out))
    proc.save_pretrained(str(out))
    return out


#: Qwen3-VL-2B-Instruct's architecture (its published config.json): the text model, the vision tower and
#: the processor's pixel budget. Used for random-init measurements of the paper's Qwen3-VLA shape.
QWEN3_VL_2B_TEXT: dict[str, Any] = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True},
)
QWEN3_VL_2B_VISION: dict[str, Any] = dict(
    depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048, patch_size=16,
    spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304,
)
QWEN3_VL_PIXELS = {"shortest_edge": 65536, "longest_edge": 16777216}


def write_qwen3_vl_2b_shaped(out_dir: str | Path) -> Path:
    """A Qwen3-VL-2B-shaped folder with config and processor but no weights: ``hf_vlm`` builds it with
    random weights (what ``benchmarks/gpu_check.sh`` measures without downloading anything). The tokenizer
    is the tiny one (its ids fit the 151936-row table); speed does not depend on which ids come in."""
    import transformers as tf

    out = Path(out_dir)
    tok = tiny_tokenizer("qwen3_vl")
    ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIALS["qwen3_vl"]}
    config = tf.Qwen3VLConfig(
        text_config=dict(QWEN3_VL_2B_TEXT), vision_config=dict(QWEN3_VL_2B_VISION), tie_word_embeddings=True,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config.save_pretrained(str(out))
    image_proc = tf.Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=dict(QWEN3_VL_PIXELS))
    video_proc = tf.Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=dict(QWEN3_VL_PIXELS))
    tf.Qwen3VLProcessor(image_processor=image_proc, tokenizer=tok, video_processor=video_proc).save_pretrained(str(out))
    return out
