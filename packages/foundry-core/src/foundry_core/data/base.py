"""Data-source contract and helpers shared by every source.

The protocol itself lives in :mod:`foundry_core.interfaces` (``DataSource``): ``batches(batch_size,
rank=, world_size=, seed=)`` yields collated batch dicts of one modality and may end (finite data);
``state_dict()``/``load_state_dict()`` hold the cursor for exact resume. A cursor should count
*global* progress (samples over all ranks) so a run can resume on a different world size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch

from foundry_core.interfaces import Batch, DataSource

__all__ = [
    "Batch",
    "DataSource",
    "batch_num_samples",
    "batch_num_tokens",
    "collate",
    "move_to_device",
    "shard_for_rank",
]

T = TypeVar("T")


def shard_for_rank(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Round-robin split: rank ``r`` gets items ``r, r + W, r + 2W, ...``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return list(items[rank::world_size])


def collate(samples: Sequence[Mapping[str, Any]]) -> Batch:
    """Stack tensors (and numbers) along a new leading dim; other values become lists.

    Every sample must have the same keys; ``modality`` stays a single string.
    """
    if not samples:
        raise ValueError("collate: empty list of samples")
    keys = list(samples[0])
    out: Batch = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key == "modality":
            out[key] = values[0]
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def batch_num_samples(batch: Mapping[str, Any]) -> int:
    """``batch["num_samples"]`` when present, else the leading dim of the first tensor."""
    if "num_samples" in batch:
        return int(batch["num_samples"])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    raise ValueError(f"batch has no tensor to count samples from (keys: {sorted(batch)})")


def batch_num_tokens(batch: Mapping[str, Any]) -> int:
    """Supervised tokens: ``(labels != -100).sum()`` when ``labels`` exists, else 0."""
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor):
        return int((labels != -100).sum())
    return 0


def move_to_device(batch: Mapping[str, Any], device: torch.device) -> Batch:
    """Tensors go to ``device`` (non-blocking); everything else is left alone."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
