"""Two gloo processes on CPU via torchrun: DDP = 1 rank, FSDP2 = DDP (toy model and transformer), 2 → 1 rank
resume, no hang on skewed data, and a ``--max-restarts`` restart joins a fresh process group."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from foundry_core.testing import TOY_SOURCE, run_config
from foundry_core.train.metrics import read_metrics
from foundry_core.train.run import train_from_config

WORKER = Path(__file__).with_name("train_dist_worker.py")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FOUNDRY_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


def _one_rank_config(out: Path, steps: int = 8) -> dict:
    """The config of train_dist_worker.py's runs on one rank: 1 x 4 per device, accumulation 2."""
    return run_config(
        out,
        source={**TOY_SOURCE, "num_samples": 256},
        steps=steps,
        per_device=4,
        run={"seed": 3},
        train={"schedule": {"name": "cosine", "warmup": 2}, "checkpoint": {"every_steps": 6, "keep_last": 3}},
    )


def test_ddp_two_ranks_equals_one_rank(two_rank_runs, tmp_path, foundry_pm):
    ddp = _losses(two_rank_runs / "ddp")
    one = _losses(train_from_config(_one_rank_config(tmp_path / "one"), pm=foundry_pm))
    assert sorted(ddp) == list(range(1, 9))
    assert ddp == pytest.approx(one, rel=1e-5, abs=1e-6)
    assert ddp[8] < ddp[1]  # it learns


def test_fsdp2_equals_ddp(two_rank_runs):
    ddp, fsdp = _losses(two_rank_runs / "ddp"), _losses(two_rank_runs / "fsdp2")
    assert sorted(fsdp) == list(range(1, 9))
    assert fsdp == pytest.approx(ddp, rel=1e-5, abs=1e-6)


def test_transformer_fsdp2_equals_ddp(two_rank_runs):
    """The LM path (tied fused head + loss, custom autograd) gives the same training under both wrappers.

    (Not compared with one rank: each rank packs its own documents into sequences, so the batches differ.)
    """
    ddp, fsdp = _losses(two_rank_runs / "lm_ddp"), _losses(two_rank_runs / "lm_fsdp2")
    assert sorted(ddp) == sorted(fsdp) == [1, 2, 3, 4]
    assert fsdp == pytest.approx(ddp, rel=1e-5)
    assert ddp[4] < ddp[1] - 1.0  # it learns


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_resume_two_ranks_on_one_rank(two_rank_runs, tmp_path, foundry_pm, strategy):
    """A 2-rank checkpoint (step 6) resumed on 1 rank continues like the 2-rank run (steps 7, 8)."""
    ckpt = two_rank_runs / strategy / "checkpoints" / "step_00000006"
    assert (ckpt / "rank_00001.pt").is_file()
    cfg = _one_rank_config(tmp_path / "resumed")
    run_dir = train_from_config(copy.deepcopy(cfg), resume=str(ckpt), pm=foundry_pm)
    resumed, reference = _losses(run_dir), _losses(two_rank_runs / strategy)
    assert sorted(resumed) == [7, 8]
    assert resumed == pytest.approx({7: reference[7], 8: reference[8]}, rel=1e-5, abs=1e-6)


def test_rank_divergent_data_stops_all_ranks_together(two_rank_runs):
    """Rank 0 has 3 micro-batches, rank 1 has 5: both stop after step 3 instead of hanging."""
    r0 = json.loads((two_rank_runs / "skewed_rank0.json").read_text())
    r1 = json.loads((two_rank_runs / "skewed_rank1.json").read_text())
    assert r0["done"] and r1["done"]
    assert r0["logged_steps"] == [1, 2, 3]
    assert (two_rank_runs / "skewed" / "export" / "model.safetensors").is_file()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_bf16_keeps_fp32_masters_under_ddp_and_fsdp2(two_rank_runs, strategy):
    for rank in (0, 1):
        dtypes = json.loads((two_rank_runs / f"bf16_{strategy}_dtypes.rank{rank}.json").read_text())
        assert dtypes == {"params": ["torch.float32"], "optim": ["torch.float32"]}
    ddp, fsdp = _losses(two_rank_runs / "bf16_ddp"), _losses(two_rank_runs / "bf16_fsdp2")
    assert sorted(fsdp) == [1, 2, 3]
    assert fsdp == pytest.approx(ddp, rel=2e-2)  # bf16 autocast in both: same numerics up to reduction order


def test_agent_store_generation_ignores_a_killed_attempts_keys(monkeypatch):
    """torchrun keeps one store across restarts: ranks 1 and 2 get there first and find the killed
    attempt's generation; neither may use it, and all three agree on rank 0's new one."""
    import threading
    from datetime import timedelta

    from foundry_core.distributed import GENERATION_KEY, _fresh_agent_store

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    server.set(GENERATION_KEY, "killed")
    server.set("foundry/process_group/killed/gloo_address", "of a dead rank")
    stores: dict[int, dist.Store] = {}
    threads = [
        threading.Thread(
            target=lambda r=r: stores.__setitem__(r, _fresh_agent_store(r, 3, timedelta(seconds=30)))
        )
        for r in (1, 2)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert not stores  # they wait for this attempt's rank 0 instead of joining the killed attempt
    stores[0] = _fresh_agent_store(0, 3, timedelta(seconds=30))
    for t in threads:
        t.join(timeout=30)
    assert sorted(stores) == [0, 1, 2]
    stores[0].set("gloo_address", "of rank 0 now")
    assert stores[1].get("gloo_address") == stores[2].get("gloo_address") == b"of rank 0 now"
    assert server.get(GENERATION_KEY) != b"killed"


@pytest.mark.slow
def test_torchrun_restart_joins_a_fresh_process_group(tmp_path):
    """``--max-restarts``: the restarted ranks must not read the killed attempt's gloo addresses from
    torchrun's store (before: "connection refused" or a hang in 3 of 4 launches). ~30 s: two attempts."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FOUNDRY_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "--monitor-interval=0.2",
        str(Path(__file__).with_name("dist_restart_worker.py")),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    written = {p.name: p.read_text() for p in tmp_path.glob("attempt*.txt")}
    assert written == {f"attempt{a}_rank{r}.txt": "3.0" for a in (0, 1) for r in (0, 1)}
