"""A lab adds its own robot-data format as a plugin (``register_converters``), like the first-party ones."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import foundry_action.plugin
from foundry_action.convert import ConvertOptions, Episode, Plan, convert, detect_format
from foundry_core.errors import DataError
from foundry_core.hookspecs import hookimpl
from foundry_core.registry import collect

CONVERTER = "foundry_test_lab_converter"


def _lab_module() -> types.ModuleType:
    """A converter module for a made-up format: ``episodes.json`` with per-episode action lists."""
    mod = types.ModuleType(CONVERTER)

    def detect(src: Path) -> bool:
        return (Path(src) / "episodes.json").is_file()

    def plan(src: Path, options: ConvertOptions) -> Plan:
        episodes = json.loads((Path(src) / "episodes.json").read_text())
        return Plan(fps=options.fps or 5.0, fields={"action": (2,), "proprio": (2,)}, dtypes={}, cameras={},
                    units=[(str(src), i) for i in range(len(episodes))])

    def load(unit: tuple[str, int]) -> list[Episode]:
        src, i = unit
        actions = np.asarray(json.loads((Path(src) / "episodes.json").read_text())[i], dtype=np.float32)
        return [Episode({"action": actions, "proprio": actions}, task="lab_task", instruction="do it")]

    mod.detect, mod.plan, mod.load = detect, plan, load
    return mod


class LabPlugin:
    @hookimpl
    def register_converters(self, register):
        register("lab_json", CONVERTER, description="a lab's episodes.json")


@pytest.fixture
def registry(foundry_pm, monkeypatch):
    monkeypatch.setitem(sys.modules, CONVERTER, _lab_module())
    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    foundry_pm.register(LabPlugin(), name="lab-plugin")
    return collect(foundry_pm)


def test_plugin_converter_is_detected_and_converts(registry, tmp_path):
    src = tmp_path / "lab"
    src.mkdir()
    (src / "episodes.json").write_text(json.dumps([[[0, 1]] * 4, [[1, 0]] * 6]))
    assert detect_format(src, registry) == "lab_json"
    summary = convert(src, tmp_path / "out.zarr", registry=registry)
    assert (summary.format, summary.episodes, summary.steps) == ("lab_json", 2, 10)
    assert registry.get("converter", "lab_json").provider == "lab-plugin"


def test_first_party_converters_register_through_the_hook(registry, tmp_path):
    import foundry_action.convert as package

    modules = {f"foundry_action.convert.{p.stem}" for p in Path(package.__file__).parent.glob("[!_]*.py")}
    assert {s.target for s in registry.specs("converter") if s.provider == "foundry-action"} == modules
    with pytest.raises(DataError, match="no converter named 'lab_jsn'; did you mean 'lab_json'"):
        convert(tmp_path, tmp_path / "x.zarr", fmt="lab_jsn", registry=registry)
    with pytest.raises(DataError, match="registered converters: lab_json: a lab's episodes.json"):
        detect_format(tmp_path, registry)
