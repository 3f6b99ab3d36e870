"""``foundry export CHECKPOINT``: a checkpoint alone becomes the export training writes at its end.

A tiny VLA (EMA on) trains 2 steps; its final checkpoint is exported by the command and served by the
policy runtime: the same actions as the training-end export of that step. Bad input exits 2 naming it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from foundry_action.policy import Policy
from foundry_action.tiny_backbone import register_tiny_backbone
from foundry_core.cli.main import build_cli
from foundry_core.registry import collect


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, plugin manager, store) of a 2-step tiny VLA run with EMA."""
    import foundry_action.plugin
    from foundry_action.testing import make_tiny_store
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.train.run import train_from_config

    tmp = tmp_path_factory.mktemp("export_ckpt")
    store = make_tiny_store(tmp / "store.zarr", lengths=(12, 14))
    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(pm)
    robot = {"name": "zarr_episodes", "path": str(store), "past": 1, "future": 3, "image_offsets": [-1, 0]}
    raw = {
        "run": {"name": "vla_export", "out_dir": str(tmp / "run"), "device": "cpu"},
        "model": {
            "name": "vla",
            "backbone": {"name": "tiny_test", "width": 16},
            "expert": {"name": "flow_matching", "preset": "debug"},
        },
        "data": {"mix": [{"source": robot}]},
        "train": {
            "budget": {"steps": 2},
            "batch": {"global": 4, "per_device": 4},
            "optim": {"name": "adamw", "lr": 1.0e-2},
            "ema": {"decay": 0.5},
            "progress": False,
        },
    }
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = train_from_config(raw, pm=pm)
    finally:
        torch.set_num_threads(old)
    return run_dir, pm, store


def _export(pm, cli_runner, *args: str):
    return cli_runner.invoke(build_cli(lambda: pm), ["export", *args])


def _actions(export, pm, store) -> np.ndarray:
    from foundry_action.store import open_store

    policy = Policy.from_pretrained(export, registry=collect(pm))
    policy.reset(seed=3)
    ep = open_store(store).episode(0)
    obs = {
        "images": {c: ep[f"camera/{c}"][2] for c in ("scene", "wrist")},
        "proprio": ep["proprio"][2],
        "instruction": "do thing number 0",
    }
    return policy.act(obs)


def test_export_of_the_last_checkpoint_acts_like_the_training_export(trained, cli_runner, tmp_path):
    run_dir, pm, store = trained
    checkpoint = run_dir / "checkpoints" / "step_00000002"
    assert (checkpoint / "model" / "policy.json").is_file() and (checkpoint / "model" / "stats").is_dir()
    result = _export(pm, cli_runner, str(checkpoint), "--out", str(tmp_path / "from_ckpt"))
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "from_ckpt" / "foundry_export.json").read_text())
    assert meta["step"] == 2 and meta["ema"] is True and meta["checkpoint"] == str(checkpoint)
    from safetensors.torch import load_file

    ours, theirs = (
        load_file(tmp_path / "from_ckpt" / "model.safetensors"),
        load_file(run_dir / "export" / "model.safetensors"),
    )
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    expected = _actions(run_dir / "export", pm, store)
    np.testing.assert_array_equal(_actions(tmp_path / "from_ckpt", pm, store), expected)

    # a run folder means its newest checkpoint; the default --out is <run>/exports/step_XXXXXXXX
    assert _export(pm, cli_runner, str(run_dir)).exit_code == 0
    np.testing.assert_array_equal(_actions(run_dir / "exports" / "step_00000002", pm, store), expected)
    assert _export(pm, cli_runner, str(run_dir)).exit_code == 0  # an export is replaced


def test_an_older_checkpoint_without_model_files_is_rebuilt_from_its_run_config(
    trained, cli_runner, tmp_path
):
    run_dir, pm, store = trained
    old = shutil.copytree(run_dir / "checkpoints" / "step_00000002", tmp_path / "step_00000002")
    shutil.rmtree(old / "model")
    (old / "manifest.json").unlink()  # as written before manifests and model/ files existed
    meta = json.loads((old / "meta.json").read_text())  # and with the robot source named in model.data
    meta["config"]["model"]["data"] = meta["config"]["data"]["mix"][0]["source"]
    (old / "meta.json").write_text(json.dumps(meta))
    result = _export(pm, cli_runner, str(old), "--out", str(tmp_path / "out"), "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        _actions(tmp_path / "out", pm, store), _actions(run_dir / "export", pm, store)
    )


def test_a_checkpoint_written_before_the_window_rename_still_exports(trained, cli_runner, tmp_path):
    """Checkpoints from before issue 19 call the expert's window ``horizon``: read under the new name."""
    import yaml

    run_dir, pm, store = trained
    old = shutil.copytree(run_dir / "checkpoints" / "step_00000002", tmp_path / "step_00000002")
    cfg_path = old / "model" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    expert = cfg["model"]["expert"]
    expert["horizon"] = expert.pop("window")
    cfg_path.write_text(yaml.safe_dump(cfg))
    (old / "manifest.json").unlink()  # the edit would not verify; trusted explicitly below
    result = _export(pm, cli_runner, str(old), "--out", str(tmp_path / "out"), "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["model"]["expert"]
    assert "window" in written and "horizon" not in written
    np.testing.assert_array_equal(
        _actions(tmp_path / "out", pm, store), _actions(run_dir / "export", pm, store)
    )


def test_bad_input_exits_2_naming_it(trained, cli_runner, tmp_path):
    run_dir, pm, _ = trained
    missing = _export(pm, cli_runner, str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert missing.exit_code == 2 and "no such checkpoint or run folder" in missing.output

    empty = tmp_path / "empty"
    empty.mkdir()
    incomplete = _export(pm, cli_runner, str(empty), "--out", str(tmp_path / "o"))
    assert incomplete.exit_code == 2 and "no complete checkpoint" in incomplete.output

    unverified = shutil.copytree(
        run_dir / "checkpoints" / "step_00000002", tmp_path / "copy" / "step_00000002"
    )
    (unverified / "manifest.json").unlink()
    no_manifest = _export(pm, cli_runner, str(unverified), "--out", str(tmp_path / "o"))
    assert no_manifest.exit_code == 2 and "no checksum manifest" in no_manifest.output
    assert "--trust-checkpoint" in no_manifest.output and not (tmp_path / "o").exists()

    tampered = shutil.copytree(run_dir / "checkpoints" / "step_00000002", tmp_path / "t" / "step_00000002")
    (tampered / "model" / "policy.json").write_text("{}")
    mismatch = _export(pm, cli_runner, str(tampered), "--out", str(tmp_path / "o"), "--trust-checkpoint")
    assert mismatch.exit_code == 2 and "checksum mismatch" in mismatch.output

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = _export(pm, cli_runner, str(run_dir), "--out", str(mine))
    assert refused.exit_code == 2 and "is not an export" in refused.output
    assert (mine / "notes.txt").read_text() == "keep me"

    no_run = _export(pm, cli_runner, str(unverified), "--trust-checkpoint")  # outside a checkpoints/ folder
    assert no_run.exit_code == 2 and "give --out" in no_run.output
