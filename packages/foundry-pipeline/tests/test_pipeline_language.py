"""Scene sentences and captions of the pipeline's toy world: grounded in the state, varied, deterministic."""

from __future__ import annotations

import random

import pytest

from foundry_pipeline.language import SceneObject, caption_scene, describe_scene, region, relation
from foundry_pipeline.world import color_name

BLOCK = SceneObject("block", "red", "block", 0.15, 0.2)
TARGET = SceneObject("target", "green", "target circle", -0.15, -0.2)


def test_regions_and_relations_follow_positions():
    assert region(BLOCK) == "at the far left"
    assert region(TARGET) == "at the near right"
    assert region(SceneObject("c", "red", "can", 0.0, 0.0)) == "at the middle center"
    assert relation(BLOCK, TARGET) == "to the left of"
    assert relation(SceneObject("a", "red", "can", 0.2, 0.0), SceneObject("b", "red", "can", -0.1, 0.01)) == "behind"


def test_description_mentions_objects_and_instruction_and_varies():
    texts = {describe_scene([BLOCK, TARGET], "Push the red block onto the green target", random.Random(s)) for s in range(20)}
    assert len(texts) > 10  # templates and order vary with the seed
    for text in texts:
        assert "red block" in text and "green target circle" in text
        assert text.rstrip(".").endswith("push the red block onto the green target")
    assert describe_scene([BLOCK, TARGET], "x", random.Random(3)) == describe_scene([BLOCK, TARGET], "x", random.Random(3))


def test_caption_places_every_object_and_is_a_function_of_the_scene():
    caption = caption_scene([BLOCK, TARGET])
    assert caption == "A red block at the far left and a green target circle at the near right."
    moved = SceneObject("block", "red", "block", 0.0, 0.0)
    assert caption_scene([moved, TARGET]) != caption  # what differs in the scene differs in the caption


def test_color_names_from_rgba():
    assert color_name((0.85, 0.1, 0.1, 1.0)) == "red"
    assert color_name((0.15, 0.3, 0.85, 1.0)) == "blue"
    assert color_name((0.95, 0.95, 0.95, 1.0)) == "white"


def test_world_demo_counts_must_name_demo_tasks():
    from foundry_core.config import parse_dataclass
    from foundry_core.errors import ConfigError
    from foundry_pipeline.world import WorldConfig

    cfg = parse_dataclass(WorldConfig, {"tasks": ["reach_target", "push_to_target"], "demo_counts": {"reach_target": 5}})
    assert cfg.demo_counts == {"reach_target": 5}
    with pytest.raises(ConfigError, match="'stack_blocks' is not one of the demo tasks"):
        parse_dataclass(WorldConfig, {"tasks": ["reach_target"], "demo_counts": {"stack_blocks": 5}})
    with pytest.raises(ConfigError, match=r"demo_counts.reach_target: must be >= 1"):
        parse_dataclass(WorldConfig, {"tasks": ["reach_target"], "demo_counts": {"reach_target": 0}})


def test_world_frames_choice_is_checked_at_config_time_and_reaches_the_demo_store(tmp_path):
    from foundry_action.frame_codecs import FrameEncoding
    from foundry_action.store import open_store
    from foundry_core.config import parse_dataclass
    from foundry_core.errors import ConfigError
    from foundry_pipeline.world import WorldConfig, build_demos

    with pytest.raises(ConfigError, match=r"world.frames/world.jpeg_quality: unknown frame encoding 'png'"):
        parse_dataclass(WorldConfig, {"frames": "png"})
    with pytest.raises(ConfigError, match=r"world.frames/world.jpeg_quality: JPEG quality must be an integer in 1..100"):
        parse_dataclass(WorldConfig, {"frames": "jpeg", "jpeg_quality": 0})
    cfg = parse_dataclass(
        WorldConfig,
        {"tasks": ["reach_target"], "demos_per_task": 1, "cameras": ["scene"], "image_size": 32, "workers": 1,
         "frames": "jpeg", "jpeg_quality": 75},
    )  # fmt: skip
    build_demos(cfg, tmp_path / "demos.zarr")
    assert open_store(tmp_path / "demos.zarr").frames == FrameEncoding("jpeg", 75)


def test_world_recovery_demos_are_checked_and_stored_after_the_clean_ones(tmp_path):
    from foundry_action.store import open_store
    from foundry_core.config import parse_dataclass
    from foundry_core.errors import ConfigError
    from foundry_pipeline.world import WorldConfig, build_demos

    with pytest.raises(ConfigError, match=r"world.recovery_noise.xyz must be a finite number >= 0, got -0.1"):
        parse_dataclass(
            WorldConfig, {"recovery_demos_per_task": 1, "recovery_noise": {"xyz": -0.1}}, where="world"
        )
    with pytest.raises(ConfigError, match=r"world.recovery_noise.xz: unknown key; did you mean 'xyz'"):
        parse_dataclass(WorldConfig, {"recovery_noise": {"xz": 0.1}}, where="world")
    with pytest.raises(ConfigError, match=r"world.recovery_noise: recovery demos need noise"):
        parse_dataclass(WorldConfig, {"recovery_demos_per_task": 2}, where="world")
    with pytest.raises(ConfigError, match=r"world.recovery_demos_per_task: must be >= 0, got -1"):
        parse_dataclass(WorldConfig, {"recovery_demos_per_task": -1}, where="world")
    cfg = parse_dataclass(
        WorldConfig,
        {"tasks": ["reach_target"], "demos_per_task": 1, "cameras": [], "workers": 1,
         "recovery_demos_per_task": 2, "recovery_noise": {"xyz": 0.01, "correlation": 0.5}},
    )  # fmt: skip
    summary = build_demos(cfg, tmp_path / "demos.zarr")
    assert summary["reach_target"]["recovery"]["stored"] == 2
    store = open_store(tmp_path / "demos.zarr")
    assert len(store) == 3 and "noise_xyz" not in store.meta(0)
    assert [store.meta(i)["noise_xyz"] for i in (1, 2)] == [0.01, 0.01]
    assert [store.meta(i)["seed"] for i in (1, 2)] == [2_000_000, 2_000_001]
    assert all(store.meta(i)["success"] for i in range(3))
