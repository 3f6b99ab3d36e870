"""Typed component nodes: every shipped run recipe parses into typed nodes, and the YAML written back
from them (what ``foundry config show``, checkpoints and exports write) parses to the same config."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundry_core.config import Node, parse_dataclass, resolve_config, to_dict
from foundry_core.plugins import get_registry
from foundry_core.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
#: Whole run configs (paper/*_data.yaml and the like are fragments that others include).
RUN_RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "name" in resolve_config(p).get("model", {}))


@pytest.mark.parametrize("path", RUN_RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_round_trips_through_typed_nodes(path):
    registry = get_registry()
    cfg = parse_dataclass(RunConfig, resolve_config(path), resolve=registry.config_class)
    assert isinstance(cfg.model, Node) and isinstance(cfg.train.optim, Node)
    assert all(isinstance(m.source, Node) for m in cfg.data.mix)
    assert cfg.train.optim.config.lr > 0  # typed: attribute access, no mapping lookups
    written = to_dict(cfg)
    again = parse_dataclass(RunConfig, written, resolve=registry.config_class)
    assert to_dict(again) == written
