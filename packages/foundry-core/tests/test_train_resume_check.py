"""Resume safety: the new config against the checkpoint's, every invocation's config kept, Ctrl-C -> 130.

Before: ``--resume latest model.depth=1`` on a 2-block checkpoint resumed and dropped a block silently,
a changed lr/seed gave no notice, ``config.resolved.yaml`` was overwritten, and Ctrl-C exited 0.
"""

from __future__ import annotations

import os
import signal
import types
from pathlib import Path

import pytest
import yaml

from foundry_core.errors import ConfigError, Interrupted
from foundry_core.hookspecs import hookimpl
from foundry_core.testing import TOY_MODEL, TOY_SOURCE, run_config
from foundry_core.train.metrics import read_metrics
from foundry_core.train.resume_check import check_resume, config_changes, flatten
from foundry_core.train.run import train_from_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def make_config(out: Path, steps: int = 2) -> dict:
    return run_config(
        out,
        model={**TOY_MODEL, "width": 16, "depth": 2},
        source={**TOY_SOURCE, "num_samples": 64},
        steps=steps,
        batch=4,
        run={"seed": 2},
    )


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl")]


@pytest.fixture
def two_steps(tmp_path, foundry_pm) -> Path:
    out = tmp_path / "run"
    train_from_config(make_config(out), pm=foundry_pm)
    return out


def test_model_shape_change_is_an_error_naming_the_keys(two_steps, foundry_pm):
    cfg = make_config(two_steps, steps=4)
    cfg["model"]["depth"] = 1  # one block fewer: its tensors would be dropped silently
    with pytest.raises(ConfigError) as err:
        train_from_config(cfg, resume="latest", pm=foundry_pm)
    msg = str(err.value)
    assert "the model does not match the checkpoint's" in msg
    assert "in the checkpoint but not in the model: model.model.blocks.1." in msg
    assert "model.depth: 2 -> 1" in msg
    cfg["model"]["depth"], cfg["model"]["width"] = 2, 24
    with pytest.raises(
        ConfigError,
        match=r"different shape \(checkpoint -> model\): model\.model\.blocks\.0\.fc1\.bias \[32\] -> \[48\]",
    ):
        train_from_config(cfg, resume="latest", pm=foundry_pm)
    cfg["model"]["width"], cfg["model"]["depth"] = 16, 3
    with pytest.raises(ConfigError, match=r"not in the checkpoint: model\.model\.blocks\.2\."):
        train_from_config(cfg, resume="latest", pm=foundry_pm)
    assert _steps(two_steps) == [1, 2]  # nothing trained


def test_changed_optimizer_kind_is_an_error(two_steps, foundry_pm):
    cfg = make_config(two_steps, steps=4)
    cfg["train"]["optim"] = {"name": "sgd", "lr": 0.01, "momentum": 0.9}
    with pytest.raises(
        ConfigError, match=r"optimizer/EMA state does not fit.*train\.optim\.name: 'adamw' -> 'sgd'"
    ):
        train_from_config(cfg, resume="latest", pm=foundry_pm)


def test_changed_lr_seed_and_data_are_warnings_listing_them(two_steps, foundry_pm, caplog):
    cfg = make_config(two_steps, steps=4)
    cfg["train"]["optim"]["lr"] = 0.02
    cfg["run"]["seed"] = 5
    cfg["data"]["mix"][0]["source"]["num_samples"] = 80
    train_from_config(cfg, resume="latest", pm=foundry_pm)
    warnings = [r.getMessage() for r in caplog.records if "settings differ" in r.getMessage()]
    assert len(warnings) == 1
    for needle in (
        "train.optim.lr: 0.01 -> 0.02",
        "run.seed: 2 -> 5",
        "data.mix.0.source.num_samples: 64 -> 80",
    ):
        assert needle in warnings[0]
    assert "budget" not in warnings[0]  # raising the budget is what a resume is for
    assert _steps(two_steps) == [1, 2, 3, 4]


def test_same_config_resumes_without_warnings(two_steps, foundry_pm, caplog):
    train_from_config(make_config(two_steps, steps=3), resume="latest", pm=foundry_pm)
    assert not [r for r in caplog.records if "settings differ" in r.getMessage()]


def test_every_invocation_config_is_kept(two_steps, foundry_pm):
    cfg = make_config(two_steps, steps=3)
    cfg["train"]["optim"]["lr"] = 0.03
    train_from_config(cfg, resume="latest", pm=foundry_pm)
    kept = list((two_steps / "configs").iterdir())
    resumed = [p for p in kept if p.name.endswith("-resume-step_00000002.yaml")]
    assert len(kept) == 2 and len(resumed) == 1
    first, second = (yaml.safe_load(p.read_text()) for p in (*set(kept) - set(resumed), resumed[0]))
    assert first["train"]["optim"]["lr"] == 0.01 and second["train"]["optim"]["lr"] == 0.03
    assert yaml.safe_load((two_steps / "config.resolved.yaml").read_text())["train"]["optim"]["lr"] == 0.03


def test_flatten_and_changes():
    assert flatten({"a": {"b": 1}, "l": [{"x": 2}], "s": [1, 2], "e": {}}) == {
        "a.b": 1,
        "l.0.x": 2,
        "s": [1, 2],
        "e": {},
    }
    assert config_changes({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3, "d": 4}}) == [
        ("b.c", 2, 3),
        ("b.d", "<unset>", 4),
    ]


def test_check_resume_without_a_recorded_config_still_checks_shapes():
    stored = {"model.w": (2, 2)}
    assert check_resume("ckpt", None, {}, stored, {"model.w": (2, 2)}) == []
    with pytest.raises(ConfigError, match=r"model\.w \[2, 2\] -> \[3, 2\]"):
        check_resume("ckpt", None, {}, stored, {"model.w": (3, 2)})


# ----------------------------------------------------------------------------- stop signals


class SendSignal:
    """A callback that delivers ``count`` SIGINTs to this process after step ``at``."""

    def __init__(self, at: int, count: int) -> None:
        self.at, self.count = at, count

    def on_step_end(self, trainer, out) -> None:
        if trainer.state.step == self.at:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGINT)


def _signal_plugin(at: int, count: int):
    from dataclasses import dataclass

    class Sender(SendSignal):
        @dataclass
        class Config:
            pass

        @classmethod
        def from_config(cls, cfg, ctx):
            return cls(at, count)

    @hookimpl
    def register_callbacks(register):
        register("send_sigint", Sender)

    return types.SimpleNamespace(register_callbacks=register_callbacks)


def test_ctrl_c_exits_130_and_says_the_checkpoint_was_written(tmp_path, foundry_pm, cli_runner):
    from foundry_core.cli.main import build_cli

    foundry_pm.register(_signal_plugin(at=2, count=1), name="sigint-test")
    cfg = make_config(tmp_path / "run", steps=5)
    cfg["train"]["callbacks"] = [{"name": "send_sigint"}]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = cli_runner.invoke(build_cli(lambda: foundry_pm), ["train", str(path)])
    assert result.exit_code == 130, result.output
    assert (
        "stopped by SIGINT at step 2: checkpoint" in result.output
        and "step_00000002 written" in result.output
    )
    assert "nothing exported" in result.output and not (tmp_path / "run" / "export").exists()
    resumed = cli_runner.invoke(
        build_cli(lambda: foundry_pm), ["train", str(path), "--resume", "latest", "train.callbacks=[]"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert _steps(tmp_path / "run") == [1, 2, 3, 4, 5]


def test_second_ctrl_c_exits_130_and_says_no_checkpoint_was_written(tmp_path, foundry_pm):
    foundry_pm.register(_signal_plugin(at=1, count=2), name="sigint-test")
    cfg = make_config(tmp_path / "run", steps=5)
    cfg["train"]["callbacks"] = [{"name": "send_sigint"}]
    with pytest.raises(
        Interrupted, match="no checkpoint of this step was written.*the last checkpoint is none"
    ) as err:
        train_from_config(cfg, pm=foundry_pm)
    assert err.value.exit_code == 130
