"""Evaluation of trained models that needs no simulator (LLM perplexity and multiple-choice scoring)."""
