"""Trainer state that is not a tensor of the model: counters and random-number-generator states.

Saved per rank (``rank_XXXXX.pt``, plain types + tensors, loaded with ``weights_only=True``) so a
resume on the same world size continues bit-exactly.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    """Global (all-rank) counters of the run."""

    step: int = 0
    samples: int = 0
    tokens: int = 0
    #: Optimizer steps the schedule spans; fixed at the first step for token budgets.
    total_steps: int | None = None
    #: Non-finite steps skipped so far (``train.skip_nonfinite``); written by the trainer, kept on resume.
    nonfinite_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        # Checkpoints written before these never-written fields were removed still carry them at
        # their defaults; anything else unknown is an error (TypeError naming the key).
        legacy = {"samples_per_source": {}, "tokens_per_source": {}}
        d = {k: v for k, v in d.items() if not (k in legacy and v == legacy[k])}
        return cls(**d)


def capture_rng() -> dict[str, Any]:
    """Every RNG the loop may touch: torch (CPU, CUDA), Python ``random``, NumPy's global one."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
