"""results.json writer and loader: round trip, layout, statuses and every bad-input rule (REFERENCE §d.1)."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from foundry_core.errors import DataError
from foundry_eval.results import load_results, normalize_task_name, results_path, write_results


def _eps(task: str, outcomes, start: int = 0) -> list[dict]:
    return [
        {"skill_type": task, "scenario_index": start + i, "is_success": bool(o)}
        for i, o in enumerate(outcomes)
    ]


def test_results_path_layout(tmp_path):
    p = results_path(tmp_path, "m1", "PutMugOnSaucer", datetime(2026, 4, 18, 1, 2, 3))
    assert p == tmp_path / "m1" / "PutMugOnSaucer" / "rollouts" / "2026-04-18T01-02-03" / "results.json"
    with pytest.raises(DataError, match="model"):
        results_path(tmp_path, "a/b", "T", "x")


def test_write_then_load_round_trip(tmp_path):
    path = results_path(tmp_path, "m1", "PutMugOnSaucer", "2026-01-01T00-00-00")
    eps = _eps("PutMugOnSaucer", [1, 0, 1, 1])
    eps[1]["failure_message"] = "policy error at t=0.3 s: action contains NaN"
    eps[2] = dict(
        eps[2], is_success=False, failure_message="Traceback (most recent call last):\n  RuntimeError"
    )
    eps.append({"skill_type": "PutMugOnSaucer", "scenario_index": 9, "is_success": None, "is_pending": True})
    write_results(path, eps, 10, num_processes=2)
    doc = json.loads(path.read_text())
    assert doc["max_sample_size_per_model"] == 10 and doc["num_processes"] == 2
    assert doc["num_evaluated"] == 4 and doc["num_success"] == 2
    assert set(doc["evaluations"][0]) >= {"is_pending", "failure_message", "total_time"}
    assert not list(path.parent.glob(".results-*"))  # atomic write leaves no temp file

    rs = load_results(tmp_path)
    (tr,) = rs.results.values()
    assert (tr.model, tr.task, tr.budget) == ("m1", "PutMugOnSaucer", 10)
    assert (tr.n, tr.successes, tr.crashed, tr.policy_errors, tr.pending) == (4, 2, 1, 1, 1)
    assert tr.outcomes.tolist() == [True, False, False, True]
    assert [e.status for e in tr.episodes] == ["success", "policy_error", "crashed", "success", "pending"]
    assert any("policy error" in w and "NaN" in w for w in rs.warnings)  # explicit flag, not silent


@pytest.mark.parametrize(
    ("evals", "budget", "match"),
    [
        (_eps("T", [1] * 4), 3, "exceed max_sample_size_per_model"),
        (_eps("T", [1]) + _eps("T", [0]), 5, "repeats"),
        ([{"skill_type": "T", "scenario_index": 0}], 5, "missing key"),
        ([{"skill_type": "T", "scenario_index": 0, "is_success": "yes"}], 5, "is_success"),
        (
            [{"skill_type": "T", "scenario_index": 0, "is_success": True, "total_time": float("nan")}],
            5,
            "JSON",
        ),
        (
            [dict(_eps("T", [0])[0], metrics={"goal_distance": float("nan")})],
            5,
            r"metrics\.goal_distance is nan",
        ),
        (
            [dict(_eps("T", [0])[0], metrics={"goal_distance": "far"})],
            5,
            r"metrics\.goal_distance must be a number",
        ),
        (
            [dict(_eps("T", [0])[0], metrics=[0.1])],
            5,
            r"evaluations\[0\]\.metrics: metrics must be an object",
        ),
        ([dict(_eps("T", [0])[0], metrics_error=3)], 5, "metrics_error must be a string"),
    ],
)
def test_writer_rejects_bad_input(tmp_path, evals, budget, match):
    with pytest.raises(DataError, match=match):
        write_results(results_path(tmp_path, "m", "T", "t0"), evals, budget)


def _raw(tmp_path, rel: str, doc: dict) -> None:
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc))


def test_metrics_round_trip_and_metric_errors_are_warned(tmp_path):
    eps = _eps("ReachTarget", [0, 1, 0])
    eps[0]["metrics"] = {"goal_distance": np.float32(0.0625), "distractor_distance": 0.2, "tcp_height": 0.03}
    eps[1]["metrics"] = {"goal_distance": 0.01}
    eps[2]["metrics_error"] = "Traceback (most recent call last):\n  ...\nKeyError: 'yellow'\n"
    path = write_results(results_path(tmp_path, "m", "ReachTarget", "t0"), eps, 3)
    written = json.loads(path.read_text())["evaluations"]
    assert written[0]["metrics"] == {"goal_distance": 0.0625, "distractor_distance": 0.2, "tcp_height": 0.03}
    assert "metrics" not in written[2] and "KeyError" in written[2]["metrics_error"]
    rs = load_results(tmp_path)
    (tr,) = rs.results.values()
    assert [e.metrics for e in tr.episodes] == [written[0]["metrics"], {"goal_distance": 0.01}, None]
    assert tr.episodes[2].metrics_error.endswith("KeyError: 'yellow'\n")
    # a failed measurement changes no count, and it is said, not silently dropped
    assert (tr.n, tr.successes, tr.crashed, tr.policy_errors) == (3, 1, 0, 0)
    (warning,) = [w for w in rs.warnings if "episode_metrics() failed" in w]
    assert "1 episode(s) without metrics" in warning and "scenario 2" in warning and "KeyError" in warning


def test_loader_rejects_malformed_metrics_naming_file_and_field(tmp_path):
    ep = dict(_eps("T", [1])[0], metrics={"goal_distance": None})
    _raw(tmp_path, "m/T/rollouts/t0/results.json", {"max_sample_size_per_model": 1, "evaluations": [ep]})
    with pytest.raises(
        DataError, match=r"t0/results\.json: evaluations\[0\]\.metrics\.goal_distance must be a number"
    ):
        load_results(tmp_path)


def test_loader_errors_name_the_file(tmp_path):
    _raw(tmp_path, "m/T/rollouts/t0/results.json", {"evaluations": _eps("T", [1])})
    with pytest.raises(DataError, match=r"results\.json: missing required 'max_sample_size_per_model'"):
        load_results(tmp_path)


def test_loader_budget_overflow_and_conflict(tmp_path):
    _raw(
        tmp_path,
        "m/T/rollouts/t0/results.json",
        {"max_sample_size_per_model": 3, "evaluations": _eps("T", [1, 1])},
    )
    _raw(
        tmp_path,
        "m/T/rollouts/t1/results.json",
        {"max_sample_size_per_model": 3, "evaluations": _eps("T", [0, 0], 2)},
    )
    with pytest.raises(DataError, match="more than max_sample_size_per_model=3"):
        load_results(tmp_path)
    _raw(
        tmp_path,
        "m/T/rollouts/t1/results.json",
        {"max_sample_size_per_model": 4, "evaluations": _eps("T", [0], 2)},
    )
    with pytest.raises(DataError, match="conflicts"):
        load_results(tmp_path)
    _raw(
        tmp_path,
        "m/T/rollouts/t1/results.json",
        {"max_sample_size_per_model": 3, "evaluations": _eps("T", [0], 1)},
    )
    with pytest.raises(DataError, match="duplicates task T scenario 1"):
        load_results(tmp_path)
    _raw(
        tmp_path,
        "m/T/rollouts/t1/results.json",
        {"max_sample_size_per_model": 3, "evaluations": _eps("T", [0], 2)},
    )
    (tr,) = load_results(tmp_path).results.values()
    assert tr.n == 3 and len(tr.sources) == 2  # merged in timestamp order


def test_loader_layout_and_old_names(tmp_path):
    _raw(tmp_path, "m/T/results.json", {"max_sample_size_per_model": 3, "evaluations": []})
    with pytest.raises(DataError, match="not in the layout"):
        load_results(tmp_path)
    (tmp_path / "m/T/results.json").unlink()
    _raw(tmp_path, "m/T/rollouts/t0/results-2024.json", {"max_sample_size_per_model": 3, "evaluations": []})
    with pytest.raises(DataError, match="old-style"):
        load_results(tmp_path)


def test_null_success_statuses_and_snake_case(tmp_path):
    evs = [
        {"skill_type": "put_mug_on_saucer", "scenario_index": 0, "is_success": None},  # crashed
        {"skill_type": "put_mug_on_saucer", "scenario_index": 1, "is_success": None, "is_pending": True},
        {"skill_type": "put_mug_on_saucer", "scenario_index": 2, "is_success": True},
    ]
    _raw(tmp_path, "E/m/mug/rollouts/t0/results.json", {"max_sample_size_per_model": 5, "evaluations": evs})
    rs = load_results(tmp_path)
    tr = rs.results[("E/m", "PutMugOnSaucer")]
    assert tr.eval_set == "E" and (tr.n, tr.successes, tr.crashed, tr.pending) == (2, 1, 1, 1)
    assert any("pending" in w for w in rs.warnings)
    assert normalize_task_name("PutMugOnSaucer") == "PutMugOnSaucer"


def test_unknown_selection_is_an_error(tmp_path):
    write_results(results_path(tmp_path, "m", "T", "t0"), _eps("TurnMugRightsideUp", [1]), 5)
    with pytest.raises(DataError, match="unknown task 'TurnMugRightSideUp'.*did you mean"):
        load_results(tmp_path, tasks=["TurnMugRightSideUp"])
    with pytest.raises(DataError, match="unknown model 'x'.*known models: m"):
        load_results(tmp_path, models=["x"])


def test_load_released_results(shared_data):
    rs = load_results(shared_data / "vla_foundry" / "eval_results")
    assert len(rs.results) == 390 and rs.eval_sets == ["CS", "OSS"]
    assert len(rs.tasks) == 19 and all(t in rs.rename.tasks for t in rs.tasks)
    assert all(r.budget == 200 and r.n == 200 and r.pending == 0 for r in rs.results.values())
    assert sum(r.crashed for r in rs.results.values()) == 196
    # folders named with display names (CS/LBM-*/Mug→Saucer) still map to the PascalCase task
    assert rs.results[("CS/LBM-FT", "PutMugOnSaucer")].successes == 124
    # released files carry no metrics: they load as before, with none recorded and no metric warning
    assert all(e.metrics is None and e.metrics_error is None for r in rs.results.values() for e in r.episodes)
    assert not any("metrics" in w for w in rs.warnings)
    assert rs.display_task("TurnCupUpsideDown") == "Flip Cup Down"
    assert set(rs.rename.task_groups) == {"16 Main Tasks", "3 Unseen Tasks"}
