"""Trainable vision-language models: the composed ``vlm`` and the Hugging Face ``hf_vlm``."""
