"""Balanced cross-task aggregation: every task weighs equally inside each model (REFERENCE §d.4).

Keep the tasks every model has; truncate each task of a model to that model's minimum count over those
tasks; concatenate in sorted task order and shuffle with a seeded RNG (the reference dashboard uses 43).

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_stats.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from foundry_core.errors import DataError

DEFAULT_SEED = 43


@dataclass
class Aggregate:
    """Balanced outcome arrays per model plus what was dropped and why."""

    outcomes: dict[str, np.ndarray]
    common_tasks: list[str]
    excluded_tasks: list[str]
    min_n: dict[str, int]
    original_counts: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)


def balanced_aggregate(
    per_model: Mapping[str, Mapping[str, np.ndarray]], seed: int = DEFAULT_SEED
) -> Aggregate:
    """``per_model[model][task]`` → 0/1 outcome arrays in stored order."""
    if not per_model:
        raise DataError("balanced_aggregate: no models")
    task_sets = [set(t) for t in per_model.values()]
    common = sorted(set.intersection(*task_sets))
    every = sorted(set.union(*task_sets))
    excluded = [t for t in every if t not in common]
    warnings = []
    if excluded:
        missing = {m: sorted(set(every) - set(t)) for m, t in per_model.items() if set(every) - set(t)}
        warnings.append(
            f"{len(excluded)} task(s) excluded because not every model has them: "
            + "; ".join(f"{m} lacks {', '.join(ts)}" for m, ts in sorted(missing.items()))
        )
    if not common:
        raise DataError("balanced_aggregate: the models share no task")
    counts = {m: {t: int(len(a)) for t, a in tasks.items()} for m, tasks in per_model.items()}
    min_n = {m: min(counts[m][t] for t in common) for m in per_model}
    rng = np.random.default_rng(seed)
    out = {}
    for m in sorted(per_model):
        if min_n[m] == 0:
            raise DataError(f"balanced_aggregate: model {m} has no finished episode on some common task")
        if any(counts[m][t] != min_n[m] for t in common):
            warnings.append(
                f"{m}: tasks truncated to {min_n[m]} episodes each (its minimum over common tasks)"
            )
        arr = np.concatenate([np.asarray(per_model[m][t], dtype=bool)[: min_n[m]] for t in common])
        out[m] = arr[rng.permutation(len(arr))]
    return Aggregate(out, common, excluded, min_n, counts, warnings)
