"""Single-process trainer behaviour: accumulation, precision, NaN guard, stop signal + bit-exact resume."""

from __future__ import annotations

import copy
import math
import os
import signal
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from foundry_core.config import parse_dataclass
from foundry_core.errors import ConfigError, Interrupted
from foundry_core.hookspecs import hookimpl
from foundry_core.models.toy import ToyMLP
from foundry_core.registry import collect
from foundry_core.run_config import RunConfig
from foundry_core.testing import run_config
from foundry_core.train.metrics import read_metrics
from foundry_core.train.run import train_from_config
from foundry_core.train.trainer import NonFiniteLossError, Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def make_config(out: Path, **train) -> dict:
    return run_config(out, run={"seed": 1}, train={"schedule": {"name": "cosine", "warmup": 0.2}, **train})


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "export" / "model.safetensors")


# ----------------------------------------------------------------------------- test plugins


class NaNToy(ToyMLP):
    """Toy model whose loss is NaN on the listed compute_loss calls (1-based)."""

    @dataclass(kw_only=True)
    class Config(ToyMLP.Config):
        nan_calls: list[int]

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def compute_loss(self, batch):
        self.calls += 1
        loss, metrics = super().compute_loss(batch)
        if self.calls in self.cfg.nan_calls:
            loss = loss * float("nan")
        return loss, metrics


class DtypeProbe(ToyMLP):
    """Records the dtype of the hidden activations (to see autocast at work)."""

    seen: list[torch.dtype] = []

    def compute_loss(self, batch):
        DtypeProbe.seen.append(self.inp(batch["x"]).dtype)
        return super().compute_loss(batch)


class ModeProbe(ToyMLP):
    """Records whether the model (and its blocks) were in training mode at each compute_loss."""

    seen: list[bool] = []

    def compute_loss(self, batch):
        ModeProbe.seen.append(self.training and all(m.training for m in self.modules()))
        return super().compute_loss(batch)


class SigtermAt:
    """Callback: sends SIGTERM to this process right after optimizer step ``step``."""

    @dataclass(kw_only=True)
    class Config:
        step: int

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls(cfg)

    def on_step_end(self, trainer, metrics):
        if trainer.state.step == self.cfg.step:
            os.kill(os.getpid(), signal.SIGTERM)


@hookimpl
def register_models(register):
    register("nan_toy", NaNToy)
    register("dtype_probe", DtypeProbe)
    register("mode_probe", ModeProbe)


@hookimpl
def register_callbacks(register):
    register("sigterm_at", SigtermAt)


@pytest.fixture
def pm(foundry_pm):
    foundry_pm.register(
        types.SimpleNamespace(register_models=register_models, register_callbacks=register_callbacks),
        name="loop-test",
    )
    return foundry_pm


# ----------------------------------------------------------------------------- tests


def test_accumulation_equivalence(tmp_path, pm):
    """global 8 as 2 × 4 micro-batches gives the same updates as 8 × 1 (AdamW, fp32)."""
    one = train_from_config(make_config(tmp_path / "a", batch={"global": 8, "per_device": 8}), pm=pm)
    four = train_from_config(make_config(tmp_path / "b", batch={"global": 8, "per_device": 2}), pm=pm)
    assert losses(one) == pytest.approx(losses(four), rel=1e-5, abs=1e-7)
    wa, wb = weights(one), weights(four)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_batch_sizes_must_divide(tmp_path, pm):
    with pytest.raises(ConfigError, match="not a multiple"):
        train_from_config(make_config(tmp_path / "a", batch={"global": 8, "per_device": 3}), pm=pm)


def _trainer(cfg: dict, pm) -> Trainer:
    registry = collect(pm)
    return Trainer(parse_dataclass(RunConfig, cfg, resolve=registry.config_class), registry, pm=pm)


def test_lr_scale_groups_follow_the_schedule_from_their_own_base_lr(tmp_path, pm):
    cfg = make_config(tmp_path / "lrs", budget={"steps": 3}, optim={"name": "adamw", "lr": 1e-2, "lr_scale": {"inp.*": 0.5}})
    trainer = _trainer(cfg, pm)
    try:
        trainer.build()
        for _ in range(3):
            assert trainer.train_step() is not None
        groups = trainer.optimizer.param_groups
        assert sorted({g["base_lr"] for g in groups}) == pytest.approx([5e-3, 1e-2])
        scaled = [g for g in groups if g["base_lr"] == pytest.approx(5e-3)]
        assert {id(p) for g in scaled for p in g["params"]} == {id(p) for p in trainer.model.inp.parameters()}
        factors = {round(g["lr"] / g["base_lr"], 9) for g in groups}
        assert len(factors) == 1 and 0 < factors.pop() < 1  # one cosine factor, applied to every group
    finally:
        trainer.close()


def test_every_step_trains_in_train_mode_even_after_eval_elsewhere(tmp_path, pm):
    """A callback (sample generation, a probe) may leave the model in eval mode; the next step undoes it."""
    cfg = make_config(tmp_path / "mode", budget={"steps": 3})
    cfg["model"]["name"] = "mode_probe"
    trainer = _trainer(cfg, pm)
    try:
        trainer.build()
        ModeProbe.seen.clear()
        assert trainer.train_step() is not None
        trainer.model.eval()  # what generate() does
        assert trainer.train_step() is not None
        assert ModeProbe.seen == [True, True]
    finally:
        trainer.close()


def test_bf16_keeps_fp32_masters_and_optimizer_state(tmp_path, pm):
    cfg = make_config(tmp_path / "bf16", precision="bf16", budget={"steps": 2})
    cfg["model"]["name"] = "dtype_probe"
    trainer = _trainer(cfg, pm)
    try:
        trainer.build()
        DtypeProbe.seen.clear()
        assert trainer.train_step() is not None
        assert DtypeProbe.seen == [torch.bfloat16]  # compute ran under bf16 autocast
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        state = [s for s in trainer.optimizer.state.values()]
        assert state and all(
            s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32 for s in state
        )
    finally:
        trainer.close()


def test_bf16_pure_is_bf16_everywhere(tmp_path, pm):
    cfg = make_config(tmp_path / "pure", precision="bf16-pure", budget={"steps": 2})
    trainer = _trainer(cfg, pm)
    try:
        trainer.build()
        assert trainer.train_step() is not None
        assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters())
        assert all(s["exp_avg"].dtype == torch.bfloat16 for s in trainer.optimizer.state.values())
    finally:
        trainer.close()


def test_grad_checkpointing_gives_the_same_losses(tmp_path, pm):
    plain = train_from_config(make_config(tmp_path / "a", budget={"steps": 3}), pm=pm)
    ckpt = train_from_config(make_config(tmp_path / "b", budget={"steps": 3}, grad_checkpointing=True), pm=pm)
    assert losses(plain) == pytest.approx(losses(ckpt), rel=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, pm):
    cfg = make_config(tmp_path / "nan", budget={"steps": 6}, checkpoint={"every_steps": 2})
    cfg["model"] = {"name": "nan_toy", "width": 32, "nan_calls": [4]}  # the 4th step's loss is NaN
    with pytest.raises(NonFiniteLossError, match="step 4.*step_00000002"):
        train_from_config(cfg, pm=pm)
    ckpts = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir())
    assert ckpts == ["step_00000002"]
    assert not (tmp_path / "nan" / "export").exists()
    # the last good checkpoint loads and training goes on from it
    cfg["model"]["nan_calls"] = []
    run_dir = train_from_config(cfg, resume="latest", pm=pm)
    assert max(losses(run_dir)) == 6


def test_skip_nonfinite_skips_the_update(tmp_path, pm):
    cfg = make_config(tmp_path / "skip", budget={"steps": 4}, skip_nonfinite=1)
    cfg["model"] = {"name": "nan_toy", "width": 32, "nan_calls": [2]}
    run_dir = train_from_config(cfg, pm=pm)
    assert sorted(losses(run_dir)) == [1, 2, 3, 4]  # the NaN step was skipped, 4 good steps were made


def test_sigterm_saves_and_resume_is_bit_exact(tmp_path, pm):
    """A run stopped by SIGTERM after step 3 and resumed reproduces the uninterrupted losses exactly."""
    base = make_config(tmp_path / "full", budget={"steps": 7}, ema={"decay": 0.9})
    base["model"]["dropout"] = 0.2  # exercises the RNG-state restore
    full = losses(train_from_config(copy.deepcopy(base), pm=pm))

    cut = copy.deepcopy(base)
    cut["run"]["out_dir"] = str(tmp_path / "cut")
    cut["train"]["callbacks"] = [{"name": "sigterm_at", "step": 3}]
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 3: checkpoint .*step_00000003 written"):
        train_from_config(copy.deepcopy(cut), pm=pm)  # the CLI exits 143 with this message
    run_dir = tmp_path / "cut"
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_00000003"]
    assert not (run_dir / "export").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    train_from_config(copy.deepcopy(cut), resume="latest", pm=pm)
    assert losses(run_dir) == full  # exact equality, step for step
    ema_full, ema_cut = weights(tmp_path / "full"), weights(run_dir)
    for k in ema_full:
        assert torch.equal(ema_full[k], ema_cut[k])


class TinyLM(torch.nn.Module):
    """Bigram LM over 8 token ids: enough to exercise token budgets, text validation and mixing."""

    @dataclass(kw_only=True)
    class Config:
        vocab: int = 8

    def __init__(self, cfg):
        super().__init__()
        self.embed = torch.nn.Embedding(cfg.vocab, 16)
        self.head = torch.nn.Linear(16, cfg.vocab)
        self.reg = ToyMLP(ToyMLP.Config(width=16, depth=1))

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls(cfg)

    def compute_loss(self, batch):
        if batch["modality"] == "regression":
            return self.reg.compute_loss(batch)
        logits = self.head(self.embed(batch["input_ids"]))
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100
        ), {}

    def flops_per_sample(self, batch):
        return 100.0


class CountingText:
    """Text source: ids (i + position) % 8, the first 3 of 5 labels supervised."""

    modality = "text"

    @dataclass(kw_only=True)
    class Config:
        pass

    def __init__(self):
        self.pos = 0

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls()

    def batches(self, batch_size, *, rank, world_size, seed):
        while True:
            ids = (torch.arange(batch_size)[:, None] + torch.arange(5)[None] + self.pos) % 8
            self.pos += batch_size * world_size
            labels = ids.roll(-1, dims=1)
            labels[:, 3:] = -100
            yield {"modality": "text", "input_ids": ids, "labels": labels}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


@hookimpl
def register_models_lm(register):
    register("tiny_lm", TinyLM)


@hookimpl
def register_text_source(register):
    register("counting_text", CountingText)


def test_token_budget_mixing_validation_and_sinks(tmp_path, foundry_pm):
    foundry_pm.register(types.SimpleNamespace(register_models=register_models_lm), name="lm-test")
    foundry_pm.register(
        types.SimpleNamespace(register_data_sources=register_text_source),
        name="text-test",
    )
    cfg = make_config(
        tmp_path / "lm", budget={"tokens": 96}, val_every=2, val_batches=2, metrics=["jsonl", "tensorboard"]
    )
    cfg["model"] = {"name": "tiny_lm"}
    cfg["train"]["batch"] = {"global": 4, "per_device": 2}
    cfg["data"] = {
        "mix": [{"source": {"name": "counting_text"}, "weight": 1.0, "label": "text"}],
        "val": {"heldout": {"name": "counting_text"}},
    }
    run_dir = train_from_config(cfg, pm=foundry_pm)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6, 7, 8]  # 96 tokens / (4 samples × 3 tokens)
    assert train_rows[-1]["tokens_seen"] == 96 and train_rows[-1]["tokens_per_s"] > 0
    val = [r for r in rows if "val/heldout/loss" in r]
    assert [r["step"] for r in val] == [2, 4, 6, 8]
    assert val[-1]["val/heldout/perplexity"] == pytest.approx(math.exp(val[-1]["val/heldout/loss"]))
    assert any((run_dir / "tensorboard").iterdir())

    # co-training: text and regression micro-batches inside one optimizer step, per-source losses
    cfg2 = copy.deepcopy(cfg)
    cfg2["run"]["out_dir"] = str(tmp_path / "mix")
    cfg2["train"]["budget"] = {"steps": 6}
    cfg2["train"]["batch"] = {"global": 8, "per_device": 2}
    cfg2["data"]["mix"].append({"source": {"name": "synthetic_regression"}, "weight": 1.0, "label": "reg"})
    rows = [r for r in read_metrics(train_from_config(cfg2, pm=foundry_pm) / "metrics.jsonl") if "loss" in r]
    assert any("loss/text" in r for r in rows) and any("loss/reg" in r for r in rows)
    assert rows[-1]["mfu"] > 0


def test_wandb_offline_run_records_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = train_from_config(make_config(tmp_path / "run", metrics=["jsonl", "wandb"]))
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, "no offline wandb run was written"
    data = files[0].read_bytes()
    for key in (b"grad_norm", b"samples_per_s", b"lr"):  # the history records carry our metric names
        assert key in data
    assert len(losses(run_dir)) == 6  # metrics.jsonl stays complete beside it


def test_compile_gives_the_same_losses(tmp_path):
    eager = losses(train_from_config(make_config(tmp_path / "eager")))
    compiled = losses(train_from_config(make_config(tmp_path / "compiled", compile=True)))
    assert eager.keys() == compiled.keys()
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4, abs=1e-5)


def test_every_optimizer_step_takes_every_source_by_weight_and_resumes_the_same_sequence(tmp_path, pm):
    """No accumulation (global = per_device = 4), text 3 : regression 1: every step trains on 3 text
    and 1 regression samples (its loss their sample-weighted mean); a run stopped after step 3 and
    resumed gives the uninterrupted run's losses, step for step."""
    pm.register(
        types.SimpleNamespace(register_models=register_models_lm, register_data_sources=register_text_source),
        name="lm-mix-test",
    )
    base = make_config(tmp_path / "full", budget={"steps": 6}, batch={"global": 4, "per_device": 4})
    base["model"] = {"name": "tiny_lm"}
    base["data"] = {
        "mix": [
            {"source": {"name": "counting_text"}, "weight": 3.0, "label": "text"},
            {"source": {"name": "synthetic_regression", "num_samples": 64}, "weight": 1.0, "label": "reg"},
        ]
    }
    rows = [
        r
        for r in read_metrics(train_from_config(copy.deepcopy(base), pm=pm) / "metrics.jsonl")
        if "loss" in r
    ]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert r["samples/text"] == 3 and r["samples/reg"] == 1 and r["samples_seen"] == 4 * r["step"]
        assert r["loss"] == pytest.approx(0.75 * r["loss/text"] + 0.25 * r["loss/reg"], rel=1e-6)
    full = losses(tmp_path / "full")

    cut = copy.deepcopy(base)
    cut["run"]["out_dir"] = str(tmp_path / "cut")
    cut["train"]["callbacks"] = [{"name": "sigterm_at", "step": 3}]
    with pytest.raises(Interrupted):
        train_from_config(copy.deepcopy(cut), pm=pm)
    train_from_config(copy.deepcopy(cut), resume="latest", pm=pm)
    assert losses(tmp_path / "cut") == full  # exact equality, step for step
