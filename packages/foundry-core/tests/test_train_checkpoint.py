"""Checkpoints: a save torn by a crash is never picked up; keep-last-N; export → load_pretrained round trip."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from foundry_core.config import parse_dataclass
from foundry_core.export import load_pretrained
from foundry_core.hookspecs import hookimpl
from foundry_core.models.toy import ToyMLP
from foundry_core.registry import collect
from foundry_core.run_config import RunConfig
from foundry_core.testing import run_config
from foundry_core.train import checkpoint as ckpt_mod
from foundry_core.train.metrics import read_metrics
from foundry_core.train.run import train_from_config
from foundry_core.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def make_config(out: Path, steps: int = 6, **train) -> dict:
    return run_config(out, steps=steps, batch=4, run={"seed": 2}, train={"optim": {"name": "sgd", "lr": 0.05}, **train})


class Crash(BaseException):
    """Stands in for the process dying in the middle of a save."""


def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path, foundry_pm, monkeypatch):
    cfg = make_config(tmp_path / "run", checkpoint={"every_steps": 2, "keep_last": 5})
    real_write = ckpt_mod._write_rank_state

    def dying_write(path: Path, state: dict) -> None:
        if state["train"]["step"] == 4:
            raise Crash  # DCP shards of step 4 are on disk, the rest is not
        real_write(path, state)

    monkeypatch.setattr(ckpt_mod, "_write_rank_state", dying_write)
    with pytest.raises(Crash):
        train_from_config(cfg, pm=foundry_pm)
    root = tmp_path / "run" / "checkpoints"
    assert (root / ".tmp_step_00000004").is_dir() and not (root / "step_00000004").exists()
    assert ckpt_mod.latest_checkpoint(root) == root / "step_00000002"

    monkeypatch.setattr(ckpt_mod, "_write_rank_state", real_write)
    train_from_config(cfg, resume="latest", pm=foundry_pm)
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 3, 4, 5, 6]  # steps 3-4 were redone from the step-2 checkpoint
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002", "step_00000004", "step_00000006"]


def test_keep_last_n_and_meta(tmp_path, foundry_pm):
    run_dir = train_from_config(
        make_config(tmp_path / "run", checkpoint={"every_steps": 1, "keep_last": 2}), pm=foundry_pm
    )
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step_00000005", "step_00000006"]
    meta = json.loads((run_dir / "checkpoints" / "step_00000006" / "meta.json").read_text())
    assert meta["step"] == 6 and meta["world_size"] == 1 and meta["samples"] == 24
    assert "foundry-core" in meta["plugins"]
    for name in (
        "config.resolved.yaml",
        "plugins.json",
        "metrics.jsonl",
        "loss.png",
        "export/model.safetensors",
    ):
        assert (run_dir / name).is_file(), name


def test_resume_of_missing_path_is_a_clear_error(tmp_path, foundry_pm):
    from foundry_core.errors import FoundryError

    with pytest.raises(FoundryError, match="no such checkpoint"):
        train_from_config(make_config(tmp_path / "run"), resume=str(tmp_path / "nope"), pm=foundry_pm)


# ----------------------------------------------------------------------------- export


class StatsToy(ToyMLP):
    """Needs a side file (normalization stats) and has tied weights: what export must carry."""

    @dataclass(kw_only=True)
    class Config(ToyMLP.Config):
        stats: str | None = None

    def __init__(self, cfg, scale: float) -> None:
        super().__init__(cfg)
        self.scale = scale
        self.tied = nn.Linear(cfg.in_dim, cfg.width)
        self.tied.weight = self.inp.weight

    @classmethod
    def from_config(cls, cfg, ctx):
        scale = 3.0
        if cfg.stats is not None:
            scale = json.loads((Path(ctx.pretrained_dir) / cfg.stats).read_text())["scale"]
        return cls(cfg, scale)

    def forward(self, x):
        return super().forward(x * self.scale)

    def export_artifacts(self, out_dir: str) -> dict:
        (Path(out_dir) / "stats.json").write_text(json.dumps({"scale": self.scale}))
        return {"stats": "stats.json"}


@hookimpl
def register_models(register):
    register("stats_toy", StatsToy)


@pytest.mark.parametrize("ema", [False, True])
def test_export_load_pretrained_round_trip(tmp_path, foundry_pm, ema):
    foundry_pm.register(types.SimpleNamespace(register_models=register_models), name="export-test")
    registry = collect(foundry_pm)
    cfg = make_config(tmp_path / "run", steps=4)
    cfg["model"]["name"] = "stats_toy"
    if ema:
        cfg["train"]["ema"] = {"decay": 0.5}
    trainer = Trainer(parse_dataclass(RunConfig, cfg, resolve=registry.config_class), registry, pm=foundry_pm)
    try:
        trainer.build()
        trainer.fit()
        model = trainer.model
        if ema:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(trainer.ema.shadow[name])
    finally:
        trainer.close()
    export = tmp_path / "run" / "export"
    node = yaml.safe_load((export / "config.yaml").read_text())["model"]
    assert node["stats"] == "stats.json" and node["name"] == "stats_toy"
    meta = json.loads((export / "foundry_export.json").read_text())
    assert meta["format_version"] == 1 and meta["step"] == 4 and meta["ema"] is ema
    from foundry_core.export import code_version

    assert meta.get("git_sha") == code_version().get("git_sha")  # the code that wrote it (absent outside git)
    loaded = load_pretrained(export, registry=registry)
    assert loaded.scale == 3.0 and loaded.tied.weight is loaded.inp.weight
    x = torch.randn(5, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


KILL_SCRIPT = """
import os, signal, sys
import torch
from foundry_core.plugins import make_plugin_manager
from foundry_core.train import checkpoint as ckpt_mod
from foundry_core.train.run import train_from_config

real = ckpt_mod._write_rank_state
def dying(path, state):
    if state["train"]["step"] == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind
    real(path, state)
ckpt_mod._write_rank_state = dying
torch.set_num_threads(1)
train_from_config(CONFIG, pm=make_plugin_manager(entry_points_enabled=False))
"""


@pytest.mark.slow
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path, foundry_pm):
    import subprocess
    import sys

    cfg = make_config(tmp_path / "run", checkpoint={"every_steps": 2, "keep_last": 5})
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.replace("CONFIG", repr(cfg)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    root = tmp_path / "run" / "checkpoints"
    assert ckpt_mod.latest_checkpoint(root) == root / "step_00000002"
    assert (root / ".tmp_step_00000004").is_dir()
    train_from_config(cfg, resume="latest", pm=foundry_pm)
    assert ckpt_mod.latest_checkpoint(root) == root / "step_00000006"
    assert not (root / ".tmp_step_00000004").exists()


def test_foundry_train_cli(tmp_path, cli_runner, foundry_pm):
    from foundry_core.cli.main import build_cli

    cfg = make_config(tmp_path / "cli", steps=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = build_cli(lambda: foundry_pm)
    result = cli_runner.invoke(cli, ["train", str(path), "train.budget.steps=3"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(tmp_path / "cli" / "metrics.jsonl")] == [1, 2, 3]
    result = cli_runner.invoke(cli, ["train", str(path), "train.budget.steps=5", "--resume", "latest"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(tmp_path / "cli" / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    bad = cli_runner.invoke(cli, ["train", str(path), "train.batch.per_device=3"])
    assert bad.exit_code == 2 and "not a multiple" in bad.output


def test_every_samples_and_ema_switched_on_at_resume(tmp_path, foundry_pm):
    cfg = make_config(tmp_path / "run", steps=4, checkpoint={"every_samples": 8, "keep_last": 5})
    train_from_config(cfg, pm=foundry_pm)
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002", "step_00000004"]  # 4 samples per step
    cfg["train"]["budget"] = {"steps": 6}
    cfg["train"]["ema"] = {"decay": 0.5}
    train_from_config(cfg, resume=str(root / "step_00000004"), pm=foundry_pm)
    meta = json.loads((tmp_path / "run" / "export" / "foundry_export.json").read_text())
    assert meta["step"] == 6 and meta["ema"] is True
    assert json.loads((root / "step_00000006" / "meta.json").read_text())["ema"] is True


def test_code_version_strips_credentials_and_survives_no_git(monkeypatch):
    import subprocess

    from foundry_core import export

    answers = {
        "rev-parse": "a" * 40,
        "remote": "https://user:token@example.com/org/foundry.git",
        "status": "",
    }

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, stdout=answers[cmd[3]] + "\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert export.code_version() == {"git_sha": "a" * 40, "git_repo": "https://example.com/org/foundry.git"}

    def no_git(cmd, **kw):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert export.code_version() == {}
