"""Tests of the Drake tabletop tasks: experts succeed, a random policy fails, hand-made success states,
observation/action contract, seeding. Each expert episode takes ~1 s of CPU without cameras."""

from __future__ import annotations

import numpy as np
import pytest

import foundry_eval.plugin
from foundry_core.errors import ConfigError
from foundry_core.plugins import make_plugin_manager
from foundry_core.registry import collect
from foundry_eval.sim.pose import top_down_rotation
from foundry_eval.sim.scene import table_pose


def _drake_tasks() -> dict[str, object]:
    """Every task foundry-eval registers from ``sim/tasks/`` (not the fake simulator): name -> spec."""
    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_eval.plugin, name="foundry-eval")
    specs = collect(pm).specs("task")
    tasks = {s.name: s for s in specs if str(s.target).startswith("foundry_eval.sim.tasks.")}
    assert tasks, "foundry-eval registers no Drake task"
    return tasks


TASKS = _drake_tasks()


def make(name: str, **cfg):
    cls = TASKS[name].load()
    cfg.setdefault("cameras", [])
    return cls(cls.Config(**cfg))


def run_expert(env, seed: int) -> bool:
    obs = env.reset(seed)
    expert = env.expert()
    while not env.done():
        obs = env.step(expert.act(obs))
    return env.is_success()


@pytest.mark.parametrize("name", list(TASKS))
def test_expert_succeeds_on_fixed_seeds(name):
    env = make(name)
    results = [run_expert(env, seed) for seed in (0, 1)]
    assert all(results), results
    assert env.time < env.time_limit_s  # ended by success, not by the limit


@pytest.mark.parametrize("name", list(TASKS))
def test_random_policy_fails(name):
    env = make(name, time_limit_s=5.0)
    rng = np.random.default_rng(0)
    env.reset(7)
    steps = 0
    while not env.done():
        xyz = rng.uniform([-0.3, -0.3, 0.0], [0.3, 0.3, 0.3])
        rot6d = top_down_rotation(rng.uniform(-np.pi, np.pi))[:2].ravel()
        env.step(np.concatenate([xyz, rot6d, [rng.uniform(0, 0.08)]]))
        steps += 1
    assert steps == 50 and not env.is_success()


def _place(env, poses, opening=0.08, gripper=(0.0, 0.0, 0.3)):
    env.reset(0)
    env.scene.reset(np.array(gripper), 0.0, opening, poses)


def test_success_predicates_on_hand_made_states():
    z4 = 0.0205
    push = make("push_to_target")
    _place(push, {"block": table_pose(0.1, 0.1, z4, 0.3), "target": table_pose(0.12, 0.09, 0.001)})
    assert push.is_success()
    _place(push, {"block": table_pose(0.1, 0.1, z4), "target": table_pose(0.1, 0.14, 0.001)})
    assert not push.is_success()

    bin_env = make("pick_place_bin")
    _place(bin_env, {"bin": table_pose(0.1, 0.0, 0.0305, 0.7), "block": table_pose(0.12, 0.01, 0.0305)})
    assert bin_env.is_success()
    _place(bin_env, {"bin": table_pose(0.1, 0.0, 0.0305), "block": table_pose(-0.1, 0.0, z4)})
    assert not bin_env.is_success()
    _place(bin_env, {"bin": table_pose(0.1, 0.0, 0.0305), "block": table_pose(0.1, 0.0, 0.2)})  # above it
    assert not bin_env.is_success()

    stack = make("stack_blocks")
    _place(stack, {"blue": table_pose(0.0, 0.0, z4), "red": table_pose(0.005, 0.0, z4 + 0.04, 0.5)})
    assert stack.is_success()
    _place(stack, {"blue": table_pose(0.0, 0.0, z4), "red": table_pose(0.1, 0.0, z4)})
    assert not stack.is_success()
    # Red held on top of blue by closed fingers: not released -> not a success.
    _place(stack, {"blue": table_pose(0.0, 0.0, z4), "red": table_pose(0.0, 0.0, z4 + 0.04)}, opening=0.03)
    assert not stack.is_success()

    plate = make("put_on_plate")
    _place(plate, {"plate": table_pose(0.1, 0.1, 0.0065), "can": table_pose(0.12, 0.1, 0.0125 + 0.0305)})
    assert plate.is_success()
    _place(plate, {"plate": table_pose(0.1, 0.1, 0.0065), "can": table_pose(-0.1, 0.1, 0.0305)})
    assert not plate.is_success()


@pytest.mark.parametrize("relative_yaw", [0.0, np.pi / 4])
def test_block_rests_on_block_in_any_orientation(relative_yaw):
    # Point contact gives one point per box pair: the support spheres must hold a rotated block up.
    env = make("stack_blocks")
    _place(
        env,
        {
            "blue": table_pose(0.0, 0.0, 0.0205, 0.2),
            "red": table_pose(0.003, 0.0, 0.0625, 0.2 + relative_yaw),
        },
    )
    obs = env.observation()
    for _ in range(10):
        obs = env.step(obs["proprio"])
    assert env.z("red") == pytest.approx(0.061, abs=0.002) and env.is_success()


def test_observation_and_action_contract():
    env = make("stack_blocks", cameras=["scene", "wrist"], image_size=32)
    assert (env.action_dim, env.proprio_dim, env.control_dt, env.task_name) == (10, 10, 0.1, "StackBlocks")
    obs = env.reset(3)
    assert set(obs["images"]) == {"scene", "wrist"}
    for img in obs["images"].values():
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 1.0
    assert obs["proprio"].shape == (10,) and obs["proprio"].dtype == np.float32
    assert obs["instruction"] == env.instruction and env.instruction in type(env).instruction_templates
    target = obs["proprio"].copy()
    target[:3] += [0.03, -0.02, -0.05]
    for _ in range(5):
        obs = env.step(target)
    np.testing.assert_allclose(obs["proprio"][:3], target[:3], atol=3e-3)  # absolute pose tracking
    assert env.time == pytest.approx(0.5)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(10, np.nan))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7))
    env.close()


def test_no_cameras_and_seeding():
    env = make("pick_place_bin")
    assert env.reset(5)["images"] == {}
    first = (env.instruction, env.scene.pose("block").translation().copy(), env.proprio())
    env.reset(6)
    env.reset(5)
    np.testing.assert_allclose(env.scene.pose("block").translation(), first[1])
    np.testing.assert_allclose(env.proprio(), first[2])
    assert env.instruction == first[0]
    starts = set()
    for s in range(5):
        env.reset(s)
        starts.add(tuple(np.round(env.scene.pose("block").translation(), 4)))
    assert len(starts) == 5
    instructions = set()
    for s in range(12):
        env.reset(s)
        instructions.add(env.instruction)
    assert len(instructions) > 1


def test_time_limit_ends_episode():
    env = make("push_to_target", time_limit_s=0.3)
    obs = env.reset(0)
    for _ in range(3):
        assert not env.done()
        obs = env.step(obs["proprio"])
    assert env.done() and not env.is_success()


def test_registered_and_built_through_the_registry(foundry_pm):
    from foundry_core.registry import collect
    from foundry_eval import plugin

    foundry_pm.register(plugin, name="foundry-eval")
    registry = collect(foundry_pm)
    assert set(TASKS) <= set(registry.names("task"))
    env = registry.build("task", {"name": "put_on_plate", "cameras": [], "time_limit_s": 12.0})
    assert env.task_name == "PutOnPlate" and env.time_limit_s == 12.0 and env.camera_names == []
    with pytest.raises(ConfigError, match="must be distinct names from"):
        registry.build("task", {"name": "put_on_plate", "cameras": ["top"]})


def test_reach_target_instruction_names_the_goal_and_success_needs_it():
    single = make("reach_target")
    single.reset(3)
    assert single.goal == "blue" and "blue" in single.instruction and len(single.object_specs()) == 1
    env = make("reach_target", distractor=True)
    goals = set()
    for seed in range(8):
        env.reset(seed)
        assert env.goal in env.instruction and env.goal in ("blue", "yellow")
        goals.add(env.goal)
    assert goals == {"blue", "yellow"}  # both colours are goals across seeds
    env.reset(0)  # _place resets with seed 0, so the goal stays this one
    goal, other = env.goal, ("yellow" if env.goal == "blue" else "blue")
    poses = {goal: table_pose(0.1, 0.1, 0.001), other: table_pose(-0.1, -0.1, 0.001)}
    _place(env, poses, gripper=(0.11, 0.1, 0.03))
    assert env.goal == goal and env.is_success()
    _place(env, poses, gripper=(0.1, 0.1, 0.12))  # above the goal, too high
    assert not env.is_success()
    _place(env, poses, gripper=(-0.1, -0.1, 0.03))  # on the distractor
    assert not env.is_success()
    assert all(run_expert(env, seed) for seed in (1, 2))  # the expert goes to the named disk


def test_episode_metrics_on_hand_made_states():
    reach = make("reach_target", distractor=True)
    reach.reset(0)  # _place resets with seed 0, so the goal stays this one
    goal, other = reach.goal, ("yellow" if reach.goal == "blue" else "blue")
    poses = {goal: table_pose(0.1, 0.1, 0.001), other: table_pose(-0.1, -0.1, 0.001)}
    _place(reach, poses, gripper=(0.13, 0.14, 0.03))  # 3 cm, 4 cm off the named disk: 5 cm, a miss
    m = reach.episode_metrics()
    assert set(m) == {"goal_distance", "distractor_distance", "tcp_height"}
    assert m["goal_distance"] == pytest.approx(0.05, abs=1e-4) and not reach.is_success()
    assert m["distractor_distance"] == pytest.approx(np.hypot(0.23, 0.24), abs=1e-4)
    assert m["tcp_height"] == pytest.approx(0.03, abs=1e-3)
    assert reach.success_distance == 0.03 and m["goal_distance"] < m["distractor_distance"]
    _place(reach, poses, gripper=(-0.1, -0.09, 0.2))  # over the other disk: nearer it than the named one
    m = reach.episode_metrics()
    assert m["distractor_distance"] == pytest.approx(0.01, abs=1e-4)
    assert m["tcp_height"] == pytest.approx(0.2, abs=1e-3)
    assert m["goal_distance"] == pytest.approx(np.hypot(0.2, 0.19), abs=1e-4)
    single = make("reach_target")
    single.reset(0)
    _place(single, {"blue": table_pose(0.0, 0.1, 0.001)}, gripper=(0.0, 0.0, 0.1))
    assert single.episode_metrics() == {
        "goal_distance": pytest.approx(0.1, abs=1e-4),
        "tcp_height": pytest.approx(0.1, abs=1e-3),
    }

    push = make("push_to_target")
    _place(push, {"block": table_pose(0.1, 0.1, 0.0205), "target": table_pose(0.1, 0.14, 0.001)})
    assert push.episode_metrics() == {"goal_distance": pytest.approx(0.04, abs=1e-4)}
    bin_env = make("pick_place_bin")
    _place(bin_env, {"bin": table_pose(0.1, 0.0, 0.0305), "block": table_pose(-0.1, 0.05, 0.0205)})
    assert bin_env.episode_metrics() == {"goal_distance": pytest.approx(np.hypot(0.2, 0.05), abs=1e-4)}


def test_reset_after_an_episode_equals_a_fresh_scene():
    """``reset`` restores only the plant's state (not the parameters: re-cloning SceneGraph's render engine
    cost ~75 ms a reset): a reused env must give what a new one gives, pixels and physics alike."""
    used = make("push_to_target", cameras=["scene"])
    run_expert(used, 3)  # contacts, velocities, the lagged contact state: all non-default now

    def episode(env):
        obs = env.reset(4)
        context = env.scene.plant_context
        state = (context.get_discrete_state_vector().value().copy(), env.scene.time)
        frames, expert = [obs["images"]["scene"]], env.expert()
        for _ in range(6):
            obs = env.step(expert.act(obs))
            frames.append(obs["images"]["scene"])
        return state, frames, env.proprio()

    (state_used, frames_used, end_used), (state_new, frames_new, end_new) = episode(used), episode(
        make("push_to_target", cameras=["scene"])
    )
    np.testing.assert_array_equal(state_used[0], state_new[0])
    assert state_used[1] == state_new[1] == 0.0
    for a, b in zip(frames_used, frames_new, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(end_used, end_new)
