"""Test support for Foundry and its plugins (a pytest plugin registered via the ``pytest11`` entry point)."""

from __future__ import annotations

from types import ModuleType


def registered_names(plugin: ModuleType, name: str, kind: str) -> list[str]:
    """Names that ``plugin`` (registered as ``name``) provides under ``kind``: tests parametrize over
    them, so a new component is tested without anyone editing a list."""
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import collect

    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(plugin, name=name)
    names = [s.name for s in collect(pm).specs(kind) if s.provider == name]
    if not names:  # an empty parametrization would pass without testing anything
        raise LookupError(f"{name} registers no {kind}")
    return names
