"""Exponential moving average of the weights, kept in fp32 and sharded like the parameters.

Under FSDP2 the EMA tensors are DTensors with the parameters' placements, so no step materialises a
full tensor. ``state_dict()`` is keyed by parameter name (saved through torch.distributed.checkpoint).
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().to(torch.float32).clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().to(torch.float32), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, t in state.items():
            if t is not self.shadow[name]:
                self.shadow[name].copy_(t)
