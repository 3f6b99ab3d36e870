"""Optimizers (kind ``optimizer``): AdamW and SGD, with the no-weight-decay rule.

No decay, by rule, on: every parameter with fewer than 2 dimensions (biases, norm scales), every
parameter of a normalization layer, and every embedding table (``nn.Embedding`` or a parameter whose
name contains ``embed``). A model may add names through ``no_weight_decay() -> set[str]``.
Tested by ``tests/test_train_units.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from foundry_core.errors import ConfigError

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.RMSNorm,
)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group (see module docstring)."""
    extra = set(getattr(model, "no_weight_decay", set)())
    no_decay_ids: set[int] = set()
    for mod_name, module in model.named_modules():
        if _is_norm(module) or isinstance(module, nn.Embedding):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p.ndim < 2 or "embed" in full.lower() or full in extra:
                no_decay_ids.add(id(p))
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if id(p) in no_decay_ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class _OptimizerFactory:
    """Holds a validated Config; ``build(model)`` makes the torch optimizer (the registry calls ``cls(cfg)``)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg


class AdamW(_OptimizerFactory):
    """AdamW with decoupled weight decay on matrices only."""

    @dataclass(kw_only=True)
    class Config:
        lr: float = 3.0e-4
        betas: tuple[float, float] = (0.9, 0.95)
        eps: float = 1.0e-8
        weight_decay: float = 0.1

        def validate(self) -> None:
            if self.lr <= 0:
                raise ConfigError(f"lr must be > 0, got {self.lr}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.cfg
        groups = param_groups(model, c.weight_decay)
        kwargs: dict[str, Any] = {"lr": c.lr, "betas": c.betas, "eps": c.eps}
        if fused_supported(groups):
            # one kernel per step instead of ~10 multi-tensor passes with temporaries: at 125M parameters
            # on this 2-core CPU 68 ms vs 397 ms (foreach) per step
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def fused_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether every parameter can use torch's fused AdamW kernel (floating point, on CPU or CUDA)."""
    return all(p.device.type in ("cpu", "cuda") and torch.is_floating_point(p) for g in groups for p in g["params"])


class SGD(_OptimizerFactory):
    """SGD with momentum (optionally Nesterov), same weight-decay rule as AdamW."""

    @dataclass(kw_only=True)
    class Config:
        lr: float = 0.01
        momentum: float = 0.9
        nesterov: bool = False
        weight_decay: float = 0.0

        def validate(self) -> None:
            if self.lr <= 0:
                raise ConfigError(f"lr must be > 0, got {self.lr}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.SGD(
            param_groups(model, c.weight_decay),
            lr=c.lr,
            momentum=c.momentum,
            nesterov=c.nesterov,
            foreach=True,
        )
