"""Meta-World MT10 (a public benchmark we did not write): success per task of one language-conditioned
VLA trained by Foundry on scripted demonstrations for a fixed budget, against the scripted experts.

Baseline (same process, same evaluation seeds): Meta-World's scripted expert policies (the ceiling a
policy imitating them can reach; ~98% on MT10). ratio = VLA success / expert success (higher is better).
Protocol: one camera (corner), 4-D state and action, 500-step cap, ``episodes`` per task, the instruction
in the prompt (``recipes/metaworld_mt10.yaml``, trained from scratch, no pretrained weights).

Published numbers on the same environment and protocol, for context only (arXiv 2506.01844, SmolVLA,
Table "Meta-World", MT50 by difficulty, 10 episodes per task): SmolVLA (0.45B) easy 82.5 / medium 41.8 /
hard 45.0 / very hard 60.0 (average 57.3); pi0 (3.3B) average 47.9. Those policies were trained on a
different, human-collected demonstration set and on all 50 tasks, with GPUs; ours are trained on scripted
demos of the 10 MT10 tasks on CPU, so the comparison is "same environment and protocol, scripted demos",
and the per-difficulty rows below cover only the MT10 tasks of each group.

    uv run python benchmarks/metaworld_mt10.py [--quick] [--device cuda]

Measured full size on 2 CPU cores (2026-12-04, ~37 min): VLA 69/100, experts 98/100, ratio 0.70; easy
88.6%, medium 20%, hard 25% (per task: plugins-example/foundry-metaworld/README.md).

(Not named ``metaworld.py``: run as a script, this folder is first on ``sys.path`` and the file would
shadow the ``metaworld`` package.) Quick mode (~4 min on 2 idle CPU cores): 2 tasks, 4 demos each,
150 training steps, 2 episodes per task capped at 150 control steps (a smoke run of the whole path, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "metaworld_mt10.yaml"
PUBLISHED = {
    "SmolVLA 0.45B (MT50, human demos)": {
        "easy": 82.5,
        "medium": 41.8,
        "hard": 45.0,
        "very_hard": 60.0,
        "average": 57.3,
    },
    "pi0 3.3B (MT50, human demos)": {"average": 47.9},
}


def _sizes(quick: bool) -> dict[str, Any]:
    from foundry_metaworld.catalog import MT10

    if quick:
        return {"tasks": ["metaworld_reach", "metaworld_button_press_topdown"], "demos": 4, "steps": 150,
                "episodes": 2, "image_size": 32, "workers": 1, "max_steps": 150}  # fmt: skip
    return {
        "tasks": list(MT10),
        "demos": 25,
        "steps": 3000,
        "episodes": 10,
        "image_size": 64,
        "workers": 2,
        "max_steps": 500,
    }


def run(quick: bool, device: str = "cpu") -> dict[str, Any]:
    from foundry_core.config import resolve_config
    from foundry_core.train.run import train_from_config
    from foundry_eval.rollout.runner import run_rollouts, success_count
    from foundry_eval.sim.demos import generate_demos
    from foundry_metaworld.catalog import MT50

    size = _sizes(quick)
    tasks, image = size["tasks"], size["image_size"]
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="foundry-metaworld-") as tmp:
        root = Path(tmp)
        store = root / "mt10.zarr"
        start = time.perf_counter()
        for i, task in enumerate(tasks):
            generate_demos({"name": task, "image_size": image}, episodes=size["demos"], out=store,
                           workers=size["workers"], append=i > 0)  # fmt: skip
        timings["demos_s"] = time.perf_counter() - start
        overrides = [
            f"run.out_dir={root / 'run'}", f"run.device={device}", f"train.budget.steps={size['steps']}",
            "train.progress=false", f"data.mix.0.source.path={store}", f"data.mix.0.source.image_size={image}",
            f"model.backbone.encoder.image_size={image}",
        ]  # fmt: skip
        start = time.perf_counter()
        run_dir = train_from_config(resolve_config(RECIPE, overrides))
        timings["train_s"] = time.perf_counter() - start
        nodes = [{"name": t, "image_size": image, "max_steps": size["max_steps"]} for t in tasks]
        rates: dict[str, dict[str, tuple[int, int]]] = {}
        start = time.perf_counter()
        for name, policy in (("expert", "expert"), ("vla", str(run_dir / "export"))):
            paths = run_rollouts(policy, nodes, size["episodes"], root / "eval", model_name=name,
                                 workers=size["workers"], execute_steps=4, device=device, progress=False)  # fmt: skip
            rates[name] = success_count(paths)
        timings["eval_s"] = time.perf_counter() - start

    by_task = {info.task_name: reg for reg, info in MT50.items()}
    rows = []
    for task_name, (s_vla, n) in sorted(rates["vla"].items()):
        s_exp, _ = rates["expert"][task_name]
        info = MT50[by_task[task_name]]
        rows.append(
            {"task": by_task[task_name], "difficulty": info.difficulty, "vla": s_vla, "expert": s_exp, "n": n}
        )
    total_n = sum(r["n"] for r in rows)
    vla_rate = sum(r["vla"] for r in rows) / total_n
    expert_rate = sum(r["expert"] for r in rows) / total_n
    groups: dict[str, float] = {}
    for difficulty in ("easy", "medium", "hard", "very_hard"):
        sel = [r for r in rows if r["difficulty"] == difficulty]
        if sel:
            groups[difficulty] = 100.0 * sum(r["vla"] for r in sel) / sum(r["n"] for r in sel)
    return {
        "name": "metaworld_mt10",
        "metric": "VLA success rate / scripted expert success rate (same seeds)",
        "higher_is_better": True,
        "unit": "success rate",
        "baseline": expert_rate,
        "ours": vla_rate,
        "ratio": vla_rate / expert_rate if expert_rate else 0.0,
        "rows": rows,
        "vla_by_difficulty_percent": groups,
        "published_percent": PUBLISHED,
        "budget": {k: size[k] for k in ("demos", "steps", "episodes", "image_size", "max_steps")},
        "seconds": timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, tiny budget (< 5 min)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = run(args.quick, args.device)
    print(f"{'task':<32} {'difficulty':<10} {'VLA':>7} {'expert':>7}")
    for r in result["rows"]:
        print(f"{r['task']:<32} {r['difficulty']:<10} {r['vla']:>3}/{r['n']:<3} {r['expert']:>3}/{r['n']:<3}")
    print(
        f"all: VLA {100 * result['ours']:.1f}%  expert {100 * result['baseline']:.1f}%  ratio {result['ratio']:.2f}"
    )
    print("VLA by difficulty (MT10 tasks only): "
          + ", ".join(f"{k} {v:.1f}%" for k, v in result["vla_by_difficulty_percent"].items()))  # fmt: skip
    for name, numbers in result["published_percent"].items():
        print(f"published {name}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))
    print(f"budget {result['budget']}; seconds { ({k: round(v) for k, v in result['seconds'].items()}) }")


if __name__ == "__main__":
    main()
