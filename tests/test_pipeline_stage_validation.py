"""``foundry pipeline`` validates every training stage's config (with overrides) before the first stage runs.

Before: a typo in a ``vla.*`` override was found only when the vla stage started, after world, tokenizer,
llm and vlm had run.
"""

from __future__ import annotations

from pathlib import Path

from foundry_core.cli.main import build_cli


def test_a_typo_in_a_late_stage_fails_before_the_first_stage(tmp_path, cli_runner):
    out = tmp_path / "pipeline"
    args = ["pipeline", f"run.out_dir={out}", "vla.train.optim.lrr=1e-3"]
    result = cli_runner.invoke(build_cli(), args)
    assert result.exit_code == 2, result.output
    assert "vla.train.optim.lrr: unknown key; did you mean 'lr'?" in result.output
    assert not out.exists()  # the world stage never started


def test_only_the_stages_asked_for_are_checked(tmp_path):
    from foundry_pipeline.recipe import load_recipe
    from foundry_pipeline.run import Pipeline

    recipe = load_recipe(None, [f"run.out_dir={tmp_path}", "scratch.model.nme=x"])
    Pipeline(recipe).check_stage_configs(["llm"])  # scratch is not run: not checked
    import pytest

    from foundry_core.errors import ConfigError, FoundryError

    with pytest.raises(ConfigError, match=r"scratch\.model"):
        Pipeline(recipe).check_stage_configs(["llm", "scratch"])
    # the optional baseline stage has no section in the default recipe: asking for it says so
    with pytest.raises(FoundryError, match="'baseline' has no section in this recipe"):
        Pipeline(load_recipe(None, [f"run.out_dir={tmp_path}"])).run(stages=["baseline"])
    with pytest.raises(ConfigError, match="eval.policies: 'baseline' is not a policy of this recipe"):
        load_recipe(None, [f"run.out_dir={tmp_path}", "eval.policies=[vla,baseline]"])


def test_the_pipeline_never_replaces_a_folder_it_did_not_write(tmp_path, cli_runner):
    """Stages rewrite their sub-folders: only a new/empty folder, one with our marker, or an old run is used."""
    from foundry_pipeline.run import RUN_MARKER, claim_run_folder

    mine = tmp_path / "data"
    (mine / "world").mkdir(parents=True)
    (mine / "world" / "keep.txt").write_text("months of demonstrations")
    (mine / "notes.txt").write_text("mine")
    result = cli_runner.invoke(build_cli(), ["pipeline", f"run.out_dir={mine}", "--stage", "world"])
    assert result.exit_code == 2, result.output
    assert "not a folder that `foundry pipeline` wrote" in result.output and "notes.txt" in result.output
    assert (mine / "world" / "keep.txt").read_text() == "months of demonstrations"
    assert not (mine / RUN_MARKER).exists()

    old_run = tmp_path / "old"  # only stage folders and the report: a run from before the marker
    (old_run / "world").mkdir(parents=True)
    (old_run / "report.html").write_text("<html></html>")
    claim_run_folder(old_run)
    claim_run_folder(tmp_path / "new")
    assert (old_run / RUN_MARKER).is_file() and (tmp_path / "new" / RUN_MARKER).is_file()
    (tmp_path / "file").write_text("x")
    import pytest

    from foundry_core.errors import FoundryError

    with pytest.raises(FoundryError, match="is a file"):
        claim_run_folder(tmp_path / "file")


def test_parallel_stages_are_validated_without_io(tmp_path):
    import pytest

    from foundry_core.errors import ConfigError
    from foundry_pipeline.recipe import load_recipe

    out = tmp_path / "p"
    assert load_recipe(None, [f"run.out_dir={out}", "run.parallel_stages=[vla,scratch]"]).run.parallel_stages == ["vla", "scratch"]
    with pytest.raises(ConfigError, match=r"'scrach' is not a training stage; did you mean 'scratch'\?"):
        load_recipe(None, [f"run.out_dir={out}", "run.parallel_stages=[vla,scrach]"])
    with pytest.raises(ConfigError, match="not adjacent"):
        load_recipe(None, [f"run.out_dir={out}", "run.parallel_stages=[llm,vla]"])
    with pytest.raises(ConfigError, match=r"'vla' reads 'vlm''s output"):
        load_recipe(None, [f"run.out_dir={out}", "run.parallel_stages=[vlm,vla]"])
    with pytest.raises(ConfigError, match="fewer than two distinct stages"):
        load_recipe(None, [f"run.out_dir={out}", "run.parallel_stages=[vla,vla]"])
    with pytest.raises(ConfigError, match="'baseline' has no section"):
        load_recipe(None, [f"run.out_dir={out}", "run.parallel_stages=[scratch,baseline]"])
    assert not out.exists()


def test_a_failing_side_by_side_stage_stops_the_others_and_names_its_log(tmp_path):
    """The world was never built: both children fail; the error names a log, no stage is marked done."""
    import pytest

    from foundry_core.errors import FoundryError
    from foundry_pipeline.recipe import load_recipe
    from foundry_pipeline.run import Pipeline

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "p"
    recipe = load_recipe(str(root / "recipes" / "pipeline_smoke.yaml"),
                         [f"run.out_dir={out}", "run.parallel_stages=[vla,scratch]"])
    with pytest.raises(FoundryError, match=r"pipeline stage '(vla|scratch)': `foundry train` exited with code [1-9]") as err:
        Pipeline(recipe).run(stages=["vla", "scratch"])
    assert "train.log" in str(err.value) and "demos.zarr: not a Zarr v3 episode store" in str(err.value)  # its log
    for stage in ("vla", "scratch"):
        assert (out / stage / "train.log").is_file() and (out / stage / "pipeline_stage.yaml").is_file()
        assert not (out / stage / "DONE.json").exists()


def test_a_side_by_side_group_starts_at_its_first_stage_that_is_not_done(tmp_path, monkeypatch):
    import json

    from foundry_pipeline import parallel
    from foundry_pipeline.recipe import load_recipe
    from foundry_pipeline.run import Pipeline

    recipe = load_recipe(None, [f"run.out_dir={tmp_path / 'p'}"])  # the default recipe: [vla, scratch]
    ran: list = []

    def side_by_side(pipeline, group):
        ran.append(tuple(group))
        return {g: {"seconds": 0.0} for g in group}

    monkeypatch.setattr(parallel, "run_side_by_side", side_by_side)
    pipeline = Pipeline(recipe)
    for name in pipeline.steps:
        pipeline.steps[name] = lambda d, name=name: ran.append(name) or {}
    pipeline.run(stages=["vla", "scratch"])
    assert ran == [("vla", "scratch")]
    ran.clear()
    (tmp_path / "p" / "vla").mkdir(parents=True, exist_ok=True)
    (tmp_path / "p" / "vla" / "DONE.json").write_text(json.dumps({"seconds": 1.0}))
    pipeline.run(stages=["vla", "scratch"])  # vla done, scratch not: scratch alone, in this process
    assert ran == ["scratch"]
