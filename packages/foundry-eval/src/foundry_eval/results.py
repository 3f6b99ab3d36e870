"""``results.json``: the evaluation results schema of the reference system (LBM Eval), written and loaded.

Layout: ``{root}/[{eval_set}/]{model}/{Task}/rollouts/{timestamp}/results.json``. The task identity comes
from each episode's ``skill_type`` (normalised to PascalCase), not from the folder name: the released
results use display names such as ``Mug→Saucer`` for some folders.

Episode status: ``success``; ``failure``; ``crashed`` (an exception in the simulator or the policy:
``is_success`` false with a Python traceback in ``failure_message``, or ``is_success`` null while not
pending) counts as a failure in ``n`` and is reported separately; ``policy_error`` (``is_success`` false
with any other ``failure_message``, e.g. the runner's "policy error: NaN action") also counts as a
failure and is reported separately; ``pending`` is excluded from ``n`` and reported.

Optional per-episode end-state measurements (written by the rollout runner for tasks with
``episode_metrics()``): ``metrics`` ``{name: finite number}`` (e.g. ``goal_distance`` in metres), or
``metrics_error`` (the traceback of a measurement that failed; the episode's outcome stands). They
never change how an episode counts; the loader validates them and warns about ``metrics_error``.

No torch here (the statistics must run anywhere). Test: ``uv run pytest packages/foundry-eval/tests/test_eval_results.py``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from foundry_core.errors import DataError, did_you_mean

RESULTS_NAME = "results.json"
#: How a crash (exception in simulator or policy) is told from other failure messages.
TRACEBACK_MARK = "Traceback (most recent call last)"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H-%M-%S"
_REQUIRED_EPISODE_KEYS = ("skill_type", "scenario_index", "is_success")


# ----------------------------------------------------------------------------------------------- writing


def results_path(root: str | Path, model: str, task: str, timestamp: str | datetime) -> Path:
    """``{root}/{model}/{task}/rollouts/{timestamp}/results.json`` (timestamp: str or datetime)."""
    if isinstance(timestamp, datetime):
        timestamp = timestamp.strftime(TIMESTAMP_FORMAT)
    for what, value in (("model", model), ("task", task), ("timestamp", timestamp)):
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise DataError(f"results_path: {what} {value!r} must be a non-empty single path component")
    return Path(root) / model / task / "rollouts" / timestamp / RESULTS_NAME


def timestamp_now() -> str:
    """The current UTC time in the folder format of the layout (``2026-04-18T00-00-00``)."""
    return datetime.now(UTC).strftime(TIMESTAMP_FORMAT)


def normalize_task_name(name: str) -> str:
    """``put_mug_on_saucer`` → ``PutMugOnSaucer``; PascalCase names are returned unchanged."""
    if "_" in name or name.islower():
        return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)
    return name


def _check_episode(ep: Mapping[str, Any], where: str) -> dict[str, Any]:
    missing = [k for k in _REQUIRED_EPISODE_KEYS if k not in ep]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")
    if not isinstance(ep["skill_type"], str) or not ep["skill_type"]:
        raise DataError(f"{where}: skill_type must be a non-empty string, got {ep['skill_type']!r}")
    idx = ep["scenario_index"]
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise DataError(f"{where}: scenario_index must be a non-negative int, got {idx!r}")
    if ep["is_success"] is not None and not isinstance(ep["is_success"], bool):
        raise DataError(f"{where}: is_success must be true, false or null, got {ep['is_success']!r}")
    pending = ep.get("is_pending")
    if pending is not None and not isinstance(pending, bool):
        raise DataError(f"{where}: is_pending must be a bool, got {pending!r}")
    msg = ep.get("failure_message")
    if msg is not None and not isinstance(msg, str):
        raise DataError(f"{where}: failure_message must be a string or null, got {type(msg).__name__}")
    total = ep.get("total_time")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int | float)):
        raise DataError(f"{where}: total_time must be a number or null, got {total!r}")
    error = ep.get("metrics_error")
    if error is not None and not isinstance(error, str):
        raise DataError(f"{where}: metrics_error must be a string or null, got {type(error).__name__}")
    out = dict(ep)
    if "metrics" in ep:
        out["metrics"] = check_metrics(ep["metrics"], f"{where}.metrics")
    return out


def check_metrics(metrics: Any, where: str) -> dict[str, float]:
    """An episode's ``metrics`` as ``{name: float}``; anything else is one error naming ``where``.

    Non-finite values are errors too: JSON cannot hold them, and a NaN distance measures nothing.
    """
    if not isinstance(metrics, Mapping):
        raise DataError(f"{where}: metrics must be an object {{name: number}}, got {type(metrics).__name__}")
    out = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: metric names must be non-empty strings, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise DataError(f"{where}.{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise DataError(f"{where}.{name} is {float(value)} (metrics must be finite)")
        out[name] = float(value)
    return out


def write_results(
    path: str | Path, evaluations: list[dict], max_sample_size_per_model: int, **extra: Any
) -> Path:
    """Validate and atomically write one ``results.json``; returns its path.

    ``evaluations``: dicts with ``skill_type``, ``scenario_index``, ``is_success`` (bool, or None while
    pending/crashed) and optionally ``is_pending`` (default False), ``total_time`` (simulated seconds,
    default None), ``failure_message`` (default None; a policy NaN or simulator exception goes here with
    ``is_success: false``; a Python traceback there marks a crash, any other message a policy error,
    and an ordinary failure such as a timeout leaves it None). ``max_sample_size_per_model`` is the pre-committed per-task budget; more
    episodes than that is an error. ``extra`` keys (``num_processes``, ``elapsed_time``, …) are written at
    the top level; ``num_evaluated``, ``num_success`` and ``success_rate`` are filled in when absent.
    """
    path = Path(path)
    if path.name != RESULTS_NAME:
        raise DataError(f"{path}: results files must be named {RESULTS_NAME}")
    if isinstance(max_sample_size_per_model, bool) or not isinstance(max_sample_size_per_model, int):
        raise DataError(
            f"{path}: max_sample_size_per_model must be an int, got {max_sample_size_per_model!r}"
        )
    if max_sample_size_per_model <= 0:
        raise DataError(f"{path}: max_sample_size_per_model must be positive")
    if len(evaluations) > max_sample_size_per_model:
        raise DataError(
            f"{path}: {len(evaluations)} evaluations exceed max_sample_size_per_model={max_sample_size_per_model}"
        )
    seen: set[tuple[str, int]] = set()
    episodes = []
    for i, ep in enumerate(evaluations):
        ep = _check_episode(ep, f"{path}: evaluations[{i}]")
        key = (ep["skill_type"], ep["scenario_index"])
        if key in seen:
            raise DataError(f"{path}: evaluations[{i}] repeats (skill_type, scenario_index) {key}")
        seen.add(key)
        total = ep.get("total_time")
        if isinstance(total, float) and not math.isfinite(total):
            raise DataError(f"{path}: evaluations[{i}].total_time is {total} (JSON cannot hold it)")
        episodes.append(
            {
                "skill_type": ep["skill_type"],
                "scenario_index": ep["scenario_index"],
                "is_success": ep["is_success"],
                "total_time": total,
                "failure_message": ep.get("failure_message"),
                "is_pending": bool(ep.get("is_pending") or False),
                **{k: v for k, v in ep.items() if k not in _EPISODE_KEYS},
            }
        )
    done = [e for e in episodes if not e["is_pending"]]
    n_success = sum(1 for e in done if e["is_success"] is True)
    doc: dict[str, Any] = {"max_sample_size_per_model": max_sample_size_per_model, **extra}
    doc.setdefault("num_evaluated", len(done))
    doc.setdefault("num_success", n_success)
    doc.setdefault("success_rate", n_success / len(done) if done else 0.0)
    doc["evaluations"] = episodes
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_EPISODE_KEYS = ("skill_type", "scenario_index", "is_success", "total_time", "failure_message", "is_pending")


# ----------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Episode:
    """One evaluated scenario. ``status`` is success / failure / crashed / policy_error / pending."""

    task: str
    scenario_index: int
    is_success: bool | None
    is_pending: bool
    total_time: float | None
    failure_message: str | None
    #: End-state measurements of the task (``episode_metrics()``); None when not recorded.
    metrics: dict[str, float] | None = None
    #: Why the measurements are missing when the task's ``episode_metrics()`` failed.
    metrics_error: str | None = None

    @property
    def status(self) -> str:
        if self.is_pending:
            return "pending"
        if self.is_success is None:
            return "crashed"
        if self.is_success:
            return "success"
        if self.failure_message:
            return "crashed" if TRACEBACK_MARK in self.failure_message else "policy_error"
        return "failure"


@dataclass
class TaskResult:
    """All episodes of one (model, task), in stored order (files sorted by timestamp)."""

    eval_set: str | None
    model: str
    task: str
    budget: int
    episodes: list[Episode] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)

    @property
    def model_key(self) -> str:
        return f"{self.eval_set}/{self.model}" if self.eval_set else self.model

    @property
    def outcomes(self) -> np.ndarray:
        """Bool array of finished episodes (crashed → False), stored order; pending excluded."""
        return np.array([e.status == "success" for e in self.episodes if not e.is_pending], dtype=bool)

    @property
    def n(self) -> int:
        return sum(1 for e in self.episodes if not e.is_pending)

    @property
    def successes(self) -> int:
        return sum(1 for e in self.episodes if e.status == "success")

    @property
    def crashed(self) -> int:
        return sum(1 for e in self.episodes if e.status == "crashed")

    @property
    def policy_errors(self) -> int:
        return sum(1 for e in self.episodes if e.status == "policy_error")

    @property
    def pending(self) -> int:
        return sum(1 for e in self.episodes if e.is_pending)


@dataclass
class Rename:
    """``rename.yaml``: display names and task groups (applied only if it sits in the loaded root)."""

    models: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    task_groups: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Rename:
        import yaml

        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise DataError(f"{path}: expected a mapping with models/tasks/task_groups")
        unknown = set(doc) - {"models", "tasks", "task_groups"}
        if unknown:
            raise DataError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
        groups = doc.get("task_groups") or {}
        for name, tasks in groups.items():
            if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
                raise DataError(f"{path}: task_groups.{name} must be a list of task names")
        return cls(
            models={str(k): str(v) for k, v in (doc.get("models") or {}).items()},
            tasks={str(k): str(v) for k, v in (doc.get("tasks") or {}).items()},
            task_groups={str(k): [str(t) for t in v] for k, v in groups.items()},
        )

    def task_name(self, task: str) -> str:
        return self.tasks.get(task, task)


@dataclass
class ResultSet:
    """Everything loaded from one root: ``results[(model_key, task)]``, plus rename and warnings."""

    root: Path
    results: dict[tuple[str, str], TaskResult]
    rename: Rename | None
    warnings: list[str] = field(default_factory=list)

    @property
    def eval_sets(self) -> list[str | None]:
        return sorted({r.eval_set for r in self.results.values()}, key=lambda s: s or "")

    @property
    def models(self) -> list[str]:
        return sorted({r.model_key for r in self.results.values()})

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.results.values()})

    def display_task(self, task: str) -> str:
        return self.rename.task_name(task) if self.rename else task


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read results: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: top level must be an object")
    if "max_sample_size_per_model" not in doc:
        raise DataError(
            f"{path}: missing required 'max_sample_size_per_model' (the pre-committed per-task budget; "
            "sequential tests are invalid without it)"
        )
    budget = doc["max_sample_size_per_model"]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise DataError(f"{path}: max_sample_size_per_model must be a positive int, got {budget!r}")
    if not isinstance(doc.get("evaluations"), list):
        raise DataError(f"{path}: missing or malformed 'evaluations' list")
    return doc


def _split_path(root: Path, path: Path) -> tuple[str | None, str, str]:
    parts = path.relative_to(root).parts
    if len(parts) == 5 and parts[2] == "rollouts":
        return None, parts[0], parts[3]
    if len(parts) == 6 and parts[3] == "rollouts":
        return parts[0], parts[1], parts[4]
    raise DataError(
        f"{path}: not in the layout {{root}}/[{{eval_set}}/]{{model}}/{{Task}}/rollouts/{{timestamp}}/results.json"
    )


def load_results(
    root: str | Path, *, models: Iterable[str] | None = None, tasks: Iterable[str] | None = None
) -> ResultSet:
    """Load every ``results.json`` under ``root`` (rules in REFERENCE §d.1); errors name the file.

    ``models`` selects by model name or ``eval_set/model``; ``tasks`` by PascalCase name or display
    name. Unknown names in either are errors (with suggestions).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: results root is not a directory")
    old = sorted(p for p in root.rglob("results-*.json"))
    if old:
        raise DataError(f"{old[0]}: old-style results-*.json names are not supported; rename to results.json")
    files = sorted(root.rglob(RESULTS_NAME))
    if not files:
        raise DataError(f"{root}: no results.json files found")
    rename_path = root / "rename.yaml"
    rename = Rename.load(rename_path) if rename_path.exists() else None

    folders: dict[tuple[str | None, str, Path], list[tuple[str, Path]]] = {}
    for path in files:
        eval_set, model, stamp = _split_path(root, path)
        folders.setdefault((eval_set, model, path.parent.parent), []).append((stamp, path))

    results: dict[tuple[str, str], TaskResult] = {}
    for (eval_set, model, _rollouts), stamped in folders.items():
        budget_of: dict[Path, int] = {}
        seen: dict[tuple[str, int], Path] = {}
        for _stamp, path in sorted(stamped):
            doc = _read_json(path)
            budget_of[path] = doc["max_sample_size_per_model"]
            for i, raw in enumerate(doc["evaluations"]):
                if not isinstance(raw, dict):
                    raise DataError(f"{path}: evaluations[{i}] is not an object")
                ep = _check_episode(raw, f"{path}: evaluations[{i}]")
                task = normalize_task_name(ep["skill_type"])
                key = (task, ep["scenario_index"])
                if key in seen:
                    raise DataError(
                        f"{path}: evaluations[{i}] duplicates task {task} scenario {key[1]} (also in {seen[key]})"
                    )
                seen[key] = path
                mk = f"{eval_set}/{model}" if eval_set else model
                tr = results.get((mk, task))
                if tr is None:
                    tr = results[(mk, task)] = TaskResult(
                        eval_set, model, task, doc["max_sample_size_per_model"]
                    )
                if tr.budget != doc["max_sample_size_per_model"]:
                    raise DataError(
                        f"{path}: max_sample_size_per_model={doc['max_sample_size_per_model']} conflicts with "
                        f"{tr.budget} in {tr.sources[0]} for model {mk}, task {task}"
                    )
                if path not in tr.sources:
                    tr.sources.append(path)
                total = ep.get("total_time")
                tr.episodes.append(
                    Episode(
                        task=task,
                        scenario_index=ep["scenario_index"],
                        is_success=ep["is_success"],
                        is_pending=bool(ep.get("is_pending") or False),
                        total_time=None if total is None else float(total),
                        failure_message=ep.get("failure_message"),
                        metrics=ep.get("metrics"),
                        metrics_error=ep.get("metrics_error"),
                    )
                )
    for tr in results.values():
        if len(tr.episodes) > tr.budget:
            raise DataError(
                f"{tr.sources[0]}: model {tr.model_key}, task {tr.task} has {len(tr.episodes)} episodes, "
                f"more than max_sample_size_per_model={tr.budget}"
            )
    rs = ResultSet(root=root, results=results, rename=rename)
    _select(rs, models, tasks)
    if rename is not None and rename.tasks:
        unknown = sorted(set(rs.tasks) - set(rename.tasks))
        if unknown:
            rs.warnings.append(f"task(s) not listed in {rename_path}: {', '.join(unknown)}")
    for tr in rs.results.values():
        if tr.pending:
            rs.warnings.append(f"{tr.model_key} / {tr.task}: {tr.pending} pending episode(s) excluded from n")
        if tr.policy_errors:
            first = next(e for e in tr.episodes if e.status == "policy_error")
            rs.warnings.append(
                f"{tr.model_key} / {tr.task}: {tr.policy_errors} episode(s) ended by a policy error (counted as "
                f"failures), e.g. scenario {first.scenario_index}: {first.failure_message.strip()[:120]!r}"
            )
        failed = [e for e in tr.episodes if e.metrics_error]
        if failed:
            last_line = failed[0].metrics_error.strip().splitlines()[-1][:120]
            rs.warnings.append(
                f"{tr.model_key} / {tr.task}: {len(failed)} episode(s) without metrics (the task's "
                f"episode_metrics() failed), e.g. scenario {failed[0].scenario_index}: {last_line!r}"
            )
    return rs


def _select(rs: ResultSet, models: Iterable[str] | None, tasks: Iterable[str] | None) -> None:
    if models is not None:
        wanted = list(models)
        names = {r.model for r in rs.results.values()} | {r.model_key for r in rs.results.values()}
        for m in wanted:
            if m not in names:
                hint = did_you_mean(m, names) or f"; known models: {', '.join(sorted(names))}"
                raise DataError(f"unknown model {m!r} under {rs.root}" + hint)
        rs.results = {k: r for k, r in rs.results.items() if r.model in wanted or r.model_key in wanted}
    if tasks is not None:
        display = {rs.display_task(t): t for t in rs.tasks}
        chosen = set()
        for t in tasks:
            canon = normalize_task_name(t)
            if canon in rs.tasks:
                chosen.add(canon)
            elif t in display:
                chosen.add(display[t])
            else:
                hint = did_you_mean(canon, rs.tasks) or did_you_mean(t, display)
                raise DataError(
                    f"unknown task {t!r} under {rs.root}" + (hint or f"; known tasks: {', '.join(rs.tasks)}")
                )
        rs.results = {k: r for k, r in rs.results.items() if r.task in chosen}
