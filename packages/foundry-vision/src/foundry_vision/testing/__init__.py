"""Tiny configs for tests and benchmarks of foundry-vision (and of packages that build its components).

Its fixtures are in :mod:`foundry_vision.testing.pytest_plugin`. Test: used by ``packages/foundry-vision/tests``.
"""

from __future__ import annotations

from typing import Any

TINY_VIT: dict[str, Any] = {"name": "vit", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2}
TINY_LLM: dict[str, Any] = {"name": "transformer", "dim": 64, "n_layers": 2, "n_heads": 2, "max_seq_len": 256, "tokenizer": "byte"}


#: ``run_config(..., run=CPU_RUN, train=SLOW_LR)`` (foundry_core.testing): the runs of the vision chains.
CPU_RUN: dict[str, Any] = {"device": "cpu"}
SLOW_LR: dict[str, Any] = {"optim": {"name": "adamw", "lr": 1.0e-3}, "schedule": {"name": "constant", "warmup": 0.0}}
