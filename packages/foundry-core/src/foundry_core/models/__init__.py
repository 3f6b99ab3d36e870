"""Language models: ``transformer`` (ours) and ``hf_causal_lm`` (any local Hugging Face causal LM)."""
