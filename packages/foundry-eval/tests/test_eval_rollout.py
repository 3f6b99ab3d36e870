"""Rollout runner on the fake simulator: schema, outcomes (success/failure/crashed), workers, budget, videos, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from foundry_action.executor import ChunkExecutor
from foundry_core.errors import FoundryError
from foundry_eval.results import load_results
from foundry_eval.rollout.fake_task import (
    ConstantPolicy,
    CrashingPolicy,
    NaNPolicy,
    PointReach,
    WrongShapePolicy,
)
from foundry_eval.rollout.runner import episode_seed, run_rollouts
from foundry_eval.serving.codec import PolicyOutputError
from foundry_eval.serving.session import validate_chunk

EVAL_KEYS = {"skill_type", "scenario_index", "is_success", "is_pending", "total_time", "failure_message"}
TOP_KEYS = {
    "max_sample_size_per_model",
    "evaluations",
    "num_requested_evaluations",
    "num_evaluated",
    "num_success",
    "success_rate",
    "num_processes",
    "elapsed_time",
}


def _run(policy, tmp_path, episodes=4, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("timestamp", "2026-01-01T00-00-00")
    tasks = kw.pop("tasks", ["point_reach"])
    paths = run_rollouts(policy, tasks, episodes, tmp_path, kw.pop("model_name", "m"), **kw)
    return paths, [json.loads(p.read_text()) for p in paths]


def _outcomes(doc):
    return [{k: e[k] for k in sorted(EVAL_KEYS | {"seed"})} for e in doc["evaluations"]]


def test_random_policy_writes_valid_results(tmp_path):
    paths, (doc,) = _run("random", tmp_path, episodes=3)
    assert paths[0] == tmp_path / "m" / "PointReach" / "rollouts" / "2026-01-01T00-00-00" / "results.json"
    assert TOP_KEYS <= set(doc) and doc["max_sample_size_per_model"] == 3
    assert doc["num_requested_evaluations"] == doc["num_evaluated"] == 3 and doc["num_crashed"] == 0
    for i, e in enumerate(doc["evaluations"]):
        assert EVAL_KEYS <= set(e)
        assert e["scenario_index"] == i and e["seed"] == episode_seed(i) == i + 100 + 100_000_000
        assert (
            e["is_success"] is False
            and e["failure_message"] is None
            and e["total_time"] == pytest.approx(3.0)
        )
    rs = load_results(tmp_path)  # the loader of foundry_eval.results accepts it
    (tr,) = rs.results.values()
    assert (tr.model, tr.task, tr.n, tr.budget) == ("m", "PointReach", 3, 3)


def test_expert_succeeds_and_seed_flag(tmp_path):
    _, (doc,) = _run("expert", tmp_path, episodes=3, use_eval_seed=False)
    assert [e["is_success"] for e in doc["evaluations"]] == [True] * 3
    assert [e["seed"] for e in doc["evaluations"]] == [100, 101, 102]
    assert doc["success_rate"] == 1.0 and all(0 < e["total_time"] < 3.0 for e in doc["evaluations"])


@pytest.mark.parametrize(
    "policy, needle",
    [(NaNPolicy, "non-finite values (NaN/inf) in chunk rows [7]"), (WrongShapePolicy, "shape [8, 7]")],
)
def test_bad_policy_output_is_a_failure_not_a_crash(tmp_path, policy, needle):
    _, (doc,) = _run(policy, tmp_path, episodes=2, execute_steps=4)
    assert doc["num_crashed"] == 0
    for e in doc["evaluations"]:
        assert e["is_success"] is False
        assert e["failure_message"].startswith("policy error at t=") and needle in e["failure_message"]


def test_crashes_are_recorded_and_counted(tmp_path):
    _, (doc,) = _run(CrashingPolicy, tmp_path, episodes=2)
    assert doc["num_crashed"] == 2
    for e in doc["evaluations"]:
        assert e["is_success"] is False and e["total_time"] == 0.0
        assert (
            e["failure_message"].startswith("Traceback")
            and "ZeroDivisionError: policy bug" in e["failure_message"]
        )
    # a simulator exception in one episode: only that one crashes
    node = {"name": "point_reach", "crash_seeds": [episode_seed(1)]}
    _, (doc,) = _run("expert", tmp_path / "sim", episodes=3, tasks=[node])
    assert doc["num_crashed"] == 1 and [e["is_success"] for e in doc["evaluations"]] == [True, False, True]
    assert "SimulatedFailure: simulated solver failure" in doc["evaluations"][1]["failure_message"]


def test_two_workers_match_one(tmp_path):
    easy = [{"name": "point_reach", "success_dist": 0.1}]  # random succeeds sometimes: outcomes vary
    _, (one,) = _run("random", tmp_path / "a", episodes=6, workers=1, tasks=easy)
    _, (two,) = _run("random", tmp_path / "b", episodes=6, workers=2, tasks=easy)
    assert _outcomes(one) == _outcomes(two) and two["num_processes"] == 2
    assert len({(e["is_success"], e["total_time"]) for e in one["evaluations"]}) >= 2


def test_threads_per_worker_are_pinned_and_restored(tmp_path, monkeypatch):
    """``threads``: a policy's numbers depend on torch's thread count, so it can be pinned per worker."""
    import torch

    from foundry_eval.rollout import runner

    seen = []
    real = runner.Worker.run
    monkeypatch.setattr(runner.Worker, "run", lambda self, *a: (seen.append(torch.get_num_threads()), real(self, *a))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        _run("random", tmp_path, episodes=2, workers=1, threads=2)
        assert seen == [2, 2] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_budget_is_enforced(tmp_path):
    with pytest.raises(FoundryError, match="exceed max_sample_size_per_model=3"):
        _run("random", tmp_path, episodes=4, max_sample_size_per_model=3)
    _run("random", tmp_path, episodes=2, max_sample_size_per_model=3)
    with pytest.raises(FoundryError, match="already evaluated"):
        _run("random", tmp_path, episodes=1, max_sample_size_per_model=3, timestamp="2026-01-01T00-00-01")
    with pytest.raises(FoundryError, match="2 episodes already"):
        _run(
            "random",
            tmp_path,
            episodes=2,
            max_sample_size_per_model=3,
            start_index=2,
            timestamp="2026-01-02T00-00-00",
        )
    with pytest.raises(FoundryError, match="differs"):
        _run(
            "random",
            tmp_path,
            episodes=1,
            max_sample_size_per_model=4,
            start_index=2,
            timestamp="2026-01-03T00-00-00",
        )
    _run(
        "random",
        tmp_path,
        episodes=1,
        max_sample_size_per_model=3,
        start_index=2,
        timestamp="2026-01-04T00-00-00",
    )
    (tr,) = load_results(tmp_path).results.values()
    assert tr.n == 3 and len(tr.sources) == 2


def test_bad_arguments_fail_before_running(tmp_path):
    with pytest.raises(FoundryError, match="point_reach"):
        _run("random", tmp_path, tasks=["point_reahc"])
    with pytest.raises(FoundryError, match="cannot be sent to worker processes"):
        _run(lambda: ConstantPolicy(), tmp_path, workers=2)
    with pytest.raises(FoundryError, match="not a directory"):
        _run(str(tmp_path / "no_export"), tmp_path)
    assert not list(tmp_path.rglob("results.json"))


def test_videos_are_written(tmp_path):
    import av

    paths, _ = _run("expert", tmp_path, episodes=2, video=True, cameras=["scene", "top"], image_size=12)
    video = paths[0].parent / "PointReach" / "demonstration_1" / "recording.mp4"
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 2 and frames[0].shape == (12, 24, 3)
    paths, _ = _run("expert", tmp_path / "gif", episodes=3, video=True, video_format="gif", max_videos=1)
    assert [p.parent.name for p in paths[0].parent.rglob("recording.gif")] == ["demonstration_0"]


def test_receding_horizon_executor():
    policy = ConstantPolicy(chunk_size=8)
    executor = ChunkExecutor(policy, execute_steps=3)
    executor.reset(seed=1)
    env = PointReach()
    obs = env.reset(1)
    for _ in range(7):
        action = executor.step(obs)
        obs = env.step(action)
    assert policy.calls == 3 and policy.resets == 1  # steps 0-2, 3-5, 6
    with pytest.raises(PolicyOutputError, match=r"shape \[10\]"):
        validate_chunk(np.zeros(10, np.float32))
    with pytest.raises(PolicyOutputError, match="dtype"):
        validate_chunk(np.array([["a"] * 10]))


def test_cli_eval_run(tmp_path, cli_runner):
    from foundry_core.cli.main import build_cli

    args = [
        "eval",
        "run",
        "--policy",
        "expert",
        "--tasks",
        "point_reach",
        "--episodes",
        "2",
        "--out",
        str(tmp_path),
    ]
    result = cli_runner.invoke(build_cli(), args)
    assert result.exit_code == 0, result.output
    assert "PointReach: 2/2 successes, 0 crashed" in result.output
    # --cameras none renders nothing (it is not a camera called "none")
    import foundry_eval.rollout.runner as runner

    seen = []
    real = runner.run_rollouts
    runner.run_rollouts = lambda *a, **kw: seen.append(kw["cameras"]) or real(*a, **kw)
    try:
        for value in ("none", "scene,wrist"):
            result = cli_runner.invoke(build_cli(), [*args, "--cameras", value, "--out", str(tmp_path / value)])
            assert result.exit_code == 0 and "PointReach: 2/2 successes" in result.output, result.output
    finally:
        runner.run_rollouts = real
    assert seen == [[], ["scene", "wrist"]]
    result = cli_runner.invoke(build_cli(), ["eval", "run", "--tasks", "point_reach", "--episodes", "1"])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_cli_eval_run_where_every_episode_crashed_exits_non_zero(tmp_path, cli_runner, monkeypatch):
    """Before: ``0/2 successes`` and exit 0, the crashes hidden in results.json."""
    import foundry_eval.rollout.runner as runner
    from foundry_core.cli.main import build_cli

    real = runner.run_rollouts
    monkeypatch.setattr(runner, "run_rollouts", lambda policy, *a, **kw: real(CrashingPolicy, *a, **kw))
    args = ["eval", "run", "--policy", "expert", "--tasks", "point_reach", "--episodes", "2", "--out", str(tmp_path)]
    result = cli_runner.invoke(build_cli(), args)
    assert result.exit_code == 1, result.output
    assert "PointReach: 0/2 successes, 2 crashed" in result.output
    assert "crashed: scenario 0: ZeroDivisionError: policy bug" in result.output
    assert "2/2 episodes crashed (more than --max-crash-rate 0.05)" in result.output
    assert load_results(tmp_path)  # the results are still written
    allowed = cli_runner.invoke(build_cli(), [*args, "--max-crash-rate", "1", "--out", str(tmp_path / "b")])
    assert allowed.exit_code == 0 and "2 crashed" in allowed.output, allowed.output


# ----------------------------------------------------------------------------- episode metrics


class MeasuredReach(PointReach):
    """PointReach with ``episode_metrics()``: how far the point ended from its target."""

    def episode_metrics(self):
        return {"goal_distance": np.float32(np.linalg.norm(self._pos - self._target)), "steps": self._steps}


class BrokenMeasure(PointReach):
    def episode_metrics(self):
        return {"goal_distance": 1.0 / 0.0}


class NaNMeasure(PointReach):
    def episode_metrics(self):
        return {"goal_distance": float("nan")}


def _episode(env, policy_factory, scenario_index=0):
    from foundry_eval.rollout.runner import run_episode
    from foundry_eval.serving.session import InProcessClient, PolicySessions

    client = InProcessClient(PolicySessions(policy_factory, execute_steps=4))
    return run_episode(env, client, "PointReach", scenario_index, episode_seed(scenario_index))


def test_episode_metrics_are_recorded_where_the_task_measures():
    env = MeasuredReach(MeasuredReach.Config(cameras=[], time_limit_s=0.5))
    record = _episode(env, ConstantPolicy)  # holds its start pose: ends where it started
    start = np.random.default_rng(episode_seed(0)).uniform(-0.2, 0.2, size=(2, 2))  # PointReach.reset's draws
    assert record["is_success"] is False and record["failure_message"] is None
    assert record["metrics"] == {
        "goal_distance": pytest.approx(np.linalg.norm(start[0] - start[1])),
        "steps": 5.0,
    }
    assert type(record["metrics"]["goal_distance"]) is float  # numpy scalars become JSON numbers
    # a task without episode_metrics writes its record exactly as before
    plain = _episode(PointReach(PointReach.Config(cameras=[], time_limit_s=0.5)), ConstantPolicy)
    assert set(plain) == EVAL_KEYS | {"seed", "wall_time", "crashed"}


@pytest.mark.parametrize(
    ("env_cls", "needle"), [(BrokenMeasure, "ZeroDivisionError"), (NaNMeasure, "must be finite")]
)
def test_a_failing_metric_keeps_the_outcome_and_is_recorded(env_cls, needle, caplog):
    from foundry_eval.rollout.policies import ExpertPolicy

    env = env_cls(env_cls.Config(cameras=[]))
    with caplog.at_level("WARNING", logger="foundry_eval.rollout.runner"):
        record = _episode(env, lambda: ExpertPolicy(env))
    assert record["is_success"] is True and record["failure_message"] is None and not record["crashed"]
    assert "metrics" not in record
    assert record["metrics_error"].startswith("Traceback") and needle in record["metrics_error"]
    assert "PointReach scenario 0: episode_metrics() failed" in caplog.text


def test_crashed_episode_has_no_metrics():
    env = MeasuredReach(MeasuredReach.Config(cameras=[], crash_seeds=[episode_seed(0)]))
    record = _episode(env, ConstantPolicy)
    assert record["crashed"] and "SimulatedFailure" in record["failure_message"]
    assert "metrics" not in record and "metrics_error" not in record


def test_metrics_round_trip_through_results_json(tmp_path):
    from foundry_eval.results import results_path, write_results

    env = MeasuredReach(MeasuredReach.Config(cameras=[], time_limit_s=0.5))
    records = [_episode(env, ConstantPolicy, i) for i in range(3)]
    for r in records:
        r.pop("crashed")
    write_results(results_path(tmp_path, "m", "PointReach", "t0"), records, 3)
    (tr,) = load_results(tmp_path).results.values()
    assert [e.metrics for e in tr.episodes] == [r["metrics"] for r in records]
    assert len({e.metrics["goal_distance"] for e in tr.episodes}) == 3  # per episode, not one shared value


def test_cli_eval_run_says_when_metrics_failed(tmp_path, cli_runner, monkeypatch):
    from foundry_core.cli.main import build_cli

    monkeypatch.setattr(PointReach, "episode_metrics", BrokenMeasure.episode_metrics, raising=False)
    args = ["eval", "run", "--policy", "expert", "--tasks", "point_reach", "--episodes", "2"]
    result = cli_runner.invoke(build_cli(), [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output  # the evaluation itself is complete and true
    assert "PointReach: 2/2 successes, 0 crashed" in result.output
    said = "2 episode(s) without metrics (episode_metrics() failed), e.g. scenario 0: ZeroDivisionError"
    assert said in result.output
