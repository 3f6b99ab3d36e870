"""The GPU check behind ``benchmarks/gpu_check.sh``: every GPU measurement the paper's models need, in one
command, written to ``benchmarks/results_gpu.json``.

Pieces (each timed, each failure recorded, never fatal to the others; exit 1 if one failed):

1. ``run_all``: ``run_all.py --gpu`` over ``llm_throughput`` (the ~1B shape first: bf16 MFU against the
   trainer's peak table, ours vs HF Llama), ``policy_latency`` and ``robot_loader``.
2. ``qwen3vla_policy_latency``: ``Policy.act`` of a Qwen3-VL-2B-shaped VLA (random init: a config-only
   folder from ``foundry_vision.tiny_hf.write_qwen3_vl_2b_shaped``) + the paper's expert (24 layers,
   width 1024, 8 Euler steps) on the LBM layout (6 cameras x 2 image steps at 224²): ms per chunk p50/p99.
3. ``train_qwen3vla_2b``: 20 steps of ``recipes/paper/foundry_qwen3vla_2b.yaml`` as written (bf16, FSDP2,
   activation checkpointing, compile) on the random-init folder and a synthetic LBM-layout store, per-GPU
   batch 8: step time (median after 5 warm-up steps), samples/s/GPU, MFU, peak memory, and the
   trainer's data share (the LBM-layout loader with the recipe's workers: the robot-loader data share).

``--dry-run`` runs every piece on CPU at tiny size (``recipes/paper/tiny.yaml``, a tiny random Qwen3-VL,
the ``debug`` expert, ``run_all --quick``), to keep this script working where there is no GPU; it writes
``benchmarks/results_gpu_dry_run.json`` unless ``--out`` says otherwise. Tested by
``tests/test_gpu_check.py``.

    benchmarks/gpu_check.sh [--dry-run] [--out FILE] [--steps N] [--only PIECE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE = ROOT / "recipes" / "paper" / "foundry_qwen3vla_2b.yaml"
TINY = ROOT / "recipes" / "paper" / "tiny.yaml"
HF_FOLDER = Path("models") / "Qwen3-VL-2B-Instruct"  # where the recipe looks, relative to the work dir
RUN_ALL_PIECES = ("llm_throughput", "policy_latency", "robot_loader")
PIECES = ("run_all", "qwen3vla_policy_latency", "train_qwen3vla_2b")


def prepare_workdir(work: Path, dry_run: bool) -> None:
    """The recipe's inputs under ``work``: the Qwen3-VL folder (random init) and an LBM-layout store."""
    from foundry_action.testing import make_lbm_store
    from foundry_vision.tiny_hf import build_tiny_hf_vlm, write_qwen3_vl_2b_shaped

    if dry_run:
        build_tiny_hf_vlm("qwen3_vl", work / HF_FOLDER, layers=4, image_size=224)
        make_lbm_store(work / "data" / "lbm.zarr", lengths=(24, 30), image_size=32)
    else:
        write_qwen3_vl_2b_shaped(work / HF_FOLDER)
        make_lbm_store(work / "data" / "lbm.zarr", lengths=(120, 120, 120, 120), image_size=224)


def piece_run_all(dry_run: bool, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import run_all

    out = work / "run_all.json"
    args = ["--only", *RUN_ALL_PIECES, "--out", str(out), "--timeout", "600" if dry_run else "240"]
    args += ["--quick"] if dry_run else ["--gpu"]
    code = run_all.main(args)
    results = json.loads(out.read_text())
    if code != 0:
        raise RuntimeError(f"run_all exited {code}: {json.dumps(results, default=str)[:2000]}")
    return results


def _recipe(dry_run: bool, steps: int) -> dict[str, Any]:
    from foundry_core.config import resolve_config

    overrides = [f"train.budget={{steps: {steps}}}", "train.log_every=1", "train.progress=false"]
    if dry_run:
        sets = yaml.safe_load(TINY.read_text())
        overrides = list(sets["common"]) + list(sets["foundry_qwen3vla_2b"]) + overrides
    else:
        overrides += ["run.device=cuda", "train.batch={global: 8, per_device: 8}"]
    return resolve_config(RECIPE, overrides)


def piece_policy_latency(dry_run: bool, device: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from foundry_action.policy import Policy, chunk_latency_ms
    from foundry_core.plugins import get_registry
    from foundry_core.registry import BuildContext

    registry = get_registry()
    torch.manual_seed(0)
    model = registry.build("model", _recipe(dry_run, steps=1)["model"], BuildContext(registry, device=device))
    policy = Policy(model, checkpoint="random init", device=device)
    spec = model.spec
    size = tuple(int(x) for x in spec["image_size"])
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for c in spec["cameras"]},
        "proprio": np.zeros(int(spec["proprio_dim"]), np.float32),
        "instruction": "put the cup on the plate",
    }
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # on the GPU the policy runs as it trains: bf16 autocast over fp32 weights
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        chunk_latency_ms(policy, obs, 3)  # warm-up (fills the observation history, first kernels)
        times = np.array(chunk_latency_ms(policy, obs, 5 if dry_run else 50))
    out = {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "calls": len(times),
        "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "cameras": len(spec["cameras"]),
        "image_offsets": spec["image_offsets"],
        "image_size": list(size),
        "inference_steps": model.expert.cfg.inference_steps,
        "dtype": "bf16 autocast" if cuda else "fp32",
    }
    if cuda:
        out["cuda_max_alloc_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def piece_train(dry_run: bool, steps: int, work: Path) -> dict[str, Any]:
    import torch

    from foundry_core.train.run import train_from_config

    raw = _recipe(dry_run, steps)
    raw["run"]["out_dir"] = str(work / "runs" / "foundry_qwen3vla_2b")
    cuda = raw["run"]["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run_dir = train_from_config(raw)
    rows = [
        r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "step_time" in r
    ]
    warm = rows[5:] if len(rows) > 5 else rows[-1:]
    per_device = int(raw["train"]["batch"]["per_device"])
    step = statistics.median(r["step_time"] for r in warm)
    out = {
        "steps": len(rows),
        "step_time_s": step,
        "samples_per_s_per_gpu": per_device / step,
        "mfu": statistics.median(r.get("mfu", 0.0) for r in warm),
        "data_wait_share": statistics.median(r.get("data_wait_share", 0.0) for r in warm),
        "loader_workers": raw["data"]["mix"][0]["source"].get("num_workers", 0),
        "first_step_time_s": rows[0]["step_time"],
        "per_device_batch": per_device,
        "settings": {k: raw["train"][k] for k in ("precision", "grad_checkpointing", "compile")}
        | {"strategy": raw["distributed"]["strategy"]},
    }
    if cuda:
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every piece on CPU at tiny size")
    parser.add_argument(
        "--out",
        default=None,
        help="results file (default benchmarks/results_gpu.json, "
        "benchmarks/results_gpu_dry_run.json with --dry-run)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default 20; 2 with --dry-run)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=PIECES, default=list(PIECES), help="run only these pieces"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; run with --dry-run to check the script on CPU", file=sys.stderr
        )
        return 2
    device = "cpu" if args.dry_run else "cuda"
    steps = args.steps or (2 if args.dry_run else 20)
    out_path = Path(args.out or HERE / ("results_gpu_dry_run.json" if args.dry_run else "results_gpu.json"))
    started = time.perf_counter()
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pieces": {},
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="foundry_gpu_check_") as tmp:
        work = Path(tmp)
        old_cwd = Path.cwd()
        os.chdir(work)  # the recipe's relative paths (models/, data/, runs/) resolve here
        try:
            prepare_workdir(work, args.dry_run)
            pieces = {
                "run_all": lambda: piece_run_all(args.dry_run, work),
                "qwen3vla_policy_latency": lambda: piece_policy_latency(args.dry_run, device),
                "train_qwen3vla_2b": lambda: piece_train(args.dry_run, steps, work),
            }
            for name, fn in pieces.items():
                if name not in args.only:
                    continue
                t0 = time.perf_counter()
                try:
                    result: dict[str, Any] = {"status": "ok", **fn()}
                except Exception as exc:  # noqa: BLE001 - recorded, the other pieces still run
                    ok = False
                    result = {
                        "status": "error",
                        "reason": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                result["seconds"] = round(time.perf_counter() - t0, 1)
                report["pieces"][name] = result
                print(f"gpu_check: {name}: {result['status']} ({result['seconds']} s)", flush=True)
        finally:
            os.chdir(old_cwd)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out_path.write_text(json.dumps(report, indent=2, default=str))
    print(f"gpu_check: wrote {out_path} ({report['seconds']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
