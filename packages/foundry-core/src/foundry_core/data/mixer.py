"""Weighted mixing of data sources inside every optimizer step, identical on every rank.

``Mixer(sources, weights, seed, batch_size=, rank=, world_size=)`` splits ``batch_size`` (the samples
one rank takes per micro-step) over the sources by their weights: largest remainder, at least one sample
for every source with a positive weight (``batch_sizes``). Each ``next()`` is one micro-step: a batch
from every such source, ``[(label, batch), ...]`` in the mix's order. So every optimizer step sees
every source of the mix in the proportions of the weights (rounded to whole samples), with or without
gradient accumulation; the trainer weights each batch's loss by its share of the step's samples.

Why per step and not one source per micro-batch drawn at random (what this replaced): without
accumulation a step then saw one modality (caption, caption, robot, …), and the proportions held
only on average over many steps. The objective is the same (the expected gradient of a step is the
sample-weighted mean over sources either way); splitting the batch removes the variance of which
source a step draws, and every step's per-source losses are logged.

The order is deterministic, so the state is the per-source cursors (``state_dict()``, plus the exact
samples and tokens seen per source); a resumed run continues the same sequence. When a source ends
(finite data) the mixer raises ``StopIteration``; the trainer all-reduces that so all ranks stop together.
Tested by ``tests/test_train_units.py`` (split, order, state) and ``tests/test_train_loop.py`` (steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from foundry_core.data.base import Batch, DataSource, batch_num_samples, batch_num_tokens
from foundry_core.errors import ConfigError


def split_batch(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` samples split by ``weights``: largest remainder, at least 1 for every positive weight."""
    positive = [i for i, w in enumerate(weights) if w > 0]
    if total < len(positive):
        raise ConfigError(
            f"train.batch.per_device: {total} samples cannot hold one sample of each of the {len(positive)} "
            "data.mix sources with a positive weight (every micro-step takes from each); raise per_device"
        )
    ideal = [total * w / sum(weights) for w in weights]
    sizes = [max(1, math.floor(ideal[i])) if i in positive else 0 for i in range(len(weights))]
    while sum(sizes) < total:  # the largest remainders get the samples left over
        sizes[max(positive, key=lambda i: (ideal[i] - sizes[i], -i))] += 1
    while sum(sizes) > total:  # minimum-1 bumps took too many: take back from the most over-served
        sizes[min((i for i in positive if sizes[i] > 1), key=lambda i: (ideal[i] - sizes[i], i))] -= 1
    return sizes


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
        self.rank = rank
        self.world_size = world_size
        #: Samples each source contributes to every micro-step (0 for a zero weight).
        self.batch_sizes = dict(zip(self.labels, split_batch(batch_size, self.weights)))
        self._iters: dict[str, Iterator[Batch]] = {}
        self.samples_seen = dict.fromkeys(self.labels, 0)
        self.tokens_seen = dict.fromkeys(self.labels, 0)
        self.exhausted: str | None = None

    def _source_seed(self, label: str) -> int:
        return self.seed * 1009 + self.labels.index(label)

    def __iter__(self) -> Mixer:
        return self

    def __next__(self) -> list[tuple[str, Batch]]:
        """One micro-step: a batch of ``batch_sizes[label]`` samples from every source that has some."""
        return [(label, self._next_batch(label)) for label in self.labels if self.batch_sizes[label]]

    def _next_batch(self, label: str) -> Batch:
        it = self._iters.get(label)
        if it is None:
            it = self._iters[label] = iter(
                self.sources[label].batches(
                    self.batch_sizes[label],
                    rank=self.rank,
                    world_size=self.world_size,
                    seed=self._source_seed(label),
                )
            )
        try:
            batch = next(it)
        except StopIteration:
            self.exhausted = label
            raise
        self.samples_seen[label] += batch_num_samples(batch)
        self.tokens_seen[label] += batch_num_tokens(batch)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "samples_seen": dict(self.samples_seen),
            "tokens_seen": dict(self.tokens_seen),
            "sources": {label: src.state_dict() for label, src in self.sources.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counters and cursors; iterators restart from the restored cursors."""
        missing = set(self.labels) - set(state["sources"])
        if missing:
            raise ConfigError(
                f"mixer: checkpoint has no state for sources {sorted(missing)} (was data.mix changed?)"
            )
        self.samples_seen.update(state["samples_seen"])
        self.tokens_seen.update(state["tokens_seen"])
        for label, src in self.sources.items():
            src.load_state_dict(state["sources"][label])
        self._iters = {}
