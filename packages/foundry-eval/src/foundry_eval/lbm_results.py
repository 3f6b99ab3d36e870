"""LBM Eval's own output (``results-<timestamp>.json``) -> the released ``results.json`` tree.

LBM Eval's ``evaluate`` writes one file for a whole run (LBM_EVAL.md): ``evaluations`` (``skill_type``,
``scenario_index``, ``is_pending``, ``total_time``, ``is_success``, ``failure_message``),
``num_processes``, ``elapsed_time`` and derived totals. ``foundry eval compare`` reads the tree layout
``{root}/{eval_set}/{model}/{Task}/rollouts/{timestamp}/results.json`` with a per-task budget
(``max_sample_size_per_model``), so ``import_lbm_results`` splits the run by task and writes one
``results.json`` per task. Why a budget is needed and where it comes from: sequential tests are valid
only against a pre-committed per-task sample size; an LBM run commits to its requested scenarios, so the
default budget of a task is the number of evaluations the file lists for it (pending ones included).

Validation is that of :mod:`foundry_eval.results` (one error naming the file and the field); pending
evaluations are kept as pending (excluded from ``n`` by the loader) and counted in the summary; derived
totals that disagree with the evaluations are reported, not trusted.
Test: ``uv run pytest packages/foundry-eval/tests/test_eval_lbm_results.py``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from foundry_core.errors import DataError
from foundry_eval.results import _check_episode, normalize_task_name, results_path, write_results

#: ``results-<timestamp>.json``; the timestamp becomes the rollouts folder name.
LBM_NAME = re.compile(r"^results-(?P<stamp>[^/\\]+)\.json$")
_TOTALS = ("num_requested_evaluations", "num_evaluated", "num_success")


@dataclass
class ImportSummary:
    """What ``import_lbm_results`` wrote: per task the file, episodes, pending count and budget."""

    source: Path
    files: dict[str, Path] = field(default_factory=dict)
    episodes: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    budgets: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"imported {self.source}: {len(self.files)} task(s)"]
        for task, path in self.files.items():
            pending = f", {self.pending[task]} pending" if self.pending[task] else ""
            out.append(
                f"  {task}: {self.episodes[task]} evaluations{pending} (budget {self.budgets[task]}) -> {path}"
            )
        out += [f"warning: {w}" for w in self.warnings]
        return out


def read_lbm_results(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Validated (document, evaluations, warnings) of one LBM Eval results file; errors name file and field."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read LBM Eval results: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: top level must be an object")
    evaluations = doc.get("evaluations")
    if not isinstance(evaluations, list):
        raise DataError(f"{path}: missing or malformed 'evaluations' list")
    checked, seen = [], {}
    for i, raw in enumerate(evaluations):
        where = f"{path}: evaluations[{i}]"
        if not isinstance(raw, dict):
            raise DataError(f"{where} is not an object")
        ep = _check_episode(raw, where)
        if not isinstance(ep.get("is_pending"), bool):
            raise DataError(
                f"{where}: is_pending must be a bool (LBM Eval always writes it), got {ep.get('is_pending')!r}"
            )
        if ep["is_pending"] and ep["is_success"] is not None:
            raise DataError(
                f"{where}: a pending evaluation has is_success {ep['is_success']!r} (expected null)"
            )
        key = (normalize_task_name(ep["skill_type"]), ep["scenario_index"])
        if key in seen:
            raise DataError(
                f"{where} repeats task {key[0]} scenario {key[1]} (also evaluations[{seen[key]}])"
            )
        seen[key] = i
        checked.append(ep)
    for name in (*_TOTALS, "num_processes"):
        value = doc.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise DataError(f"{path}: {name} must be a non-negative int or null, got {value!r}")
    for name in ("elapsed_time", "success_rate"):
        value = doc.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DataError(f"{path}: {name} must be a number or null, got {value!r}")
    done = [e for e in checked if not e["is_pending"]]
    actual = {
        "num_requested_evaluations": len(checked),
        "num_evaluated": len(done),
        "num_success": sum(1 for e in done if e["is_success"] is True),
    }
    warnings = [
        f"{path}: {k} says {doc[k]}, the evaluations give {v}"
        for k, v in actual.items()
        if doc.get(k) is not None and doc[k] != v
    ]
    return doc, checked, warnings


def import_lbm_results(
    path: str | Path, *, model: str, eval_set: str | None, out: str | Path, budget: int | None = None
) -> ImportSummary:
    """Write ``{out}/[{eval_set}/]{model}/{Task}/rollouts/{timestamp}/results.json`` for every task of
    the LBM Eval results file ``path``; an existing results.json is never overwritten."""
    path = Path(path)
    match = LBM_NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: expected an LBM Eval results file named results-<timestamp>.json")
    doc, evaluations, warnings = read_lbm_results(path)
    if not evaluations:
        raise DataError(f"{path}: 'evaluations' is empty: nothing to import")
    if budget is not None and (isinstance(budget, bool) or budget <= 0):
        raise DataError(f"--max-sample-size must be a positive int, got {budget!r}")
    root = Path(out) / eval_set if eval_set else Path(out)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for ep in evaluations:
        by_task.setdefault(normalize_task_name(ep["skill_type"]), []).append(ep)
    targets = {task: results_path(root, model, task, match["stamp"]) for task in by_task}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing:
        raise DataError(f"{existing[0]}: already exists (imported before?); not overwriting it")
    summary = ImportSummary(source=path, warnings=warnings)
    extra = {k: doc[k] for k in ("num_processes", "elapsed_time") if doc.get(k) is not None}
    for task, episodes in sorted(by_task.items()):  # check every task before writing any
        if budget is not None and len(episodes) > budget:
            raise DataError(
                f"{path}: task {task} has {len(episodes)} evaluations, more than --max-sample-size {budget}"
            )
    for task, episodes in sorted(by_task.items()):
        task_budget = budget or len(episodes)
        rows = [{**ep, "skill_type": task} for ep in episodes]
        summary.files[task] = write_results(
            targets[task], rows, task_budget, **extra, imported_from=str(path)
        )
        summary.episodes[task] = len(episodes)
        summary.pending[task] = sum(1 for e in episodes if e["is_pending"])
        summary.budgets[task] = task_budget
    return summary


@click.command("import-lbm")
@click.argument("results_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="Model name (the folder under the eval set).")
@click.option("--eval-set", default=None, help="Eval set folder (e.g. OSS); omit for the flat layout.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Results tree root."
)
@click.option(
    "--max-sample-size",
    type=int,
    default=None,
    help="Pre-committed per-task budget (default: the evaluations the file lists per task).",
)
def import_lbm_command(
    results_file: Path, model: str, eval_set: str | None, out: Path, max_sample_size: int | None
) -> None:
    """Import LBM Eval's RESULTS_FILE (results-<timestamp>.json) into a results tree for `foundry eval compare`."""
    summary = import_lbm_results(
        results_file, model=model, eval_set=eval_set, out=out, budget=max_sample_size
    )
    for line in summary.lines():
        click.echo(line)
