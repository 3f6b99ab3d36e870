"""Compare policies on a loaded results tree: per-task and balanced-aggregate rows, pairwise tests with
Bonferroni over pairs, and compact letters. Models are compared only within one eval set (CS and OSS
are different simulators).

Pairwise tests: ``step`` (sequential; horizon n_max = max_sample_size_per_model for a task, and budget ×
number of common tasks for an aggregate; Lai's test above ``lai_threshold``) or ``barnard`` (fixed n;
its asymptotic z form above 500 episodes). A test that fails for a pair makes its group's letters "?"
and records the reason in ``errors``: never a silent "?".

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_compare.py``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from foundry_core.errors import ConfigError, FoundryError
from foundry_eval.results import ResultSet, TaskResult
from foundry_eval.stats.aggregation import DEFAULT_SEED, balanced_aggregate
from foundry_eval.stats.barnard import barnard_pvalue
from foundry_eval.stats.cld import compact_letters
from foundry_eval.stats.clopper_pearson import clopper_pearson
from foundry_eval.stats.lai import LAI_THRESHOLD, LaiTest
from foundry_eval.stats.step import P0_GREATER, P0_LESS, UNDECIDED, StepTest

log = logging.getLogger(__name__)
TESTS = ("step", "barnard")
CORRECTIONS = ("bonferroni", "holm")
ALL_TASKS = "All Tasks"


@dataclass
class Row:
    """One (eval_set, model, task) line; aggregates carry the task-group name in ``task``."""

    eval_set: str
    model: str
    task: str
    n: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    crashed: int
    letters: str
    pending: int
    policy_errors: int
    budget: int
    task_display: str
    kind: str  # "task" or "aggregate"

    @property
    def model_key(self) -> str:
        return f"{self.eval_set}/{self.model}" if self.eval_set else self.model


@dataclass
class PairResult:
    eval_set: str
    task: str
    model_a: str
    model_b: str
    decision: str  # P0_LESS ("a < b"), P0_GREATER, UNDECIDED, or "error"
    n_pairs: int
    method: str
    alpha: float
    pvalue: float | None = None
    error: str | None = None


@dataclass
class Comparison:
    rows: list[Row]
    pairs: list[PairResult]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "settings": self.settings,
            "rows": [asdict(r) for r in self.rows],
            "pairs": [asdict(p) for p in self.pairs],
            "warnings": self.warnings,
            "errors": self.errors,
        }


class _Tester:
    """Runs one pairwise test and caches synthesized boundaries per (n_max, alpha)."""

    def __init__(
        self,
        test: str,
        conservative: bool,
        seed: int,
        lai_threshold: int,
        progress,
        correction: str,
        construction: str = "lp",
    ) -> None:
        if test not in TESTS:
            raise ConfigError(f"unknown test {test!r}; choose one of {TESTS}")
        if correction not in CORRECTIONS:
            raise ConfigError(f"unknown correction {correction!r}; choose one of {CORRECTIONS}")
        if correction == "holm" and test != "barnard":
            raise ConfigError(
                "Holm's correction needs p-values: use it with --test barnard (STEP uses Bonferroni)"
            )
        self.correction = correction
        self.test, self.conservative, self.seed = test, conservative, seed
        self.lai_threshold, self.progress = lai_threshold, progress
        self.construction = construction
        self._cache: dict[tuple[str, int, float], StepTest | LaiTest] = {}

    def sequential(self, n_max: int, alpha: float) -> StepTest | LaiTest:
        kind = "lai" if n_max > self.lai_threshold else "step"
        key = (kind, n_max, alpha)
        if key not in self._cache:
            if kind == "lai":
                self._cache[key] = LaiTest(n_max, alpha, conservative=self.conservative)
            else:
                log.info("synthesizing/loading STEP boundary n_max=%d alpha=%.3g", n_max, alpha)
                self._cache[key] = StepTest(
                    n_max,
                    alpha,
                    conservative=self.conservative,
                    seed=self.seed,
                    construction=self.construction,
                    progress=self.progress,
                )
        return self._cache[key]

    def pair(
        self, a: np.ndarray, b: np.ndarray, n_max: int, alpha: float
    ) -> tuple[str, int, str, float | None]:
        if self.test == "barnard":
            p, method = barnard_pvalue(
                int(a.sum()), len(a), int(b.sum()), len(b), exact_limit=self.lai_threshold
            )
            a_thr = alpha / 2 if self.conservative else alpha
            if p >= a_thr:
                return UNDECIDED, min(len(a), len(b)), method, p
            return (P0_LESS if a.mean() < b.mean() else P0_GREATER), min(len(a), len(b)), method, p
        k = min(len(a), len(b))  # a sequential test pairs episodes: both arrays cut to the shorter one
        res = self.sequential(n_max, alpha).run(a[:k], b[:k])
        return res.decision, res.n_pairs, res.method, None


def _group_test(
    tester: _Tester,
    eval_set: str,
    task: str,
    arrays: dict[str, np.ndarray],
    n_max: int,
    alpha: float,
    pairs_out: list[PairResult],
    errors: list[str],
) -> dict[str, str]:
    """Pairwise tests with Bonferroni over the group's pairs, then compact letters (best first)."""
    models = sorted(arrays, key=lambda m: (-float(np.mean(arrays[m])) if len(arrays[m]) else 1.0, m))
    if len(models) < 2:
        return {m: "a" for m in models}
    n_pairs = len(models) * (len(models) - 1) // 2
    a_pair = alpha / n_pairs
    significant, failed = [], False
    for ma, mb in itertools.combinations(models, 2):
        try:
            decision, used, method, p = tester.pair(arrays[ma], arrays[mb], n_max, a_pair)
            pairs_out.append(PairResult(eval_set, task, ma, mb, decision, used, method, a_pair, p))
            if decision != UNDECIDED:
                significant.append((ma, mb))
        except (FoundryError, ValueError, FloatingPointError) as exc:
            failed = True
            msg = f"{eval_set or '-'} / {task}: test {ma} vs {mb} failed: {exc}"
            errors.append(msg)
            pairs_out.append(
                PairResult(eval_set, task, ma, mb, "error", 0, tester.test, a_pair, None, str(exc))
            )
    if failed:
        return {m: "?" for m in models}
    if tester.correction == "holm":
        significant = _holm(pairs_out[-n_pairs:], alpha / 2 if tester.conservative else alpha, arrays)
    return compact_letters(models, significant)


def _holm(
    group_pairs: list[PairResult], alpha: float, arrays: dict[str, np.ndarray]
) -> list[tuple[str, str]]:
    """Holm's step-down over one group's fixed-n p-values (rewrites decisions and per-pair alpha)."""
    order = sorted(range(len(group_pairs)), key=lambda i: group_pairs[i].pvalue)
    significant: list[tuple[str, str]] = []
    stopped = False
    for rank, i in enumerate(order):
        pr = group_pairs[i]
        pr.alpha = alpha / (len(order) - rank)
        stopped = stopped or not pr.pvalue < pr.alpha
        if stopped:
            pr.decision = UNDECIDED
        else:
            significant.append((pr.model_a, pr.model_b))
            less = float(np.mean(arrays[pr.model_a])) < float(np.mean(arrays[pr.model_b]))
            pr.decision = P0_LESS if less else P0_GREATER
    return significant


def compare(
    rs: ResultSet,
    *,
    test: str = "step",
    alpha: float = 0.05,
    conservative: bool = False,
    seed: int = 42,
    lai_threshold: int = LAI_THRESHOLD,
    confidence: float = 0.9,
    correction: str = "bonferroni",
    progress: Callable[[int, int], None] | None = None,
    step_construction: str = "lp",
) -> Comparison:
    """Rows, pairwise results, warnings and errors for every eval set, task and task group of ``rs``.

    ``correction``: ``bonferroni`` (default; the only choice for sequential tests) or ``holm`` (Barnard).
    ``step_construction``: STEP boundary construction, ``lp`` (default) or ``legacy`` (the previous one,
    to reproduce older letters). Aggregates: every ``rename.yaml`` task group plus "All Tasks".
    """
    if not 0 < alpha < 0.5:
        raise ConfigError(f"--alpha must be in (0, 0.5), got {alpha}")
    tester = _Tester(test, conservative, seed, lai_threshold, progress, correction, step_construction)
    rows: list[Row] = []
    pairs: list[PairResult] = []
    warnings, errors = list(rs.warnings), []
    for eval_set in rs.eval_sets:
        es = eval_set or ""
        in_set = {k: r for k, r in rs.results.items() if r.eval_set == eval_set}
        for task in sorted({r.task for r in in_set.values()}):
            trs = [r for r in in_set.values() if r.task == task]
            budgets = {r.budget for r in trs}
            if len(budgets) > 1:
                warnings.append(
                    f"{es or '-'} / {task}: models have different budgets {sorted(budgets)}; STEP uses the largest"
                )
            arrays = {}
            for r in trs:
                if r.n == 0:
                    warnings.append(f"{r.model_key} / {task}: no finished episode; left out of the tests")
                else:
                    arrays[r.model] = r.outcomes
            letters = _group_test(tester, es, task, arrays, max(budgets), alpha, pairs, errors)
            for r in trs:
                rows.append(
                    _row(
                        es,
                        r.model,
                        task,
                        rs.display_task(task),
                        r.n,
                        r.successes,
                        r.crashed,
                        r.pending,
                        r.policy_errors,
                        r.budget,
                        letters.get(r.model, "-"),
                        "task",
                        confidence,
                    )
                )
        for group, tasks in _task_groups(rs, in_set.values(), warnings, es).items():
            _aggregate_rows(
                rs,
                tester,
                es,
                group,
                tasks,
                in_set.values(),
                alpha,
                confidence,
                rows,
                pairs,
                warnings,
                errors,
            )
    settings = {
        "test": test,
        "alpha": alpha,
        "conservative": conservative,
        "seed": seed,
        "lai_threshold": lai_threshold,
        "correction": correction,
        "confidence": confidence,
        "aggregate_seed": DEFAULT_SEED,
        "step_construction": step_construction,
    }
    return Comparison(rows, pairs, warnings, errors, settings)


def _task_groups(rs: ResultSet, trs, warnings: list[str], es: str) -> dict[str, list[str]]:
    """Task groups from ``rename.yaml`` (those with a loaded task) plus, always, the all-tasks group."""
    present = {r.task for r in trs}
    groups: dict[str, list[str]] = {}
    if rs.rename is not None and rs.rename.task_groups:
        for g, tasks in rs.rename.task_groups.items():
            have = [t for t in tasks if t in present]
            if have:
                groups[g] = have
                if len(have) < len(tasks):
                    warnings.append(
                        f"{es or '-'} / task group {g!r}: only {len(have)} of its {len(tasks)} tasks are loaded"
                    )
    if ALL_TASKS in groups:
        warnings.append(
            f"{es or '-'}: rename.yaml defines a task group named {ALL_TASKS!r}; it replaces ours"
        )
    else:
        groups[ALL_TASKS] = sorted(present)
    return groups


def _aggregate_rows(
    rs, tester, es, group, tasks, trs, alpha, confidence, rows, pairs, warnings, errors
) -> None:
    by_model: dict[str, dict[str, TaskResult]] = {}
    for r in trs:
        if r.task in tasks and r.n > 0:
            by_model.setdefault(r.model, {})[r.task] = r
    per_model = {m: {t: r.outcomes for t, r in d.items()} for m, d in by_model.items()}
    try:
        agg = balanced_aggregate(per_model)
    except FoundryError as exc:
        errors.append(f"{es or '-'} / {group}: aggregation failed: {exc}")
        return
    warnings += [f"{es or '-'} / {group}: {w}" for w in agg.warnings]
    budget = max(r.budget for d in by_model.values() for r in d.values())
    n_max = budget * len(tasks)  # tasks loaded for the group: fixed, does not move as rollouts arrive
    letters = _group_test(tester, es, group, agg.outcomes, n_max, alpha, pairs, errors)
    for m, arr in agg.outcomes.items():
        d = by_model[m]
        crashed = sum(
            sum(
                1
                for e in [e for e in d[t].episodes if not e.is_pending][: agg.min_n[m]]
                if e.status == "crashed"
            )
            for t in agg.common_tasks
        )
        policy_errors = sum(
            sum(
                1
                for e in [e for e in d[t].episodes if not e.is_pending][: agg.min_n[m]]
                if e.status == "policy_error"
            )
            for t in agg.common_tasks
        )
        pending = sum(d[t].pending for t in agg.common_tasks)
        rows.append(
            _row(
                es,
                m,
                group,
                group,
                len(arr),
                int(arr.sum()),
                crashed,
                pending,
                policy_errors,
                n_max,
                letters.get(m, "-"),
                "aggregate",
                confidence,
            )
        )


def _row(
    es, model, task, display, n, s, crashed, pending, policy_errors, budget, letters, kind, confidence
) -> Row:
    lo, hi = clopper_pearson(s, n, confidence)
    rate = s / n if n else float("nan")
    return Row(
        eval_set=es,
        model=model,
        task=task,
        n=n,
        successes=s,
        success_rate=rate,
        ci_low=lo,
        ci_high=hi,
        crashed=crashed,
        letters=letters,
        pending=pending,
        policy_errors=policy_errors,
        budget=budget,
        task_display=display,
        kind=kind,
    )
