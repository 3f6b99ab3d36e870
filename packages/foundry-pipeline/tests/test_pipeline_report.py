"""The pipeline report's end-state aggregation: per (policy, task) medians of the episodes' metrics, how
often a policy ended nearer the named target, and the sentence that reads them next to the successes."""

from __future__ import annotations

import json

import pytest

from foundry_eval.results import Episode, TaskResult, load_results, results_path, write_results
from foundry_pipeline.report import _end_state_section, _success_distances, end_state_summary, end_state_table


def _ep(i: int, success: bool, metrics=None, error=None, pending=False, failure=None) -> Episode:
    return Episode("ReachTarget", i, success, pending, 1.0, failure, metrics, error)


def _reach(goal_cm: list[float], other_cm: list[float], successes: int) -> TaskResult:
    eps = [
        _ep(i, i < successes, {"goal_distance": g / 100, "distractor_distance": o / 100, "tcp_height": 0.02})
        for i, (g, o) in enumerate(zip(goal_cm, other_cm))
    ]
    return TaskResult(None, "vla", "ReachTarget", 20, eps)


def test_picked_the_named_disk_but_missed_it():
    # 4 of 5 episodes end nearer the named disk, one of them within 3 cm: right disk, imprecise
    r = _reach([1.0, 6.0, 6.5, 7.0, 20.0], [25.0, 18.0, 14.0, 19.0, 4.0], successes=1)
    s = end_state_summary(r, 0.03)
    assert (s["successes"], s["n"], s["measured"], s["metrics_failed"]) == (1, 5, 5, 0)
    assert (s["nearer_named"], s["compared"]) == (4, 5)
    assert s["median"] == {
        "goal_distance": pytest.approx(0.065),
        "distractor_distance": pytest.approx(0.18),
        "tcp_height": pytest.approx(0.02),
    }
    assert s["reading"] == (
        "1/5 successes; ended nearer the named target than the other one in 4/5; "
        "median final distance to the goal 6.5 cm; success needs < 3 cm."
    )
    # a policy that ignores the instruction: about half nearer the named disk
    s = end_state_summary(_reach([5.0, 20.0, 6.0, 22.0], [21.0, 4.0, 19.0, 5.0], successes=0), 0.03)
    assert (s["nearer_named"], s["compared"]) == (2, 4) and s["median"]["goal_distance"] == pytest.approx(
        0.13
    )


def test_crashed_pending_failed_and_unmeasured_episodes():
    eps = [
        _ep(0, False, {"goal_distance": 0.04}),  # no distractor: nothing to compare
        _ep(1, False, {"goal_distance": 0.10}),
        _ep(2, False, failure="Traceback (most recent call last):\n  SimFailure"),  # crashed: no metrics
        _ep(3, None, {"goal_distance": 9.0}, pending=True),  # pending: not in n, not in the medians
    ]
    s = end_state_summary(TaskResult(None, "scratch", "PushToTarget", 20, eps))
    assert (s["n"], s["measured"], s["metrics_failed"]) == (3, 2, 0) and "nearer_named" not in s
    assert s["median"] == {"goal_distance": pytest.approx(0.07)} and s["success_distance"] is None
    assert (
        s["reading"]
        == "0/3 successes; median final distance to the goal 7.0 cm; 1 crashed episode(s) not measured."
    )
    eps.append(_ep(4, False, error="Traceback (most recent call last):\nKeyError: 'yellow'\n"))
    s = end_state_summary(TaskResult(None, "scratch", "PushToTarget", 20, eps))
    assert s["metrics_failed"] == 1 and "the measurement failed in 1 episode(s)" in s["reading"]
    # a task without metrics has no row at all
    assert (
        end_state_summary(TaskResult(None, "vla", "StackBlocks", 20, [_ep(0, True), _ep(1, False)])) is None
    )


def test_table_and_section_from_results_files(tmp_path):
    rows = [
        {
            "skill_type": "ReachTarget",
            "scenario_index": i,
            "is_success": i == 0,
            "metrics": {"goal_distance": d, "distractor_distance": 0.2, "tcp_height": 0.03},
        }
        for i, d in enumerate([0.01, 0.06, 0.07])
    ]
    write_results(results_path(tmp_path, "vla", "ReachTarget", "t0"), rows, 3)
    plain = [{"skill_type": "StackBlocks", "scenario_index": 0, "is_success": False}]
    write_results(results_path(tmp_path, "vla", "StackBlocks", "t0"), plain, 1)
    rs = load_results(tmp_path)
    table = end_state_table(rs.results.values(), _success_distances(set(rs.tasks)))
    assert list(table) == ["ReachTarget"] and list(table["ReachTarget"]) == ["vla"]
    s = table["ReachTarget"]["vla"]
    assert (s["successes"], s["nearer_named"], s["success_distance"]) == (1, 3, 0.03)
    json.dumps(table, allow_nan=False)  # goes into summary.json as it is
    html = "\n".join(_end_state_section(table))
    assert "<td>ReachTarget</td><td>vla</td><td>1/3</td><td>6.0</td><td>3/3</td>" in html
    assert "success needs &lt; 3 cm" in html and "distractor_distance 0.200, tcp_height 0.030" in html
    assert _end_state_section({}) == []
