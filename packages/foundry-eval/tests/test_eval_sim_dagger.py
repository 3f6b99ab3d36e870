"""DAgger relabelling (``foundry eval demos --dagger-policy``): a policy drives, the scripted expert labels."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_core.errors import ConfigError

torch = pytest.importorskip("torch")

NODE = {"name": "push_to_target", "cameras": ["scene", "wrist"], "image_size": 32, "time_limit_s": 1.0}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """An untrained vision-only VLA (ViT 16 px, l1_regression debug) exported with the global registry,
    so ``--dagger-policy`` loads it the way ``foundry eval run`` does."""
    from foundry_action.testing import make_tiny_store, tiny_vla_node
    from foundry_core.export import export_model
    from foundry_core.plugins import get_registry
    from foundry_core.registry import BuildContext

    tmp = tmp_path_factory.mktemp("dagger")
    store = make_tiny_store(tmp / "tiny.zarr")
    encoder = {"name": "vit", "image_size": 16, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}
    node = tiny_vla_node(
        store,
        {"name": "l1_regression", "preset": "debug"},
        backbone={"name": "vision_encoder", "encoder": encoder},
        use_instruction=False,
    )
    registry = get_registry()
    torch.manual_seed(0)
    return str(export_model(registry.build("model", node, BuildContext(registry)), node, tmp / "export"))


def _store_arrays(path, i):
    from foundry_action.store import open_store

    store = open_store(path)
    return store.meta(i), store.episode(i)


def test_dagger_episodes_are_labelled_stored_and_reproducible(tiny_export, tmp_path):
    from foundry_eval.sim.dagger import DaggerSpec
    from foundry_eval.sim.demos import generate_demos

    torch.set_num_threads(1)
    spec = DaggerSpec(tiny_export, execute_steps=2)
    for name in ("a", "b"):
        summary = generate_demos(NODE, episodes=2, out=tmp_path / name, seed_start=3_000_000, dagger=spec)
        assert summary.stored == 2  # failed rollouts are stored too
    clean = tmp_path / "clean"
    generate_demos(NODE, episodes=1, out=clean, seed_start=3_000_000, keep_failures=True)
    for i in range(2):
        meta, ep = _store_arrays(tmp_path / "a", i)
        meta_b, ep_b = _store_arrays(tmp_path / "b", i)
        assert meta["source"] == "dagger" and meta["seed"] == 3_000_000 + i
        assert meta["dagger_policy"] == tiny_export and meta["dagger_beta"] == 0.0
        assert meta["dagger_execute_steps"] == 2 and len(meta["dagger_policy_sha256"]) == 16
        assert meta == meta_b and all(np.array_equal(ep[k], ep_b[k]) for k in ep)  # same seeds, same episodes
        assert len(ep["action"]) == 10 and np.all(np.isfinite(ep["action"]))
    _, ep = _store_arrays(tmp_path / "a", 0)
    _, expert_ep = _store_arrays(clean, 0)
    # Same initial state: the first label is the expert's own first command ...
    np.testing.assert_allclose(ep["action"][0], expert_ep["action"][0], atol=1e-6)
    # ... but the untrained policy drove, so the robot went elsewhere than under the expert
    assert np.abs(ep["proprio"][-1, :3] - expert_ep["proprio"][-1, :3]).max() > 1e-3


def test_beta_one_is_the_expert_rollout(tiny_export, tmp_path):
    """With beta = 1 the expert executes every step (the policy is queried, not obeyed): the episode
    is exactly the plain expert demonstration of that seed."""
    from foundry_eval.sim.dagger import DaggerSpec
    from foundry_eval.sim.demos import generate_demos

    torch.set_num_threads(1)
    generate_demos(NODE, episodes=1, out=tmp_path / "d", seed_start=7, dagger=DaggerSpec(tiny_export, beta=1.0))
    generate_demos(NODE, episodes=1, out=tmp_path / "e", seed_start=7, keep_failures=True)
    (_, dagger_ep), (_, expert_ep) = _store_arrays(tmp_path / "d", 0), _store_arrays(tmp_path / "e", 0)
    for key in ("action", "proprio"):
        np.testing.assert_array_equal(dagger_ep[key], expert_ep[key])


def test_take_over_continues_from_the_given_pose():
    from foundry_eval.sim.experts import Waypoint, WaypointExpert
    from foundry_eval.sim.pose import pose_to_vec10, top_down_rotation

    def plan():
        yield Waypoint(np.array([0.3, 0.0, 0.0]), 0.0, 0.08, speed=0.1)

    T = np.eye(4)
    T[:3, :3] = top_down_rotation(0.0)
    obs = {"proprio": pose_to_vec10(T, 0.08)}  # at the origin
    expert = WaypointExpert(plan, dt=0.1)
    first = expert.act(obs)
    np.testing.assert_allclose(first[:3], [0.01, 0.0, 0.0], atol=1e-6)  # 1 cm toward the waypoint
    expert.take_over(np.array([0.3, 0.0, 0.1]), 0.0)  # someone else drove the robot above the waypoint
    np.testing.assert_allclose(expert.act(obs)[:3], [0.3, 0.0, 0.09], atol=1e-6)  # 1 cm on from there


def test_dagger_settings_are_checked(tiny_export, tmp_path, cli_runner):
    from foundry_core.cli.main import build_cli
    from foundry_eval.sim.dagger import DaggerSpec

    with pytest.raises(ConfigError, match="not a policy export"):
        DaggerSpec(str(tmp_path)).check()
    with pytest.raises(ConfigError, match=r"dagger\.beta must be in \[0, 1\]"):
        DaggerSpec(tiny_export, beta=1.5).check()
    base = ["eval", "demos", "push_to_target", "--episodes", "1", "--out", str(tmp_path / "x")]
    result = cli_runner.invoke(build_cli(), [*base, "--dagger-beta", "0.5"])
    assert result.exit_code != 0 and "--dagger-beta/--dagger-seed need --dagger-policy" in result.output
    result = cli_runner.invoke(build_cli(), [*base, "--dagger-policy", tiny_export, "--dagger-beta", "-1"])
    assert result.exit_code != 0 and "--dagger-beta must be in [0, 1]" in result.output
    assert not (tmp_path / "x").exists()
