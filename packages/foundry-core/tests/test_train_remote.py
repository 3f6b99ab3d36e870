"""Remote sync against a real S3 API (moto server on 127.0.0.1): upload, resume from remote, failures reported."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from foundry_core.errors import FoundryError, Interrupted
from foundry_core.export import load_pretrained
from foundry_core.hookspecs import hookimpl
from foundry_core.registry import collect
from foundry_core.testing import TOY_MODEL, TOY_SOURCE, run_config
from foundry_core.train.metrics import read_metrics
from foundry_core.train.run import train_from_config

pytest.importorskip("s3fs")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


class SigtermAt:
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
def register_callbacks(register):
    register("sigterm_at_remote", SigtermAt)


def make_config(out: Path, remote: str | None) -> dict:
    return run_config(
        out,
        model={**TOY_MODEL, "dropout": 0.1},
        source={**TOY_SOURCE, "num_samples": 64},
        batch=4,
        per_device=2,
        run={"seed": 5, "remote_dir": remote},
        train={
            "budget": {"samples": 36},
            "schedule": {"name": "cosine", "warmup": 0.05},
            "checkpoint": {"every_steps": 3, "keep_last": 2},
        },
    )


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_remote_sync_and_resume_from_remote(tmp_path, foundry_pm, s3_server):
    import fsspec

    foundry_pm.register(types.SimpleNamespace(register_callbacks=register_callbacks), name="remote-test")
    reference = losses(train_from_config(make_config(tmp_path / "ref", None), pm=foundry_pm))
    assert sorted(reference) == list(range(1, 10))

    remote = s3_server.s3_url("runs/r1")
    cfg = make_config(tmp_path / "local", remote)
    cut = copy.deepcopy(cfg)
    cut["train"]["callbacks"] = [{"name": "sigterm_at_remote", "step": 5}]
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 5") as stopped:
        train_from_config(cut, pm=foundry_pm)  # stops after step 5 with a checkpoint, uploaded before return
    assert stopped.value.exit_code == 143

    fs, root = fsspec.core.url_to_fs(remote)
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/checkpoints")) == [
        "step_00000003",
        "step_00000005",
    ]
    assert fs.exists(f"{root}/checkpoints/step_00000005/_COMPLETE")
    assert fs.exists(f"{root}/checkpoints/step_00000005/rank_00000.pt")

    shutil.rmtree(tmp_path / "local")  # the machine is gone; only the remote copy is left
    run_dir = train_from_config(copy.deepcopy(cut), resume="latest", pm=foundry_pm)
    resumed = losses(run_dir)
    assert sorted(resumed) == [6, 7, 8, 9]
    assert resumed == {k: reference[k] for k in (6, 7, 8, 9)}  # bit-exact continuation from the remote copy

    fs.invalidate_cache()
    assert fs.exists(f"{root}/export/_COMPLETE")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/checkpoints"))
    assert names == ["step_00000006", "step_00000009"]  # keep_last applies remotely too
    registry = collect(foundry_pm)
    local_model = load_pretrained(run_dir / "export", registry=registry)
    remote_model = load_pretrained(f"{remote}/export", registry=registry)
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(local_model(x), remote_model(x))


def test_failed_upload_is_retried_and_reported(tmp_path, foundry_pm, s3_server, caplog):
    cfg = make_config(tmp_path / "run", f"s3://no-such-bucket-{os.getpid()}/run")
    cfg["run"]["remote_retries"] = 1
    cfg["train"]["budget"] = {"steps": 3}
    with pytest.raises(FoundryError, match="remote sync failed"):
        train_from_config(cfg, pm=foundry_pm)
    assert "retry 1/1" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "step_00000003" / "meta.json").is_file()  # local copy intact
