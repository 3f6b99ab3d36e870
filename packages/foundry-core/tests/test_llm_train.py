"""LLMs through ``foundry train``: the debug recipe, the shared VF text shards, a tiny HF model; export round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from foundry_core.cli.main import build_cli
from foundry_core.config import resolve_config
from foundry_core.testing import run_config

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "llm_debug.yaml"
TASKS = ROOT / "packages/foundry-core/src/foundry_core/resources/lm_tasks"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir: Path) -> list[float]:
    return [m["loss"] for m in _metrics(run_dir) if "loss" in m]


SMALL = ["train.progress=false", "train.budget.steps=30", "train.batch.global=8", "train.batch.per_device=8",
         "data.mix.0.source.seq_len=64", "data.val.pydoc_val.seq_len=64", "train.log_every=1",
         "train.val_every=30", "train.val_batches=4"]


def test_llm_debug_recipe_trains_exports_and_evaluates(tmp_path, foundry_pm, cli_runner):
    from foundry_core.export import load_pretrained

    cli = build_cli(lambda: foundry_pm)
    run_dir = tmp_path / "run"
    res = cli_runner.invoke(cli, ["train", str(RECIPE), f"run.out_dir={run_dir}", *SMALL])
    assert res.exit_code == 0, res.output
    losses = _losses(run_dir)
    # measured (8 x 64 bytes per step): 5.8 at step 1 -> 3.2-3.5 around step 30
    assert losses[0] > 5.2 and min(losses[-5:]) < losses[0] - 1.5
    val = [m for m in _metrics(run_dir) if "val/pydoc_val/loss" in m][-1]
    assert val["val/pydoc_val/loss"] < 4.2

    model = load_pretrained(run_dir / "export")
    assert model.tokenizer is not None and len(model.tokenizer) == 261
    res = cli_runner.invoke(cli, ["eval", "lm", "--model", str(run_dir / "export"), "--val", "pydoc_topics",
                                  "--seq-len", "64", "--val-batches", "4", "--tasks", str(TASKS / "python_docs_mc.jsonl"),
                                  "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    trained = json.loads((tmp_path / "r.json").read_text())["val:pydoc_topics"]
    # an untrained model of the same config on the same held-out data
    from foundry_core.data.text import RawTextShards
    from foundry_core.evaluation.lm import evaluate_loss
    from foundry_core.registry import collect

    fresh = collect(foundry_pm).build("model", resolve_config(RECIPE)["model"])
    val_src = RawTextShards(RawTextShards.Config(corpus="pydoc_topics", split="val", seq_len=64, shuffle=False,
                                                 epochs=1), fresh.tokenizer)
    untrained = evaluate_loss(fresh, val_src.batches(8, rank=0, world_size=1, seed=0), max_batches=4)
    assert trained["tokens"] == untrained["tokens"]
    assert trained["perplexity"] < untrained["perplexity"] / 5


def test_trains_on_the_shared_vf_text_shards(tmp_path, shared_data):
    from foundry_core.train.run import train_from_config

    root = shared_data / "vla_foundry/tiny_dataset/text"
    source = {"name": "wds_text", "seq_len": 64, "eos_token_id": 0, "vocab_size": 50304}
    cfg = run_config(
        tmp_path / "run", model={"name": "transformer", "preset": "debug", "n_layers": 2, "vocab_size": 50304},
        mix=[{"source": {**source, "manifest": str(root / "text_dataset_1")}, "label": "vf1"},
             {"source": {**source, "manifest": str(root / "text_dataset_2")}, "label": "vf2"}],
        steps=12, batch=4, run={"name": "vf_text", "device": "cpu"},
    )
    run_dir = train_from_config(cfg)
    losses = _losses(run_dir)
    # measured: ln(50304) ≈ 10.8 at step 1 -> 8.1-8.9 over steps 10-12 (deterministic from the seed)
    assert losses[0] > 10.0 and min(losses[-3:]) < losses[0] - 2.0
    last = _metrics(run_dir)[-1]
    assert last["tokens_seen"] > 0


def test_tiny_hf_model_trains_and_round_trips(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from foundry_core.export import load_pretrained
    from foundry_core.tokenizers import byte_tokenizer
    from foundry_core.train.run import train_from_config

    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 max_position_embeddings=256)).save_pretrained(tmp_path / "hf")
    byte_tokenizer().save_pretrained(tmp_path / "hf")
    cfg = run_config(
        tmp_path / "run", model={"name": "hf_causal_lm", "path": str(tmp_path / "hf")},
        source={"name": "wds_text_untokenized", "corpus": "pydoc_topics", "tokenizer": "byte", "seq_len": 64},
        steps=20, run={"name": "hf", "device": "cpu"},
        train={"optim": {"name": "adamw", "lr": 3e-3}, "schedule": {"name": "cosine", "warmup": 0.05}},
    )
    run_dir = train_from_config(cfg)
    losses = _losses(run_dir)
    assert min(losses[-3:]) < losses[0] - 1.0
    model = load_pretrained(run_dir / "export")
    assert type(model).__name__ == "HFCausalLM" and (run_dir / "export/hf_config/config.json").exists()
    model.save_hf(str(tmp_path / "plain"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "plain"), local_files_only=True)
    ids = torch.randint(0, 261, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits)
        original = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), local_files_only=True)
        assert not torch.allclose(original(ids).logits, model(ids).logits, atol=1e-3)


@pytest.mark.slow
def test_full_llm_debug_recipe_learns(tmp_path):
    from foundry_core.train.run import train_from_config

    run_dir = train_from_config(resolve_config(RECIPE, [f"run.out_dir={tmp_path / 'run'}", "train.progress=false"]))
    losses = _losses(run_dir)
    val = [m for m in _metrics(run_dir) if "val/pydoc_val/loss" in m][-1]["val/pydoc_val/loss"]
    # measured (loaded shared 2-core machine, 10.6 min wall): train loss 5.8 -> 2.75, val loss 2.67 (ppl 14.5).
    # Wall time (36 s idle) is a measurement for the notes, not an assertion: timed tests flake under load.
    assert losses[-1] < 3.1 and val < 2.9


@pytest.mark.slow
def test_resume_through_the_trainer_replays_the_text_stream(tmp_path):
    from foundry_core.train.run import train_from_config

    def cfg(steps: int, out: Path) -> dict:
        return run_config(
            out, model={"name": "transformer", "preset": "debug", "n_layers": 1, "tokenizer": "byte"},
            source={"name": "wds_text_untokenized", "corpus": "pydoc_topics", "tokenizer": "byte", "seq_len": 32},
            steps=steps, batch=4, run={"name": "r", "device": "cpu"}, train={"optim": {"name": "adamw", "lr": 1e-3}},
        )

    straight = _losses(train_from_config(cfg(6, tmp_path / "a")))
    train_from_config(cfg(3, tmp_path / "b"))
    resumed = _losses(train_from_config(cfg(6, tmp_path / "b"), resume="latest"))
    assert resumed[-3:] == pytest.approx(straight[-3:], abs=1e-6)
