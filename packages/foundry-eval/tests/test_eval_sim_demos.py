"""Tests of scripted-expert demo generation into the Zarr episode store (``foundry eval demos``)."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_core.errors import ConfigError
from foundry_eval.sim.demos import generate_demos


def test_generate_demos_writes_expert_episodes(tmp_path):
    from foundry_action.store import open_store

    node = {"name": "push_to_target", "cameras": ["scene"], "image_size": 16}
    seen = []
    summary = generate_demos(
        node, episodes=2, out=tmp_path / "demos", seed_start=10, on_episode=lambda r, n: seen.append(n)
    )
    assert (summary.stored, summary.attempted, summary.successes, seen) == (2, 2, 2, [1, 2])
    store = open_store(tmp_path / "demos")
    assert len(store) == 2 and store.fps == pytest.approx(10.0)
    assert store.cameras == {"scene": (16, 16)} and set(store.fields) == {"action", "proprio"}
    for i, seed in enumerate((10, 11)):
        meta = store.meta(i)
        assert meta["task"] == "push_to_target" and meta["success"] is True and meta["seed"] == seed
        assert meta["source"] == "drake-expert" and meta["instructions"][0]
        ep = store.episode(i)
        T = len(ep["action"])
        assert 5 < T <= 150 and ep["proprio"].shape == (T, 10) and ep["camera/scene"].shape == (T, 16, 16, 3)
        # proprio at t is the state before the action at t: the first one is the reset pose.
        assert np.all(np.isfinite(ep["action"])) and ep["proprio"][0, 2] > 0.15


def test_failures_dropped_or_kept(tmp_path):
    from foundry_action.store import open_store

    node = {"name": "stack_blocks", "cameras": [], "time_limit_s": 0.3}
    with pytest.raises(ConfigError, match="only 0 of 1 episodes succeeded"):
        generate_demos(node, episodes=1, out=tmp_path / "a", max_attempts=2)
    summary = generate_demos(node, episodes=2, out=tmp_path / "b", keep_failures=True)
    assert (summary.stored, summary.successes) == (2, 0)
    store = open_store(tmp_path / "b")
    assert [store.meta(i)["success"] for i in range(2)] == [False, False]
    assert store.episode_length(0) == 3


def test_cli_demos_with_workers(tmp_path, cli_runner):
    from foundry_action.store import open_store
    from foundry_core.cli.main import build_cli

    out = tmp_path / "cli"
    args = [
        "eval",
        "demos",
        "put_on_plate",
        "--episodes",
        "2",
        "--out",
        str(out),
        "--cameras",
        "none",
        "--workers",
        "2",
    ]
    result = cli_runner.invoke(build_cli(), args)
    assert result.exit_code == 0, result.output
    assert "PutOnPlate: stored 2 episodes" in result.output and "expert success 2/2" in result.output
    store = open_store(out)
    assert [store.meta(i)["seed"] for i in range(2)] == [1_000_000, 1_000_001]
    # Same seeds in-process give the same episodes (workers do not change the data).
    generate_demos({"name": "put_on_plate", "cameras": []}, episodes=1, out=tmp_path / "one")
    np.testing.assert_allclose(open_store(tmp_path / "one").episode(0)["action"], store.episode(0)["action"])
    result = cli_runner.invoke(
        build_cli(), ["eval", "demos", "no_such_task", "--episodes", "1", "--out", str(out)]
    )
    assert result.exit_code == 2 and "no task named" in result.output


def test_cli_demos_jpeg_frames_and_append_keeps_them(tmp_path, cli_runner):
    from foundry_action.frame_codecs import FrameEncoding
    from foundry_action.inspection import validate
    from foundry_action.store import open_store
    from foundry_core.cli.main import build_cli

    out = tmp_path / "jpeg.zarr"
    base = [
        "eval",
        "demos",
        "push_to_target",
        "--episodes",
        "1",
        "--cameras",
        "scene",
        "--image-size",
        "32",
        "--out",
        str(out),
    ]
    res = cli_runner.invoke(build_cli(), [*base, "--frames", "jpeg", "--jpeg-quality", "80"])
    assert res.exit_code == 0, res.output
    assert open_store(out).frames == FrameEncoding("jpeg", 80)
    res = cli_runner.invoke(
        build_cli(), [*base, "--append", "--seed-start", "5"]
    )  # no --frames: the store's own
    assert res.exit_code == 0, res.output
    store = open_store(out)
    assert len(store) == 2 and store.frames == FrameEncoding("jpeg", 80)
    validate(out, full_frames=True)  # every frame of both episodes decodes
    res = cli_runner.invoke(build_cli(), [*base, "--append", "--frames", "lossless"])
    assert res.exit_code == 2 and "keeps frames as jpeg (quality 80), appending asks lossless" in res.output
    res = cli_runner.invoke(build_cli(), [*base[:-1], str(tmp_path / "bad.zarr"), "--frames", "webp"])
    assert res.exit_code == 2 and "unknown frame encoding 'webp' (choose one of lossless, jpeg)" in res.output
    assert not (tmp_path / "bad.zarr").exists() and len(open_store(out)) == 2


def _expert_replay(node: dict, seed: int, noise) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The expert's clean actions and the executed (perturbed) ones of one episode, stepped by hand."""
    from foundry_core.plugins import get_registry
    from foundry_eval.sim.demos import _NoiseProcess

    env = get_registry().build("task", dict(node))
    obs, process = env.reset(seed), _NoiseProcess(noise, seed)
    expert = env.expert()
    clean, executed = [], []
    while not env.done():
        clean.append(np.asarray(expert.act(obs), np.float32))
        executed.append(process.perturb(clean[-1]))
        obs = env.step(executed[-1])
    return clean, executed


def test_recovery_demos_label_the_clean_expert_action(tmp_path):
    from foundry_action.inspection import validate
    from foundry_action.store import open_store
    from foundry_eval.sim.demos import ActionNoise

    node = {"name": "reach_target", "cameras": ["scene"], "image_size": 16}
    noise = ActionNoise(xyz=0.02, yaw=0.1, correlation=0.5, seed=3)
    generate_demos(node, episodes=2, out=tmp_path / "clean", seed_start=10)
    generate_demos(node, episodes=2, out=tmp_path / "noisy", seed_start=10, noise=noise)
    generate_demos(node, episodes=2, out=tmp_path / "again", seed_start=10, noise=noise)
    validate(tmp_path / "noisy", full_frames=True)  # a valid store episode, every frame decodes
    clean, noisy, again = (open_store(tmp_path / n) for n in ("clean", "noisy", "again"))
    assert noisy.attrs["demo_runs"] == [
        {
            "task": "reach_target",
            "seed_start": 10,
            "attempted": 2,
            "stored": 2,
            "tail_steps": 0,
            **noise.as_meta(),
        }
    ]
    assert clean.attrs["demo_runs"][0]["noise_xyz"] == 0.0 and "noise_xyz" not in clean.meta(0)
    for i in range(2):
        meta = noisy.meta(i)
        assert meta["success"] is True and meta["seed"] == 10 + i
        assert (meta["noise_xyz"], meta["noise_yaw"], meta["noise_seed"]) == (0.02, 0.1, 3)
        ep = noisy.episode(i)
        for key in ep:  # deterministic from (seed, noise seed)
            np.testing.assert_array_equal(ep[key], again.episode(i)[key])
        # The states left the clean expert's path ...
        assert not np.allclose(ep["proprio"][:5], clean.episode(i)["proprio"][:5], atol=1e-3)
        # ... and the label is what the expert commanded in them, not the perturbed command the env ran.
        expert_actions, executed = _expert_replay(node, 10 + i, noise)
        np.testing.assert_allclose(ep["action"], np.stack(expert_actions), atol=1e-6)
        gap = np.linalg.norm(np.stack(executed)[:, :3] - ep["action"][:, :3], axis=1)
        assert gap.mean() > 0.01
    other = generate_demos(
        node, episodes=1, out=tmp_path / "seed4", seed_start=10, noise=ActionNoise(xyz=0.02, seed=4)
    )
    assert other.stored == 1
    assert not np.allclose(
        open_store(tmp_path / "seed4").episode(0)["proprio"][:5], noisy.episode(0)["proprio"][:5]
    )


def test_recovery_demos_append_records_every_run(tmp_path):
    from foundry_action.store import open_store
    from foundry_eval.sim.demos import ActionNoise

    node = {"name": "reach_target", "cameras": []}
    generate_demos(node, episodes=1, out=tmp_path / "s")
    generate_demos(
        node, episodes=1, out=tmp_path / "s", append=True, noise=ActionNoise(xyz=0.01), seed_start=7
    )
    store = open_store(tmp_path / "s")
    assert [r["noise_xyz"] for r in store.attrs["demo_runs"]] == [0.0, 0.01]
    assert "noise_xyz" not in store.meta(0) and store.meta(1)["noise_xyz"] == 0.01


@pytest.mark.parametrize(
    ("noise", "message"),
    [
        ({"xyz": -0.01}, "noise.xyz must be a finite number >= 0, got -0.01"),
        ({"yaw": float("nan")}, "noise.yaw must be a finite number >= 0, got nan"),
        ({"correlation": 1.0}, r"noise.correlation must be in \[0, 1\), got 1.0"),
        ({"seed": -1}, "noise.seed must be >= 0, got -1"),
    ],
)
def test_bad_noise_fails_naming_the_field(tmp_path, noise, message):
    from foundry_eval.sim.demos import ActionNoise

    with pytest.raises(ConfigError, match=message):
        generate_demos(
            {"name": "reach_target", "cameras": []},
            episodes=1,
            out=tmp_path / "x",
            noise=ActionNoise(**noise),
        )
    assert not (tmp_path / "x").exists()


def test_cli_recovery_demos(tmp_path, cli_runner):
    from foundry_action.store import open_store
    from foundry_core.cli.main import build_cli

    base = ["eval", "demos", "reach_target", "--episodes", "1", "--cameras", "none"]
    out = tmp_path / "noisy.zarr"
    res = cli_runner.invoke(
        build_cli(), [*base, "--out", str(out), "--noise-xyz", "0.01", "--noise-seed", "2"]
    )
    assert res.exit_code == 0, res.output
    assert open_store(out).meta(0)["noise_seed"] == 2
    res = cli_runner.invoke(
        build_cli(), [*base, "--out", str(tmp_path / "bad"), "--noise-correlation", "-0.5"]
    )
    assert res.exit_code == 2 and "--noise-correlation must be in [0, 1), got -0.5" in res.output
    assert not (tmp_path / "bad").exists()


def test_tail_steps_record_the_expert_past_the_first_success(tmp_path):
    from foundry_action.store import open_store

    node = {"name": "pick_place_bin", "cameras": []}
    generate_demos(node, episodes=1, out=tmp_path / "plain")
    generate_demos(node, episodes=1, out=tmp_path / "tail", tail_steps=6)
    plain, tail = open_store(tmp_path / "plain"), open_store(tmp_path / "tail")
    first = plain.episode_length(0)
    assert plain.meta(0)["success_step"] == first and tail.meta(0)["success_step"] == first
    assert tail.episode_length(0) == first + 6 and tail.meta(0)["success"] is True
    np.testing.assert_array_equal(tail.episode(0)["action"][:first], plain.episode(0)["action"])
    # The tail shows the release: the expert commands the open gripper over the bin.
    assert np.all(tail.episode(0)["action"][first:, 9] > 0.07)
    assert tail.attrs["demo_runs"][0]["tail_steps"] == 6
    with pytest.raises(ConfigError, match="tail_steps must be >= 0, got -1"):
        generate_demos(node, episodes=1, out=tmp_path / "bad", tail_steps=-1)
