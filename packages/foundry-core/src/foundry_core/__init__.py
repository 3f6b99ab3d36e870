"""Foundry core: plugin system, registry, config, trainer and the `foundry` CLI.

Kept tiny on purpose: importing ``foundry_core`` must not import torch (the CLI's start-up time and
every plugin's import cost depend on it). Heavy entry points are resolved lazily (PEP 562).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
#: Bumped only when a hookspec changes incompatibly.
PLUGIN_API = 1

_LAZY = {
    "hookimpl": ("foundry_core.hookspecs", "hookimpl"),
    "load_pretrained": ("foundry_core.export", "load_pretrained"),
    "plugin_manager": ("foundry_core.plugins", "plugin_manager"),
    "get_registry": ("foundry_core.plugins", "get_registry"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'foundry_core' has no attribute {name!r}")


__all__ = ["PLUGIN_API", "__version__", *_LAZY]
