"""Fault injection: kill -9 during checkpoint save, remote sync, and one rank of a torchrun job.

After each kill: the previous good checkpoint is intact and verifies against its manifest, the torn one
is never picked up, and rerunning the command completes with the same final loss as a run that was
never interrupted. The worker (``faults_checkpoint_worker.py``) names each kill point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from foundry_core.testing import TOY_SOURCE, run_config
from foundry_core.train import checkpoint as ckpt_mod
from foundry_core.train.checkpoint_integrity import UntrustedCheckpointError, verify_checkpoint
from foundry_core.train.metrics import read_metrics
from foundry_core.train.remote import MARKER, list_remote_checkpoints
from foundry_core.train.run import train_from_config

WORKER = Path(__file__).with_name("faults_checkpoint_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FOUNDRY_DISABLE_PLUGIN_AUTOLOAD": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def make_config(out: Path, steps: int = 6, keep_last: int = 5, **run) -> dict:
    return run_config(
        out,
        source={**TOY_SOURCE, "num_samples": 256},
        steps=steps,
        per_device=4,
        run={"seed": 4, **run},
        train={
            "schedule": {"name": "cosine", "warmup": 2},
            "checkpoint": {"every_steps": 2, "keep_last": keep_last},
        },
    )


def final_loss(run_dir: Path) -> float:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r][-1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> float:
    """Final loss of the same run, never killed (one process; accumulation 2 x 4 = global 8)."""
    from foundry_core.plugins import make_plugin_manager

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    return final_loss(train_from_config(make_config(out), pm=make_plugin_manager(entry_points_enabled=False)))


def run_worker(tmp_path: Path, cfg: dict, point: str, kill_step: int) -> subprocess.CompletedProcess:
    cfg_path = tmp_path / f"{point}.json"
    cfg_path.write_text(json.dumps(cfg))
    cmd = [sys.executable, str(WORKER), str(cfg_path), point, str(kill_step)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


FAST = ["mid_shard", "mid_manifest", "before_rename"]
SLOW = ["rank_state", "before_manifest", "during_prune"]


@pytest.mark.parametrize("point", [*FAST, *(pytest.param(p, marks=pytest.mark.slow) for p in SLOW)])
def test_kill_during_checkpoint_save(tmp_path, foundry_pm, uninterrupted, point):
    cfg = make_config(tmp_path / "run", keep_last=1 if point == "during_prune" else 5)
    proc = run_worker(tmp_path, cfg, point, kill_step=4)
    assert proc.returncode == -9, proc.stderr[-3000:]
    root = tmp_path / "run" / "checkpoints"
    good = 4 if point == "during_prune" else 2  # a kill while pruning lands after step 4 is in place
    assert [p.name for p in ckpt_mod.complete_checkpoints(root)] == [ckpt_mod.step_dir_name(good)]
    assert verify_checkpoint(root / ckpt_mod.step_dir_name(good))
    torn = [p.name for p in root.iterdir() if p.name.startswith(".tmp_")]
    assert torn == [f".tmp_{ckpt_mod.step_dir_name(2 if point == 'during_prune' else 4)}"]
    with pytest.raises(UntrustedCheckpointError):  # even asked for by name, the torn one is refused
        verify_checkpoint(root / torn[0])

    train_from_config(cfg, resume="latest", pm=foundry_pm)  # the rerun completes
    assert final_loss(tmp_path / "run") == pytest.approx(uninterrupted, rel=1e-6)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp_")]
    for folder in ckpt_mod.complete_checkpoints(root):
        assert verify_checkpoint(folder)


def test_kill_during_remote_sync(tmp_path, foundry_pm, uninterrupted):
    import fsspec

    remote = tmp_path / "remote"
    cfg = make_config(tmp_path / "run", remote_dir=f"file://{remote}")
    proc = run_worker(tmp_path, cfg, "mid_upload", kill_step=4)
    assert proc.returncode == -9, proc.stderr[-3000:]
    fs, root = fsspec.core.url_to_fs(f"file://{remote}")
    assert list_remote_checkpoints(fs, root) == ["step_00000002"]  # the torn upload has no marker
    assert (remote / "checkpoints" / "step_00000004").is_dir()
    assert not (remote / "checkpoints" / "step_00000004" / MARKER).exists()

    fresh = make_config(tmp_path / "fresh", remote_dir=f"file://{remote}")  # another machine, same remote
    train_from_config(fresh, resume="latest", pm=foundry_pm)
    assert [r["step"] for r in read_metrics(tmp_path / "fresh" / "metrics.jsonl")] == [3, 4, 5, 6]
    assert final_loss(tmp_path / "fresh") == pytest.approx(uninterrupted, rel=1e-6)
    assert list_remote_checkpoints(fs, root) == ["step_00000002", "step_00000004", "step_00000006"]
    for name in ("step_00000002", "step_00000004", "step_00000006"):  # the re-upload replaced the torn one
        assert verify_checkpoint(remote / "checkpoints" / name)


@pytest.mark.slow
def test_torchrun_restart_after_a_rank_is_killed(tmp_path, foundry_pm, uninterrupted):
    """2 ranks (gloo, CPU), ``--max-restarts 1``: rank 1 is SIGKILLed after step 5; the restarted job
    resumes from the step-4 checkpoint and ends with the uninterrupted run's final loss (~3 min: torchrun
    waits for the surviving rank before it restarts)."""
    cfg = make_config(tmp_path / "run")
    cfg["distributed"] = {"strategy": "ddp", "backend": "gloo"}
    cfg["train"]["batch"] = {"global": 8, "per_device": 4}  # 2 ranks x 4 = the one-process run's 2 x 4
    cfg_path = tmp_path / "dist.json"
    cfg_path.write_text(json.dumps(cfg))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "--monitor-interval=0.5",
        str(WORKER),
        str(cfg_path),
        "none",
        "5",
        "latest",
        "--dist",
    ]
    proc = subprocess.run(cmd, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=420)
    log = proc.stdout[-4000:] + proc.stderr[-8000:]
    assert proc.returncode == 0, log
    assert "failed (exitcode: -9) local_rank: 1" in log  # the kill happened and torchrun restarted the job
    resumed = [p.name for p in (tmp_path / "run" / "configs").iterdir() if "-resume-" in p.name]
    assert len(resumed) == 1 and resumed[0].endswith("-resume-step_00000004.yaml")
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert steps[:5] == [1, 2, 3, 4, 5] and steps[-2:] == [5, 6]  # step 5 redone from the step-4 checkpoint
    assert final_loss(tmp_path / "run") == pytest.approx(uninterrupted, rel=1e-5, abs=1e-6)
    assert verify_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000006")
