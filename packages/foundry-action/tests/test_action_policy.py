"""Policy runtime: export -> load -> act, parity with training batches, validation, chunk execution, rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_action.executor import ChunkExecutor
from foundry_action.policy import ObservationError, Policy
from foundry_action.rotations import matrix_to_rot6d, relative_to_absolute, rot6d_to_matrix
from foundry_core.registry import BuildContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def node(store, expert="flow_matching"):
    return {
        "name": "vla",
        "backbone": {"name": "tiny_test", "width": 16},
        "expert": {"name": expert, "preset": "debug", "inference_steps": 4},
        "data": {"name": "zarr_episodes", "path": str(store), "past": 2, "future": 3, "image_offsets": [-1, 0]},
    }


@pytest.fixture
def exported(action_registry, tiny_episodes, tmp_path):
    from foundry_core.export import export_model

    torch.manual_seed(0)
    n = node(tiny_episodes)
    model = action_registry.build("model", n, BuildContext(action_registry))
    return export_model(model, n, tmp_path / "export"), model


def observation(store, episode: int, step: int) -> dict:
    from foundry_action.store import open_store

    s = open_store(store)
    ep = s.episode(episode)
    return {
        "images": {cam: ep[f"camera/{cam}"][step] for cam in ("scene", "wrist")},
        "proprio": ep["proprio"][step],
        "instruction": f"do thing number {episode}",
    }, ep


def test_round_trip_export_load_act(action_registry, exported, tiny_episodes):
    out, model = exported
    policy = Policy.from_pretrained(out, registry=action_registry)
    meta = policy.metadata()
    assert meta["cameras"] == ["scene", "wrist"] and meta["action_dim"] == 10 and meta["proprio_dim"] == 10
    assert meta["chunk_size"] == 4 and meta["is_language_conditioned"] is True and meta["checkpoint"] == str(out)
    obs, _ = observation(tiny_episodes, 0, 0)
    policy.reset(seed=3)
    chunk = policy.act(obs)
    assert chunk.shape == (4, 10) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    policy.reset(seed=3)
    np.testing.assert_allclose(policy.act(obs), chunk)  # reproducible from the seed
    # the chunk is the unnormalized model output from the anchor on (unseeded: the global RNG)
    policy.reset()
    policy.observe(obs)
    torch.manual_seed(5)
    norm = model.predict(policy.batch())[0].numpy()
    torch.manual_seed(5)
    np.testing.assert_allclose(policy.plan(), policy.stats.unnormalize("action", norm[2:]), rtol=1e-5, atol=1e-5)


def test_policy_batch_matches_training_batch(action_registry, exported, tiny_episodes):
    """Same window through the data source and through the policy's history: identical model inputs."""
    out, _ = exported
    policy = Policy.from_pretrained(out, registry=action_registry)
    source = action_registry.build("data_source", node(tiny_episodes)["data"], BuildContext(action_registry))
    anchor = 5
    ref = source.make_batch(np.array([anchor]), torch.Generator().manual_seed(0))
    assert int(ref["episode"][0]) == 0 and int(ref["anchor"][0]) == anchor
    policy.reset()
    for t in range(anchor + 1):
        obs, ep = observation(tiny_episodes, 0, t)
        policy.observe(obs)
        if t < anchor:
            policy.record_action(ep["action"][t])
    got = policy.batch()
    torch.testing.assert_close(got["images"], ref["images"])
    torch.testing.assert_close(got["proprio"], ref["proprio"])
    torch.testing.assert_close(got["past_mask"], ref["past_mask"])
    torch.testing.assert_close(got["actions"][got["past_mask"]], ref["actions"][ref["past_mask"]], rtol=1e-5, atol=1e-5)
    assert got["instruction"] == ref["instruction"]


def test_first_step_is_edge_padded_like_training(action_registry, exported, tiny_episodes):
    out, _ = exported
    policy = Policy.from_pretrained(out, registry=action_registry)
    source = action_registry.build("data_source", node(tiny_episodes)["data"], BuildContext(action_registry))
    ref = source.make_batch(np.array([0]), torch.Generator().manual_seed(0))
    policy.observe(observation(tiny_episodes, 0, 0)[0])
    got = policy.batch()
    torch.testing.assert_close(got["images"], ref["images"])
    torch.testing.assert_close(got["proprio"], ref["proprio"])
    assert not got["past_mask"].any() and not ref["past_mask"].any()


def test_observation_validation_names_the_key(action_registry, exported, tiny_episodes):
    out, _ = exported
    policy = Policy.from_pretrained(out, registry=action_registry)
    good, _ = observation(tiny_episodes, 0, 0)

    def bad(match, **changes):
        obs = {**good, **changes}
        with pytest.raises(ObservationError, match=match):
            policy.act(obs)

    bad(r"no camera 'wrist'", images={"scene": good["images"]["scene"]})
    bad(r"\['scene'\]: expected uint8 \[32, 32, 3\], got float32", images={**good["images"], "scene": good["images"]["scene"].astype(np.float32)})
    bad(r"\['wrist'\]: expected 32x32 pixels, got 16x16", images={**good["images"], "wrist": np.zeros((16, 16, 3), np.uint8)})
    bad(r"'proprio'.*shape \(10,\)", proprio=np.zeros(7, np.float32))
    bad(r"'proprio'.*finite", proprio=np.full(10, np.nan, np.float32))
    bad(r"'instruction'.*language-conditioned", instruction="")
    with pytest.raises(ObservationError, match="missing 'images'"):
        policy.act({"proprio": good["proprio"]})
    # extra cameras are fine; resize_images=True accepts another size
    policy.act({**good, "images": {**good["images"], "extra": np.zeros((4, 4, 3), np.uint8)}})
    resizing = Policy.from_pretrained(out, registry=action_registry, resize_images=True)
    assert resizing.act({**good, "images": {k: np.zeros((64, 64, 3), np.uint8) for k in ("scene", "wrist")}}).shape == (4, 10)


class CountingPolicy(Policy):
    """plan() at step s returns chunk[i] = 100 * s + i (every action dim), to check execution logic."""

    def plan(self):
        return np.repeat((100.0 * self._step + np.arange(self.future + 1))[:, None], self.action_dim, 1).astype(np.float32)


def test_receding_horizon_and_temporal_ensembling(action_registry, exported, tiny_episodes):
    out, model = exported
    obs, _ = observation(tiny_episodes, 0, 0)
    ex = ChunkExecutor(CountingPolicy(model, checkpoint=str(out)), execute_steps=2)
    actions = [ex.step(obs)[0] for _ in range(6)]
    assert actions == [0, 1, 200, 201, 400, 401] and ex.plans == 3
    assert len(ex.policy._actions) > 0  # executed actions recorded as past context
    ex = ChunkExecutor(CountingPolicy(model, checkpoint=str(out)), ensemble="temporal", ensemble_decay=0.5)
    got = [ex.step(obs)[0] for _ in range(6)]
    for t, value in enumerate(got):
        starts = [s for s in range(t + 1) if t - s < 4]
        preds = np.array([100.0 * s + (t - s) for s in starts])
        w = np.exp(-0.5 * np.arange(len(preds)))
        assert value == pytest.approx((w * preds).sum() / w.sum())
    assert ex.plans == 6
    with pytest.raises(ValueError, match="execute_steps"):
        ChunkExecutor(CountingPolicy(model), execute_steps=5)


def test_executor_runs_a_real_policy(action_registry, exported, tiny_episodes):
    out, _ = exported
    ex = ChunkExecutor(Policy.from_pretrained(out, registry=action_registry), execute_steps=3)
    ex.reset(seed=0)
    for t in range(4):
        a = ex.step(observation(tiny_episodes, 1, t)[0])
        assert a.shape == (10,) and np.isfinite(a).all()
    assert ex.plans == 2


def test_rotations_round_trip_and_relative_composition():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(q)), q, atol=1e-10)
    noisy = matrix_to_rot6d(q) + 0.01 * rng.normal(size=(5, 6))
    r = rot6d_to_matrix(noisy)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-10)
    identity = np.concatenate([np.zeros(3), matrix_to_rot6d(np.eye(3)), [0.05]])
    pose = np.concatenate([[1.0, 2.0, 3.0], matrix_to_rot6d(q[0]), [0.08]])
    np.testing.assert_allclose(relative_to_absolute(identity, pose)[:9], pose[:9], atol=1e-6)
    step = np.concatenate([[0.1, 0.0, 0.0], matrix_to_rot6d(np.eye(3)), [0.02]])
    two = np.concatenate([step, step])
    out = relative_to_absolute(np.stack([two, two]), np.concatenate([pose, pose]))
    assert out.shape == (2, 20)
    np.testing.assert_allclose(out[0, :3], pose[:3] + q[0] @ np.array([0.1, 0, 0]), atol=1e-6)
    assert out[0, 9] == pytest.approx(0.02)


def test_vision_only_policy_needs_no_instruction(action_registry, tiny_episodes, tmp_path):
    from foundry_core.export import export_model

    n = {**node(tiny_episodes), "expert": {"name": "l1_regression", "preset": "debug"}, "use_instruction": False}
    model = action_registry.build("model", n, BuildContext(action_registry))
    assert model.prompts({"images": torch.zeros(3, 1), "instruction": ["a", "b", "c"]}) == ["", "", ""]
    policy = Policy.from_pretrained(export_model(model, n, tmp_path / "export"), registry=action_registry)
    assert policy.metadata()["is_language_conditioned"] is False
    obs, _ = observation(tiny_episodes, 0, 0)
    del obs["instruction"]
    assert policy.act(obs).shape == (4, 10)


@pytest.mark.parametrize("expert", ["flow_matching", "diffusion"])
def test_plan_batch_gives_each_episode_its_own_chunk(action_registry, tiny_episodes, tmp_path, expert):
    from foundry_action.policy import plan_batch
    from foundry_core.export import export_model

    torch.manual_seed(0)
    n = node(tiny_episodes, expert)
    if expert == "diffusion":
        n["expert"]["eta"] = 1.0  # noise at every denoising step too
    out = export_model(action_registry.build("model", n, BuildContext(action_registry)), n, tmp_path / "export")
    base = Policy.from_pretrained(out, registry=action_registry)
    episodes = [base.clone() for _ in range(3)]
    assert all(p.model is base.model for p in episodes)
    observations = [observation(tiny_episodes, e, 3)[0] for e in range(3)]

    def run(batched: bool) -> list[np.ndarray]:
        for seed, (policy, obs) in enumerate(zip(episodes, observations)):
            policy.reset(seed=seed)
            policy.observe(obs)
        return plan_batch(episodes) if batched else [p.plan() for p in episodes]

    alone, together = run(False), run(True)
    if expert == "flow_matching":  # (the untrained diffusion head's chunks barely vary)
        assert not np.allclose(alone[0], alone[1])  # different episodes, different chunks: the check has teeth
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    torch.manual_seed(123)  # the global RNG plays no part once episodes are seeded
    np.testing.assert_array_equal(run(True)[2], together[2])
    episodes[1].reset()
    episodes[1].observe(observations[1])
    with pytest.raises(ValueError, match="seed every policy"):
        plan_batch(episodes)
