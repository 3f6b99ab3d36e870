"""The only test that loads real entry points: every workspace plugin is discovered and registers."""

from __future__ import annotations

from foundry_core.plugins import make_plugin_manager
from foundry_core.registry import collect


def test_real_entry_point_discovery(monkeypatch):
    monkeypatch.delenv("FOUNDRY_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("FOUNDRY_PLUGINS", raising=False)
    pm = make_plugin_manager(strict=True)
    for dist in ("foundry-vision", "foundry-action", "foundry-eval", "foundry-pipeline", "foundry-example-plugin"):
        assert pm.get_plugin(dist) is not None, f"{dist} not discovered"
        assert pm.dist_versions[dist] == "0.1.0"
        if dist != "foundry-example-plugin":  # foundry-core etc. on PyPI are other projects
            assert pm.dist_names[dist] == dist.replace("foundry-", "foundry-robotics-")
    registry = collect(pm)
    providers = {s.provider for s in registry.specs()}
    assert {"foundry-core", "foundry-example-plugin"} <= providers


def test_explicit_plugin_list(monkeypatch):
    monkeypatch.setenv("FOUNDRY_PLUGINS", "foundry-example-plugin")
    pm = make_plugin_manager(strict=True)
    assert pm.get_plugin("foundry-example-plugin") is not None
    assert pm.get_plugin("foundry-vision") is None
