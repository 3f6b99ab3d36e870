"""Freeze submodules by name pattern from config (``freeze: ["vision*", "llm.blocks.0*"]``).

A pattern is an ``fnmatch`` glob over parameter names (``model.named_parameters()``); a pattern
that matches nothing is a config error listing a few real names, so typos never pass silently.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_encoders.py``.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from foundry_core.errors import ConfigError


def freeze_by_patterns(model: nn.Module, patterns: list[str], where: str = "freeze") -> int:
    """Set ``requires_grad=False`` on parameters matching any pattern; return how many tensors were frozen."""
    names = [n for n, _ in model.named_parameters()]
    frozen = 0
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            prefixes = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"{where}: pattern {pattern!r} matches no parameter (top-level modules: {', '.join(prefixes)})")
        params = dict(model.named_parameters())
        for n in hits:
            if params[n].requires_grad:
                params[n].requires_grad_(False)
                frozen += 1
    return frozen
