"""Tokenizers: the byte tokenizer, BPE training and loading, special tokens in one place."""

from __future__ import annotations

import pytest

from foundry_core.errors import ConfigError
from foundry_core.tokenizers import SPECIAL_TOKENS, byte_tokenizer, load_tokenizer, train_bpe


def test_byte_tokenizer_round_trips_any_text():
    tok = load_tokenizer("byte")
    text = "héllo wörld → ✓ <image>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<image>") in ids
    assert len(tok) == 256 + len(SPECIAL_TOKENS) and tok.eos_token == SPECIAL_TOKENS["eos"]


def test_train_bpe_saves_a_folder_transformers_loads(tmp_path):
    from pydoc_data.topics import topics

    from transformers import AutoTokenizer

    tok = train_bpe(list(topics.values())[:20], 600, tmp_path / "tok")
    assert len(tok) == 600
    ours = load_tokenizer(tmp_path / "tok")
    theirs = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    text = "The power operator binds more tightly than unary operators."
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert len(ours(text)["input_ids"]) < len(byte_tokenizer()(text)["input_ids"]) / 2
    for name in SPECIAL_TOKENS.values():
        assert ours.convert_tokens_to_ids(name) != ours.unk_token_id
        assert len(ours(name, add_special_tokens=False)["input_ids"]) == 1
    assert ours.pad_token == SPECIAL_TOKENS["pad"] and ours.bos_token == SPECIAL_TOKENS["bos"]


def test_bad_tokenizer_inputs(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ConfigError, match="vocab_size must be >= 261"):
        train_bpe(["abc"], 100)
