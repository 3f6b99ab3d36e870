"""A VLA asked to condition on the instruction gets a backbone that reads it, or a config error."""

from __future__ import annotations

import pytest

from foundry_core.errors import ConfigError
from foundry_core.plugins import get_registry
from foundry_core.registry import BuildContext

pytest.importorskip("foundry_vision")

TINY_VIT = {"name": "vit", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2}


def test_vla_refuses_an_instruction_its_backbone_cannot_read(tiny_episodes):
    registry = get_registry()
    node = {"name": "vla", "backbone": {"name": "vision_encoder", "encoder": TINY_VIT},
            "expert": {"name": "l1_regression", "preset": "debug"},
            "data": {"name": "zarr_episodes", "path": str(tiny_episodes), "past": 0, "future": 3}}  # fmt: skip
    with pytest.raises(ConfigError, match="use_instruction.*ignores the instruction"):
        registry.build("model", node, BuildContext(registry))
    blind = registry.build("model", {**node, "use_instruction": False}, BuildContext(registry))
    assert not blind.spec["is_language_conditioned"]
    reading = registry.build(
        "model", {**node, "backbone": {**node["backbone"], "text": "bytes"}}, BuildContext(registry)
    )
    assert reading.spec["is_language_conditioned"]
