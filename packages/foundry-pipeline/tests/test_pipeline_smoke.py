"""End to end: the reduced pipeline recipe runs every stage and the report's artifacts are real.

This is the default suite's cross-package test of the main job (LLM → VLM → VLA → eval → STEP → report).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pipeline_out(tmp_path_factory):
    from foundry_pipeline.recipe import load_recipe
    from foundry_pipeline.run import run_pipeline

    out = tmp_path_factory.mktemp("pipeline")
    recipe = load_recipe(str(ROOT / "recipes" / "pipeline_smoke.yaml"), [f"run.out_dir={out}"])
    summary = run_pipeline(recipe)
    return out, summary, recipe


def test_every_stage_done_and_resumable(pipeline_out):
    from foundry_pipeline.run import run_pipeline

    out, summary, recipe = pipeline_out
    assert list(summary) == ["world", "tokenizer", "llm", "vlm", "vla", "scratch", "baseline", "eval", "report"]
    for stage in summary:
        assert (out / stage / "DONE.json").is_file()
    again = run_pipeline(recipe)  # nothing is redone: the markers are read back
    assert again == {k: json.loads((out / k / "DONE.json").read_text()) for k in summary}


def test_training_stages_exported_and_chained(pipeline_out):
    out, summary, _ = pipeline_out
    for stage in ("llm", "vlm", "vla", "scratch", "baseline"):
        assert (out / stage / "export" / "model.safetensors").stat().st_size > 10_000
        assert (out / stage / "loss.png").stat().st_size > 2_000
        assert summary[stage]["final_loss"] == summary[stage]["final_loss"]  # finite, not NaN
    vlm_cfg = (out / "vlm" / "config.resolved.yaml").read_text()
    assert str(out / "llm" / "export") in vlm_cfg
    assert str(out / "vlm" / "export") in (out / "vla" / "config.resolved.yaml").read_text()
    # the from-scratch VLA: the VLA's architecture with fresh weights (trained on the same data)
    scratch_cfg = (out / "scratch" / "config.resolved.yaml").read_text()
    assert "init: random" in scratch_cfg and str(out / "vlm" / "export") in scratch_cfg


def test_eval_results_in_reference_layout(pipeline_out):
    out, summary, recipe = pipeline_out
    files = sorted((out / "eval" / "results").glob("*/*/rollouts/*/results.json"))
    models = {f.relative_to(out / "eval" / "results").parts[0] for f in files}
    assert models == {"vla", "scratch", "baseline", "random"}
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["max_sample_size_per_model"] == recipe.eval.episodes
        assert len(doc["evaluations"]) == recipe.eval.episodes


def test_report_has_every_artifact(pipeline_out):
    out, summary, recipe = pipeline_out
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 4 + 1 + 1  # loss curves, caption image(s), violins
    assert "data:image/gif;base64," in report  # rollout videos
    for word in ("Closed-loop success", "Does the VLM look?", "text-only LLM", "chance (random caption)",
                 "Pairwise sequential tests", "Training loss", "trained from scratch"):
        assert word in report
    for model in ("vla", "scratch", "baseline", "random"):
        assert f"<td>{model}</td>" in report
    assert summary["report"]["decisions"], "no STEP decisions recorded"
    written = json.loads((out / "report" / "summary.json").read_text())
    g = written["grounding"]
    assert g["images"] == 8 and 0.0 <= g["vlm"]["accuracy"] <= 1.0 and "text_only_llm" in g
    assert set(written["success"]["ReachTarget"]) == {"vla", "scratch", "baseline", "random"}
    # where the policies ended: every episode measured, the named disk compared with the other one
    end = written["end_state"]
    assert set(end) == {"ReachTarget", "PushToTarget"} and "Where the policies ended" in report
    for policy, s in end["ReachTarget"].items():
        assert s["measured"] == s["n"] == recipe.eval.episodes and s["metrics_failed"] == 0
        assert 0 <= s["nearer_named"] <= s["compared"] == s["n"] and s["success_distance"] == 0.03
        assert s["successes"] == written["success"]["ReachTarget"][policy]["successes"]


def test_world_has_held_out_caption_scenes_and_a_distractor(pipeline_out):
    from foundry_action.store import open_store
    from foundry_pipeline.grounding import read_heldout

    out, _, _ = pipeline_out
    held = read_heldout(out / "world" / "captions_heldout")
    assert len(held.images) == 8 and all(1 <= len(lay) <= 3 for lay in held.layouts)
    store = open_store(out / "world" / "demos.zarr")
    instructions = [t for m in store.all_meta() if m["task"] == "reach_target" for t in m["instructions"]]
    assert instructions and all(("yellow" in t) != ("blue" in t) for t in instructions)  # one named goal colour
