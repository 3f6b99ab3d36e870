"""The checkpoint trust boundary: manifests verified before anything is read, and no code from a checkpoint.

Before: torch's DCP reader unpickled ``.metadata`` (and non-tensor items) freely, so a crafted
checkpoint ran code on ``--resume``; a corrupted shard or a manifest-less copy was loaded as is.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from foundry_core.errors import FoundryError
from foundry_core.testing import TOY_MODEL, TOY_SOURCE, run_config
from foundry_core.train import checkpoint as ckpt_mod
from foundry_core.train.checkpoint_integrity import (
    MANIFEST,
    UntrustedCheckpointError,
    verify_checkpoint,
    write_manifest,
)
from foundry_core.train.metrics import read_metrics
from foundry_core.train.run import train_from_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def make_config(out: Path, steps: int = 4, **train) -> dict:
    return run_config(
        out,
        model={**TOY_MODEL, "width": 16},
        source={**TOY_SOURCE, "num_samples": 64},
        steps=steps,
        batch=4,
        run={"seed": 2},
        train={"checkpoint": {"every_steps": 2, "keep_last": 5}, **train},
    )


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory,
) -> Path:
    """One finished 4-step run (checkpoints at steps 2 and 4) that tests copy and tamper with."""
    from foundry_core.plugins import make_plugin_manager

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trusted") / "run"
    train_from_config(make_config(out), pm=make_plugin_manager(entry_points_enabled=False))
    return out


def _copy_step(trained: Path, tmp_path: Path, step: int = 2) -> Path:
    dst = tmp_path / f"step_{step:08d}"
    shutil.copytree(trained / "checkpoints" / f"step_{step:08d}", dst)
    return dst


class _RunsCode:
    """What an attacker pickles: unpickling it creates ``marker`` (stands in for any shell command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_metadata_payload(folder: Path, marker: Path) -> None:
    """Replace ``.metadata`` with a pickle that runs code when torch's own reader loads it."""
    (folder / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))


def test_every_checkpoint_has_a_manifest_that_verifies(trained):
    for step in (2, 4):
        folder = trained / "checkpoints" / f"step_{step:08d}"
        manifest = json.loads((folder / MANIFEST).read_text())
        names = set(manifest["files"])
        assert {".metadata", "meta.json", "rank_00000.pt"} <= names and MANIFEST not in names
        assert verify_checkpoint(folder) is True


def test_crafted_metadata_is_refused_and_runs_no_code(trained, tmp_path, foundry_pm):
    """Before: ``--resume`` on this folder executed the payload. Now: refused, and the payload never runs,
    even when the attacker also rewrote the manifest, or the user passed --trust-checkpoint."""
    folder = _copy_step(trained, tmp_path)
    marker = tmp_path / "pwned"
    _plant_metadata_payload(folder, marker)
    cfg = make_config(tmp_path / "run")
    with pytest.raises(UntrustedCheckpointError, match=r"\.metadata: checksum mismatch"):
        train_from_config(cfg, resume=str(folder), pm=foundry_pm)
    write_manifest(folder)  # whoever can write the folder can write a matching manifest
    with pytest.raises(FoundryError, match=r"refused to load pathlib.*touch|refused to load"):
        train_from_config(cfg, resume=str(folder), pm=foundry_pm)
    (folder / MANIFEST).unlink()
    with pytest.raises(FoundryError, match="refused to load"):
        train_from_config(cfg, resume=str(folder), pm=foundry_pm, trust_checkpoint=True)
    assert not marker.exists()


def test_pickled_objects_inside_shards_are_not_executed(tmp_path, foundry_pm, trained):
    """DCP's default planner reads non-tensor items with ``weights_only=False``: a second way in."""
    import torch.distributed.checkpoint as dcp

    marker = tmp_path / "pwned"
    folder = _copy_step(trained, tmp_path)
    for f in folder.glob("*.distcp"):
        f.unlink()
    (folder / ".metadata").unlink()
    from foundry_core.train.checkpoint_integrity import stored_shapes

    state = torch.load(folder / "rank_00000.pt", weights_only=True)
    assert state["train"]["step"] == 2
    sd = {"model": {}, "optim": {"param_groups": [{"lr": _RunsCode(marker)}]}}
    dcp.save(sd, checkpoint_id=str(folder), no_dist=True)
    write_manifest(folder)
    assert stored_shapes(folder)  # the metadata itself is plain
    with pytest.raises(FoundryError):
        train_from_config(make_config(tmp_path / "run"), resume=str(folder), pm=foundry_pm)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "add_file"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(trained, tmp_path, foundry_pm, damage):
    folder = _copy_step(trained, tmp_path)
    shard = next(folder.glob("*.distcp"))
    if damage == "flip_byte":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        needle = f"{shard.name}: checksum mismatch"
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
        needle = f"{shard.name}: checksum mismatch"
    elif damage == "delete":
        shard.unlink()
        needle = f"{shard.name}: listed in manifest.json but missing"
    else:
        (folder / "rank_00001.pt").write_bytes(b"x")
        needle = "files not in its manifest: rank_00001.pt"
    with pytest.raises(UntrustedCheckpointError, match=needle.replace(".", r"\.")):
        train_from_config(make_config(tmp_path / "run"), resume=str(folder), pm=foundry_pm)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained from it


def test_a_checkpoint_without_manifest_needs_trust_checkpoint(
    trained, tmp_path, foundry_pm, cli_runner, caplog
):
    import yaml

    from foundry_core.cli.main import build_cli

    folder = _copy_step(trained, tmp_path)
    (folder / MANIFEST).unlink()
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path / "run")))
    cli = build_cli(lambda: foundry_pm)
    refused = cli_runner.invoke(cli, ["train", str(path), "--resume", str(folder)])
    assert refused.exit_code == 2 and "has no checksum manifest" in refused.output
    assert "--trust-checkpoint" in refused.output
    ok = cli_runner.invoke(cli, ["train", str(path), "--resume", str(folder), "--trust-checkpoint"])
    assert ok.exit_code == 0, ok.output
    assert "loading it because --trust-checkpoint was given" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [3, 4]
    assert verify_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000004")


def test_remote_resume_verifies_the_manifest(trained, tmp_path, foundry_pm):
    """A remote copy is downloaded, then verified like any folder: a tampered upload is refused."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/trust-{os.getpid()}"
    from foundry_core.train.remote import upload_dir

    upload_dir(fs, trained / "checkpoints" / "step_00000002", f"{root}/checkpoints/step_00000002")
    url = f"memory://{root}"
    out = train_from_config(make_config(tmp_path / "ok"), resume=url, pm=foundry_pm)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [3, 4]

    fs.pipe(f"{root}/checkpoints/step_00000002/rank_00000.pt", b"tampered")
    with pytest.raises(UntrustedCheckpointError, match="rank_00000.pt: checksum mismatch"):
        train_from_config(make_config(tmp_path / "bad"), resume=url, pm=foundry_pm)
    fs.rm(f"{root}/checkpoints/step_00000002/{MANIFEST}")
    with pytest.raises(UntrustedCheckpointError, match="has no checksum manifest"):
        train_from_config(make_config(tmp_path / "bad2"), resume=url, pm=foundry_pm)
    fs.rm(root, recursive=True)


def test_verification_happens_before_meta_json_is_read(trained, tmp_path, monkeypatch, foundry_pm):
    folder = _copy_step(trained, tmp_path)
    (folder / "meta.json").write_text("{not json")
    seen = []
    monkeypatch.setattr(ckpt_mod, "read_meta", lambda p: seen.append(p) or {})
    with pytest.raises(UntrustedCheckpointError, match="meta.json: checksum mismatch"):
        train_from_config(make_config(tmp_path / "run"), resume=str(folder), pm=foundry_pm)
    assert seen == []
