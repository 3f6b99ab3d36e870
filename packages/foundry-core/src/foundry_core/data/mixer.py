"""Weighted mixing of data sources, one source per micro-batch, identical on every rank.

``Mixer(sources, weights, seed, batch_size=, rank=, world_size=)`` yields ``(label, batch)``. The
source of each micro-batch is drawn from a seeded RNG that every rank advances in lockstep, so all
ranks run the same modality in a micro-batch (different modalities may still share one optimizer
step: co-training). Accounting is exact: samples and tokens seen per source. ``state_dict()``
carries the RNG, the counters and every source's cursor. When the drawn source ends (finite data)
the mixer raises ``StopIteration``; the trainer all-reduces that so all ranks stop together.
Tested by ``tests/test_train_mixer.py``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from foundry_core.data.base import Batch, DataSource, batch_num_samples, batch_num_tokens
from foundry_core.errors import ConfigError


class Mixer:
    def __init__(
        self,
        sources: Mapping[str, DataSource],
        weights: Mapping[str, float] | Sequence[float],
        seed: int,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not sources:
            raise ConfigError("data.mix: no data sources")
        if not isinstance(weights, Mapping):  # a sequence aligned with the sources' order
            if len(weights) != len(sources):
                raise ConfigError(f"mixer: {len(weights)} weights for {len(sources)} sources")
            weights = dict(zip(sources, weights))
        if set(weights) != set(sources):
            raise ConfigError(f"mixer: weights {sorted(weights)} do not match sources {sorted(sources)}")
        self.sources = dict(sources)
        self.labels = list(self.sources)
        self.weights = [float(weights[label]) for label in self.labels]
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ConfigError(f"mixer: weights must be >= 0 with a positive sum, got {dict(weights)}")
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self._rng = random.Random(seed)
        self._iters: dict[str, Iterator[Batch]] = {}
        self.samples_seen = dict.fromkeys(self.labels, 0)
        self.tokens_seen = dict.fromkeys(self.labels, 0)
        self.exhausted: str | None = None

    def _source_seed(self, label: str) -> int:
        return self.seed * 1009 + self.labels.index(label)

    def __iter__(self) -> Mixer:
        return self

    def __next__(self) -> tuple[str, Batch]:
        label = self._rng.choices(self.labels, weights=self.weights)[0]
        it = self._iters.get(label)
        if it is None:
            it = self._iters[label] = iter(
                self.sources[label].batches(
                    self.batch_size, rank=self.rank, world_size=self.world_size, seed=self._source_seed(label)
                )
            )
        try:
            batch = next(it)
        except StopIteration:
            self.exhausted = label
            raise
        self.samples_seen[label] += batch_num_samples(batch)
        self.tokens_seen[label] += batch_num_tokens(batch)
        return label, batch

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "samples_seen": dict(self.samples_seen),
            "tokens_seen": dict(self.tokens_seen),
            "sources": {label: src.state_dict() for label, src in self.sources.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore RNG, counters and cursors; iterators restart from the restored cursors."""
        missing = set(self.labels) - set(state["sources"])
        if missing:
            raise ConfigError(
                f"mixer: checkpoint has no state for sources {sorted(missing)} (was data.mix changed?)"
            )
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.samples_seen.update(state["samples_seen"])
        self.tokens_seen.update(state["tokens_seen"])
        for label, src in self.sources.items():
            src.load_state_dict(state["sources"][label])
        self._iters = {}
