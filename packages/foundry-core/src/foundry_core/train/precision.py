"""Precision modes, identical under none / DDP / FSDP2.

* ``fp32``: fp32 parameters, optimizer state and compute.
* ``bf16``: fp32 parameters (the master weights) and fp32 optimizer state; forward/backward run
  under ``torch.autocast(dtype=bfloat16)``. Gradients are fp32 (they match the parameters).
* ``bf16-pure``: parameters, gradients and optimizer state are bf16 (explicit: less memory, less
  precise); no autocast.

Tested by ``tests/test_train_precision.py``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16", "bf16-pure"]


def param_dtype(precision: Precision) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16-pure" else torch.float32


def prepare_model(model: nn.Module, precision: Precision) -> nn.Module:
    """Cast parameters to the dtype the mode keeps (before wrapping and before the optimizer)."""
    return model.to(dtype=param_dtype(precision))


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """The compute context for one forward/backward."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cast_batch(batch: dict[str, Any], precision: Precision) -> dict[str, Any]:
    """``bf16-pure`` feeds bf16 inputs: floating-point tensors of the batch are cast to bf16."""
    if precision != "bf16-pure":
        return batch
    return {
        k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in batch.items()
    }
