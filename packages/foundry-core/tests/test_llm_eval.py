"""LLM evaluation: Wilson CI, task formats, continuation scoring, perplexity trained < untrained, ``foundry eval lm``."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
import torch

from foundry_core.cli.main import build_cli
from foundry_core.data.text import RawTextShards
from foundry_core.errors import DataError
from foundry_core.evaluation.lm import (
    continuation_logprobs,
    evaluate_loss,
    load_mc_tasks,
    score_mc,
    wilson_interval,
)
from foundry_core.models.transformer import Transformer, resolve_dims
from foundry_core.tokenizers import byte_tokenizer

TASKS = files("foundry_core") / "resources" / "lm_tasks"


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert abs(lo - 0.4902) < 1e-3 and abs(hi - 0.9433) < 1e-3
    assert wilson_interval(0, 20)[0] == pytest.approx(0.0, abs=1e-12) and wilson_interval(20, 20)[1] == pytest.approx(1.0)


def test_task_formats(tmp_path):
    lines = [
        {"context": "c", "choices": [" a", " b"], "label": 1},
        {"ctx": "A man", "endings": ["runs.", "sits."], "label": "0"},
        {"question": "q?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]}, "answerKey": "C"},
        {"question": "is it", "passage": "p", "answer": True},
        {"sentence": "The cup fell because _ was slippery.", "option1": "it", "option2": "the table", "answer": "1"},
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    items = load_mc_tasks(tmp_path / "t.jsonl")
    assert [it.label for it in items] == [1, 0, 2, 1, 0]
    assert items[1].continuations == (" runs.", " sits.")
    assert items[3].continuations == (" no", " yes")
    assert items[4].contexts == ("The cup fell because it", "The cup fell because the table")
    assert items[4].continuations == (" was slippery.",) * 2
    (tmp_path / "bad.jsonl").write_text(json.dumps(lines[0]) + "\n" + json.dumps({"foo": 1}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: unknown task format"):
        load_mc_tasks(tmp_path / "bad.jsonl")
    assert len(load_mc_tasks(TASKS / "python_docs_mc.jsonl")) == 16
    assert len(load_mc_tasks(TASKS / "python_boolq.jsonl")) == 12


def _debug_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(resolve_dims(Transformer.Config(preset="debug", n_layers=2, tokenizer="byte"), byte_tokenizer()),
                       byte_tokenizer())


def test_continuation_logprobs_match_a_manual_forward():
    model, tok = _debug_model().eval(), byte_tokenizer()
    (got,) = continuation_logprobs(model, tok, [("ab", "cd")])
    ids = [tok.eos_token_id, *tok("abcd", add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits.log_softmax(-1)[0]
    assert got == pytest.approx(float(logp[2, ids[3]] + logp[3, ids[4]]), abs=1e-5)
    r = score_mc(model, tok, load_mc_tasks(TASKS / "python_docs_mc.jsonl"))
    assert r["n"] == 16 and r["chance"] == 0.25 and r["acc_ci95"][0] <= r["acc"] <= r["acc_ci95"][1]


def test_trained_model_has_lower_heldout_perplexity():
    tok = byte_tokenizer()
    cfg = dict(corpus="pydoc_topics", seq_len=64)
    train = RawTextShards(RawTextShards.Config(**cfg, split="train"), tok)
    val = RawTextShards(RawTextShards.Config(**cfg, split="val", shuffle=False, epochs=1), tok)
    model = _debug_model()
    before = evaluate_loss(model, val.batches(8, rank=0, world_size=1, seed=0), max_batches=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _, batch in zip(range(80), train.batches(8, rank=0, world_size=1, seed=0)):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate_loss(model, val.batches(8, rank=0, world_size=1, seed=0), max_batches=8)
    assert before["tokens"] == after["tokens"] > 0
    # measured: 5.72 -> 3.24 nats (perplexity 304 -> 26); a clear margin, not a guess at the exact value
    assert after["loss"] < before["loss"] - 1.5 and after["perplexity"] < before["perplexity"] / 4


def test_eval_lm_command_on_a_hf_folder(tmp_path, foundry_pm, cli_runner):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "m")
    byte_tokenizer().save_pretrained(tmp_path / "m")
    res = cli_runner.invoke(build_cli(lambda: foundry_pm), [
        "eval", "lm", "--model", str(tmp_path / "m"), "--tasks", str(TASKS / "python_docs_mc.jsonl"),
        "--tasks", str(TASKS / "python_boolq.jsonl"), "--val", "pydoc_topics", "--seq-len", "64",
        "--val-batches", "2", "--json", str(tmp_path / "r.json"),
    ])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["python_docs_mc"]["n"] == 16 and out["python_boolq"]["n"] == 12
    assert out["val:pydoc_topics"]["perplexity"] > 1.0
    assert "acc_norm=" in res.output and "perplexity=" in res.output
