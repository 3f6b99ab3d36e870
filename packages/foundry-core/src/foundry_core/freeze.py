"""Freeze (or unfreeze) parameters by name pattern from config (``freeze: ["vision*", "llm.blocks.0*"]``).

The one helper every model with a ``freeze`` field uses (composed VLM, HF VLM, backbones, VLA). A
pattern is an ``fnmatch`` glob over parameter names (``model.named_parameters()``); a pattern that
matches nothing is a config error listing the top-level modules, so typos never pass silently.

Test: ``uv run pytest packages/foundry-core/tests/test_core_freeze.py``.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from foundry_core.errors import ConfigError


def set_trainable(model: nn.Module, patterns: list[str], trainable: bool, where: str = "freeze") -> int:
    """Set ``requires_grad=trainable`` on parameters matching any pattern; return how many tensors changed."""
    params = dict(model.named_parameters())
    changed = 0
    for pattern in patterns:
        hits = [n for n in params if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            prefixes = sorted({n.split(".")[0] for n in params})
            raise ConfigError(
                f"{where}: pattern {pattern!r} matches no parameter (top-level modules: {', '.join(prefixes)})"
            )
        for n in hits:
            if params[n].requires_grad != trainable:
                params[n].requires_grad_(trainable)
                changed += 1
    return changed


def freeze_by_patterns(model: nn.Module, patterns: list[str], where: str = "freeze") -> int:
    """Freeze parameters matching any pattern; return how many tensors were frozen."""
    return set_trainable(model, patterns, False, where)
