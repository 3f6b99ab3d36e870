"""Policy latency: ms per action chunk (p50/p95) for flow matching (8 Euler steps) vs diffusion (DDIM 10).

Both policies share one small VLA shape: a tiny conv backbone (foundry_action.tiny_backbone, no
foundry-vision needed), 2 cameras x 2 image offsets at 64x64, 20-D proprio/actions, an action window of 16
(past 1 + anchor + future 14) and a ``small`` expert (width 96, 8 layers). Each call is the full
``Policy.act``: validation, normalization, backbone once, K expert passes, unnormalization.
Baseline: the diffusion policy (DDIM 10 steps), measured in the same process.
ratio = flow p50 / diffusion p50 (lower is better; about 8/10 expected, as the expert dominates). Memory: peak RSS of the process and, on CUDA,
``torch.cuda.max_memory_allocated`` per policy.

    uv run python benchmarks/policy_latency.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

EXPERTS = {
    "flow_matching (8 Euler)": {"name": "flow_matching", "preset": "small", "inference_steps": 8},
    "diffusion (DDIM 10)": {"name": "diffusion", "preset": "small", "sampler": "ddim", "inference_steps": 10},
}


def _registry() -> Any:
    import foundry_action.plugin
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import collect

    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(pm)
    return collect(pm)


def measure(expert: dict[str, Any], store: Path, device: str, repeats: int) -> dict[str, float]:
    from foundry_action.policy import Policy, chunk_latency_ms
    from foundry_action.store import open_store
    from foundry_core.registry import BuildContext

    registry = _registry()
    node = {
        "name": "vla",
        "backbone": {"name": "tiny_test", "width": 64, "grid": 4},
        "expert": expert,
        "data": {"name": "zarr_episodes", "path": str(store), "past": 1, "future": 14, "image_offsets": [-1, 0]},
    }
    torch.manual_seed(0)
    model = registry.build("model", node, BuildContext(registry, device=device))
    policy = Policy(model, checkpoint="benchmark", device=device)
    ep = open_store(store).episode(0)
    obs = {"images": {c: ep[f"camera/{c}"][0] for c in ("scene", "wrist")}, "proprio": ep["proprio"][0],
           "instruction": "do thing number 0"}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    chunk_latency_ms(policy, obs, 3)  # warm-up
    times = np.array(chunk_latency_ms(policy, obs, repeats))
    out = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if device.startswith("cuda"):
        out["cuda_max_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run(quick: bool, device: str = "cpu", threads: int = 1) -> dict[str, Any]:
    from foundry_action.testing import make_tiny_store

    torch.set_num_threads(threads)  # small models: one CPU thread is fastest and stable on shared cores
    repeats = 10 if quick else 50
    with tempfile.TemporaryDirectory() as tmp:
        store = make_tiny_store(Path(tmp) / "bench.zarr", lengths=(20,), image_size=64, dim=20)
        results = {label: measure(expert, store, device, repeats) for label, expert in EXPERTS.items()}
    flow, diff = results["flow_matching (8 Euler)"], results["diffusion (DDIM 10)"]
    return {
        "name": "policy_latency",
        "metric": "flow matching (8 steps) p50 / diffusion (DDIM 10) p50 latency",
        "higher_is_better": False,
        "unit": "ms per action chunk (p50)",
        "device": device,
        "baseline": diff["p50_ms"],
        "ours": flow["p50_ms"],
        "ratio": flow["p50_ms"] / diff["p50_ms"],
        "threads": threads,
        "results": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 timed calls per policy instead of 50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: fastest for models this small, no oversubscription on shared cores)")
    args = parser.parse_args()
    r = run(args.quick, args.device, args.threads)
    print(f"policy latency on {r['device']} (peak RSS {r['peak_rss_mb']:.0f} MB)")
    print(f"{'policy':<26}{'p50 ms':>9}{'p95 ms':>9}{'params M':>10}{'CUDA MB':>9}")
    for label, m in r["results"].items():
        cuda = f"{m['cuda_max_alloc_mb']:.0f}" if "cuda_max_alloc_mb" in m else "-"
        print(f"{label:<26}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}{m['params_m']:>10.2f}{cuda:>9}")
    print(f"ratio flow/diffusion (p50): {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
