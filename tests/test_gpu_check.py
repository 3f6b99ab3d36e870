"""benchmarks/gpu_check.sh: the dry run (every piece on CPU at tiny size) writes its results; without CUDA
and without --dry-run it refuses with a clear message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_without_cuda_it_says_to_use_the_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(
        [str(SCRIPT), "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "no CUDA device here; run with --dry-run" in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # ~10 min on 2 shared cores: run_all --quick over three benchmarks + the Qwen3-VLA pieces
@pytest.mark.timeout(1800)
def test_dry_run_runs_every_piece_at_tiny_size(tmp_path):
    out = tmp_path / "results_gpu.json"
    proc = subprocess.run(
        [str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True, timeout=1500
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu"
    pieces = report["pieces"]
    assert {k: v["status"] for k, v in pieces.items()} == {
        "run_all": "ok",
        "qwen3vla_policy_latency": "ok",
        "train_qwen3vla_2b": "ok",
    }
    assert {b["module"] for b in pieces["run_all"]["benchmarks"]} == {
        "llm_throughput",
        "policy_latency",
        "robot_loader",
    }
    latency = pieces["qwen3vla_policy_latency"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] and latency["cameras"] == 6
    train = pieces["train_qwen3vla_2b"]
    assert train["steps"] == 2 and train["step_time_s"] > 0 and train["mfu"] > 0
    assert train["settings"] == {
        "precision": "bf16",
        "grad_checkpointing": True,
        "compile": False,
        "strategy": "fsdp2",
    }
