"""``run.threads`` pins torch's CPU thread count: the same run gives the same numbers on any core count."""

from __future__ import annotations

import json

import pytest
import torch

from foundry_core.errors import ConfigError
from foundry_core.testing import run_config
from foundry_core.train.run import train_from_config

LLM = {"name": "transformer", "dim": 64, "n_layers": 2, "n_heads": 4, "tokenizer": "byte", "max_seq_len": 64}
TEXT = {"name": "wds_text_untokenized", "corpus": "pydoc_topics", "tokenizer": "byte", "seq_len": 32}


def _losses(run_dir):
    return [
        json.loads(line)["loss"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]


def test_threads_are_pinned_and_the_run_repeats_exactly(tmp_path):
    before = torch.get_num_threads()
    try:
        runs = []
        for name, threads in (("a", 1), ("b", 1), ("c", 2)):
            cfg = run_config(tmp_path / name, model=LLM, source=TEXT, steps=4, run={"threads": threads})
            runs.append(_losses(train_from_config(cfg)))
            assert torch.get_num_threads() == threads
        assert runs[0] == runs[1]  # same thread count: the same numbers, bit for bit
        assert runs[2] == pytest.approx(runs[0], rel=1e-3)  # another count: the same run up to rounding
    finally:
        torch.set_num_threads(before)


def test_threads_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r"run.threads: must be >= 1, got 0"):
        train_from_config(run_config(tmp_path / "x", run={"threads": 0}))
