"""Tiny configs for tests and benchmarks of foundry-vision (and of packages that build its components).

Test: used by ``packages/foundry-vision/tests``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_VIT: dict[str, Any] = {"name": "vit", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2}
TINY_LLM: dict[str, Any] = {"name": "transformer", "dim": 64, "n_layers": 2, "n_heads": 2, "max_seq_len": 256, "tokenizer": "byte"}


def trainer_config(out_dir: str | Path, model: dict[str, Any], mix: list[dict[str, Any]], steps: int = 2, batch: int = 2) -> dict[str, Any]:
    """A minimal run config for ``train_from_config`` writing into ``out_dir``."""
    return {
        "run": {"name": "t", "out_dir": str(out_dir), "device": "cpu"},
        "model": model,
        "data": {"mix": mix},
        "train": {"budget": {"steps": steps}, "batch": {"global": batch, "per_device": batch},
                  "optim": {"name": "adamw", "lr": 1.0e-3}, "schedule": {"name": "constant", "warmup": 0.0},
                  "log_every": 1, "progress": False},
    }
