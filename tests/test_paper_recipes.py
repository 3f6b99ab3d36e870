"""The paper recipes (recipes/paper/) cannot rot: each runs 2 steps on CPU with the tiny override set
(recipes/paper/tiny.yaml), chained LLM -> VLM -> VLA through the exports exactly as the recipes name
them, plus the Qwen3-VL VLA on a tiny random Qwen3-VL folder; and their bad inputs fail clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from foundry_core.config import resolve_config
from foundry_core.errors import ConfigError

pytest.importorskip("foundry_vision")
pytest.importorskip("foundry_action")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAPER = Path(__file__).resolve().parents[1] / "recipes" / "paper"
CHAIN = ("foundry_llm_1b", "foundry_vlm_1b3", "foundry_vla_1b7", "foundry_qwen3vla_2b")


def tiny_overrides(name: str) -> list[str]:
    sets = yaml.safe_load((PAPER / "tiny.yaml").read_text())
    return list(sets["common"]) + list(sets[name])


def prepare_workdir(root: Path) -> None:
    """What the recipes expect under the working directory: the LBM store and the Qwen3-VL folder."""
    from foundry_action.testing import make_lbm_store
    from foundry_vision.tiny_hf import build_tiny_hf_vlm

    make_lbm_store(root / "data" / "lbm.zarr")
    build_tiny_hf_vlm("qwen3_vl", root / "models" / "Qwen3-VL-2B-Instruct", layers=4, image_size=224)


def test_recipes_keep_the_paper_settings():
    for name in CHAIN:
        raw = resolve_config(PAPER / f"{name}.yaml")
        t = raw["train"]
        assert (t["precision"], t["grad_checkpointing"], t["compile"]) == ("bf16", True, True), name
        assert raw["distributed"]["strategy"] == "fsdp2" and t["batch"] == {"global": 512, "per_device": 8}, (
            name
        )
    for name in ("foundry_vla_1b7", "foundry_qwen3vla_2b"):
        raw = resolve_config(PAPER / f"{name}.yaml")
        data = raw["data"]["mix"][0]["source"]  # the policy takes its metadata from the mix's robot source
        assert len(data["cameras"]) == 6 and data["image_size"] == 224, name
        assert (data["past"], data["future"], data["image_offsets"]) == (1, 14, [-1, 0]), name
        assert "data" not in raw["model"], name
        assert raw["model"]["expert"]["preset"] == "large" and raw["train"]["optim"]["lr"] == 5.0e-4
    assert resolve_config(PAPER / "foundry_vlm_1b3.yaml")["model"]["llm"] == {
        "path": "runs/foundry_llm_1b/export"
    }
    assert (
        resolve_config(PAPER / "foundry_vla_1b7.yaml")["model"]["backbone"]["path"]
        == "runs/foundry_vlm_1b3/export"
    )


def test_every_paper_recipe_trains_two_tiny_steps_in_a_chain(tmp_path, monkeypatch):
    from foundry_core.train.run import run

    monkeypatch.chdir(tmp_path)
    prepare_workdir(tmp_path)
    for name in CHAIN:
        run_dir = run(str(PAPER / f"{name}.yaml"), tiny_overrides(name))
        assert run_dir == Path("runs") / name or run_dir.resolve() == (tmp_path / "runs" / name).resolve()
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r][-1] == 2, name
        assert all(r["loss"] == r["loss"] for r in rows if "loss" in r), name  # finite, not NaN
        assert (run_dir / "export" / "model.safetensors").is_file(), name


def test_missing_hf_folder_names_the_path_and_the_download(tmp_path, monkeypatch):
    from foundry_core.train.run import run

    monkeypatch.chdir(tmp_path)
    from foundry_action.testing import make_lbm_store

    make_lbm_store(tmp_path / "data" / "lbm.zarr", lengths=(20,))
    with pytest.raises(
        ConfigError,
        match=r"models/Qwen3-VL-2B-Instruct.*huggingface-cli download "
        r"Qwen/Qwen3-VL-2B-Instruct --local-dir models/Qwen3-VL-2B-Instruct",
    ):
        run(str(PAPER / "foundry_qwen3vla_2b.yaml"), tiny_overrides("foundry_qwen3vla_2b"))


def test_cuda_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    import torch

    from foundry_core.train.run import run

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in tiny_overrides("foundry_llm_1b") if not o.startswith("run.device")]
    with pytest.raises(ConfigError, match="run.device: 'cuda' requested but CUDA is not available"):
        run(str(PAPER / "foundry_llm_1b.yaml"), overrides)
