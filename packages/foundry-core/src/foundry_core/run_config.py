"""The schema of a run config (one YAML file + includes + overrides).

Components are nested nodes ``{name: ..., **fields}``, parsed into typed :class:`Node` s (the
component's own ``Config``) through the resolver the caller passes; the slot decides the kind
(``model:`` is a ``model``, ``source:`` a ``data_source``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from foundry_core.config import Node, component
from foundry_core.errors import ConfigError


def check_at_least(where: str, minimum: int, **values: int | float | None) -> None:
    """Counts and sizes below ``minimum`` (``steps=-5``) would train nothing and still export: refuse them."""
    for key, value in values.items():
        if value is not None and value < minimum:
            raise ConfigError(f"{where}.{key}: must be >= {minimum}, got {value}")


@dataclass(kw_only=True)
class RunSection:
    name: str = "run"
    #: Run directory; defaults to ``runs/<name>``.
    out_dir: str | None = None
    seed: int = 0
    #: fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``file:///…``) that receives every checkpoint and the export.
    remote_dir: str | None = None
    #: Retries (exponential backoff from 1 s) of a failed upload to ``remote_dir`` before it is reported.
    remote_retries: int = 3
    device: str = "auto"
    #: torch CPU threads (default: torch's own choice, one per core). Sums are taken in another order with
    #: another thread count, so the trained weights differ in the last bits and then diverge: pin it to
    #: get the same numbers on a machine with another core count (and the same CPU instruction set).
    threads: int | None = None

    def validate(self) -> None:
        check_at_least("run", 0, remote_retries=self.remote_retries)
        check_at_least("run", 1, threads=self.threads)


@dataclass(kw_only=True)
class MixEntry:
    source: Node = component("data_source")
    weight: float = 1.0
    #: Label used in per-source metrics; defaults to the source's ``name`` (+ index when repeated).
    label: str | None = None

    def validate(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"weight must be >= 0, got {self.weight}")


@dataclass(kw_only=True)
class DataSection:
    mix: list[MixEntry] = field(default_factory=list)
    #: Held-out sources for validation loss (label -> source node).
    val: dict[str, Node] = component("data_source", {})

    def validate(self) -> None:
        if self.mix and not any(m.weight > 0 for m in self.mix):
            raise ConfigError("data.mix: at least one weight must be > 0")


@dataclass(kw_only=True)
class Budget:
    samples: int | None = None
    tokens: int | None = None
    steps: int | None = None

    def validate(self) -> None:
        given = [k for k in ("samples", "tokens", "steps") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"train.budget: give exactly one of samples/tokens/steps, got {given or 'none'}")
        check_at_least("train.budget", 1, samples=self.samples, tokens=self.tokens, steps=self.steps)


@dataclass(kw_only=True)
class EmaSection:
    decay: float = 0.999
    #: Export EMA weights instead of the raw ones.
    use_for_export: bool = True

    def validate(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"train.ema.decay: must be in [0, 1), got {self.decay}")


@dataclass(kw_only=True)
class CheckpointSection:
    every_steps: int | None = None
    every_samples: int | None = None
    keep_last: int = 3

    def validate(self) -> None:
        check_at_least("train.checkpoint", 1, every_steps=self.every_steps, every_samples=self.every_samples,
                       keep_last=self.keep_last)


@dataclass(kw_only=True)
class BatchSizes:
    #: Samples per optimizer step over all ranks (YAML key ``global``: a Python keyword).
    global_: int = field(metadata={"key": "global"})
    #: Samples per forward pass on one rank; the default (null) is ``global`` (no accumulation).
    per_device: int | None = None

    @property
    def per_device_or_global(self) -> int:
        return self.per_device if self.per_device is not None else self.global_

    def validate(self) -> None:
        check_at_least("train.batch", 1, **{"global": self.global_, "per_device": self.per_device})


@dataclass(kw_only=True)
class TrainSection:
    budget: Budget = field(default_factory=lambda: Budget(steps=100))
    batch: BatchSizes = field(default_factory=lambda: BatchSizes(global_=8, per_device=8))
    optim: Node = component("optimizer", {"name": "adamw", "lr": 3.0e-4})
    schedule: Node = component("schedule", {"name": "cosine", "warmup": 0.05})
    precision: Literal["fp32", "bf16", "bf16-pure"] = "fp32"
    grad_clip: float | None = 1.0
    ema: EmaSection | None = None
    grad_checkpointing: bool = False
    compile: bool = False
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log_every: int = 10
    val_every: int | None = None
    val_batches: int = 4
    #: Non-finite losses tolerated (step skipped) before the run stops.
    skip_nonfinite: int = 0
    callbacks: list[Node] = component("callback", [])
    metrics: list[Literal["jsonl", "tensorboard", "wandb"]] = field(default_factory=lambda: ["jsonl"])
    progress: bool = True

    def validate(self) -> None:
        check_at_least("train", 1, log_every=self.log_every, val_every=self.val_every, val_batches=self.val_batches)
        check_at_least("train", 0, skip_nonfinite=self.skip_nonfinite)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip: must be > 0 (or null for no clipping), got {self.grad_clip}")


@dataclass(kw_only=True)
class DistributedSection:
    strategy: Literal["none", "ddp", "fsdp2"] = "none"
    backend: Literal["auto", "nccl", "gloo"] = "auto"


@dataclass(kw_only=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    model: Node = component("model")
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
