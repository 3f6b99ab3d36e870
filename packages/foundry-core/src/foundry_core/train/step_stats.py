"""The sums one optimizer step contributes on each rank, all-reduced across ranks as one tensor.

Loss sums stay on the device while the micro-batches run (no host sync per micro-batch); sample, token
and FLOP counts are host numbers. ``pack()`` lays everything out in one float64 tensor so a step costs
one all-reduce; ``unpack()`` names the parts again. Tested by ``tests/test_train_units.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class StepStats:
    """Sums over a step's micro-batches: summed over ranks once :meth:`all_reduce` ran."""

    labels: tuple[str, ...]
    #: The step's loss: finite batch losses, each weighted by its share of the step's samples (device);
    #: and the number of non-finite batch losses.
    loss: torch.Tensor
    nonfinite: torch.Tensor
    #: Per mix label: summed (unweighted) batch loss (device), number of batches and samples (host).
    label_loss: torch.Tensor
    label_batches: list[float] = field(default_factory=list)
    label_samples: list[float] = field(default_factory=list)
    samples: float = 0.0
    tokens: float = 0.0
    flops: float = 0.0

    @classmethod
    def zeros(cls, labels: Sequence[str], device: torch.device | str = "cpu") -> StepStats:
        def zero(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        n = len(labels)
        return cls(tuple(labels), zero(), zero(), zero(n), [0.0] * n, [0.0] * n)

    def add(
        self, label: str, loss: torch.Tensor, *, share: float, samples: int, tokens: int, flops: float
    ) -> None:
        """Count one batch (``share``: its fraction of the step's samples on this rank); a non-finite
        loss counts as such and adds nothing to the sums."""
        j = self.labels.index(label)
        value = loss.detach().to(torch.float64)
        finite = torch.isfinite(value)
        value = torch.where(finite, value, torch.zeros_like(value))
        self.loss += value * share
        self.nonfinite += (~finite).to(torch.float64)
        self.label_loss[j] += value
        self.label_batches[j] += 1
        self.label_samples[j] += samples
        self.samples += samples
        self.tokens += tokens
        self.flops += flops

    def pack(self) -> torch.Tensor:
        """One CPU float64 tensor: loss, nonfinite, per-label loss; samples, tokens, flops, per-label
        batches, per-label samples."""
        device_part = torch.cat([self.loss.reshape(1), self.nonfinite.reshape(1), self.label_loss]).cpu()
        host = [self.samples, self.tokens, self.flops, *self.label_batches, *self.label_samples]
        host_part = torch.tensor(host, dtype=torch.float64)
        return torch.cat([device_part, host_part])

    @classmethod
    def unpack(cls, labels: Sequence[str], packed: torch.Tensor) -> StepStats:
        n = len(labels)
        loss, nonfinite, label_loss, host = packed[0], packed[1], packed[2 : 2 + n], packed[2 + n :]
        samples, tokens, flops = (float(x) for x in host[:3])
        batches, label_samples = [float(x) for x in host[3 : 3 + n]], [float(x) for x in host[3 + n :]]
        return cls(tuple(labels), loss, nonfinite, label_loss, batches, label_samples, samples, tokens, flops)

    def all_reduce(self, reduce: Callable[[torch.Tensor], None]) -> StepStats:
        """The sums over every rank (``reduce`` sums a CPU tensor in place; one call)."""
        packed = self.pack()
        reduce(packed)
        return self.unpack(self.labels, packed)

    @property
    def has_nonfinite(self) -> bool:
        return bool(self.nonfinite > 0)

    def label_means(self) -> dict[str, float]:
        """Mean micro-batch loss of every label that ran in this step."""
        return {
            label: float(self.label_loss[j]) / count
            for j, (label, count) in enumerate(zip(self.labels, self.label_batches))
            if count
        }
