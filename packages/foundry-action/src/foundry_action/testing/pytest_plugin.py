"""pytest fixtures of foundry-action (loaded through the ``pytest11`` entry point).

``tiny_episodes``: a synthetic 3-episode store in ``tmp_path`` (see :func:`foundry_action.testing.make_tiny_store`);
``action_registry``: the registry of ``foundry_pm`` with foundry-action and the tiny test backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from foundry_core.plugins import PluginManager
    from foundry_core.registry import Registry


@pytest.fixture
def tiny_episodes(tmp_path: Path) -> Path:
    """Path to a synthetic 3-episode store (2 cameras 32x32, action/proprio 10-D, stats included)."""
    from foundry_action.testing import make_tiny_store

    return make_tiny_store(tmp_path / "tiny_episodes.zarr")


@pytest.fixture
def action_registry(foundry_pm: PluginManager) -> Registry:
    """``foundry_pm`` with foundry-action and the ``tiny_test`` backbone registered, collected."""
    import foundry_action.plugin
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.registry import collect

    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(foundry_pm)
    return collect(foundry_pm)
