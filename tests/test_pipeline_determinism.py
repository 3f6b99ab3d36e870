"""The main job gives the same numbers when it is run again (same machine): world, weights, episodes.

Thread counts are pinned by the recipe (``run.threads``, ``eval.threads``), so this also holds on a
machine with another core count and the same CPU instruction set (see the README).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_pipeline_repeats_exactly(tmp_path):
    from foundry_pipeline.recipe import load_recipe
    from foundry_pipeline.run import run_pipeline

    runs = []
    for name in ("a", "b"):
        recipe = load_recipe(str(ROOT / "recipes" / "pipeline_smoke.yaml"), [f"run.out_dir={tmp_path / name}"])
        run_pipeline(recipe)
        runs.append(tmp_path / name)
    a, b = runs
    for stage in ("llm", "vlm", "vla", "scratch", "baseline"):
        assert _digest(a / stage / "export" / "model.safetensors") == _digest(b / stage / "export" / "model.safetensors"), stage
    assert _digest(a / "world" / "demos.zarr" / "zarr.json") == _digest(b / "world" / "demos.zarr" / "zarr.json")
    sa, sb = (json.loads((r / "report" / "summary.json").read_text()) for r in runs)
    assert sa["success"] == sb["success"] and sa["grounding"] == sb["grounding"] and sa["decisions"] == sb["decisions"]
    assert sa["end_state"] == sb["end_state"]
    episodes = [
        sorted(
            (e["scenario_index"], e["is_success"], e["total_time"], json.dumps(e.get("metrics"), sort_keys=True))
            for f in sorted((r / "eval" / "results").rglob("results.json"))
            for e in json.loads(f.read_text())["evaluations"]
        )
        for r in runs
    ]
    assert episodes[0] == episodes[1] and len(episodes[0]) > 0
