"""l1_regression ``gripper_dims``: BCE on the gripper logits, sampling emits exactly the two command values,
bad dims fail naming the key, and the command values survive training -> export -> Policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention

DIMS = {"cond": 8, "action": 3, "proprio": 4, "window": 6, "proprio_steps": 2}
CLOSED, OPEN = -1.3, 0.7  # normalized command values of the toy gripper (dim 2)


def build(action_registry, dims=DIMS, **fields):
    config = {"name": "l1_regression", "preset": "debug", **fields}
    return action_registry.build("action_expert", config, BuildContext(action_registry, dims=dims))


def gripper_batch(b: int, seed: int = 0):
    """Dims 0-1 are noise to regress; dim 2 is open exactly where the first proprio feature is > 0."""
    g = torch.Generator().manual_seed(seed)
    proprio = torch.randn(b, 2, 4, generator=g)
    actions = torch.randn(b, 6, 3, generator=g)
    actions[..., 2] = torch.where(proprio[:, -1, :1] > 0, OPEN, CLOSED).expand(b, 6)
    steps = torch.arange(6)
    batch = {
        "proprio": proprio,
        "actions": actions,
        "past_mask": (steps < 2).expand(b, 6).clone(),
        "future_mask": (steps >= 2).expand(b, 6).clone(),
    }
    return torch.randn(b, 3, 8, generator=g), torch.ones(b, 3, dtype=torch.bool), batch


def test_loss_is_l1_on_poses_and_bce_on_the_gripper(action_registry):
    torch.manual_seed(0)
    expert = build(action_registry, gripper_dims=[2])
    torch.nn.init.normal_(expert.net.out.weight)  # zero-init output would make every logit 0
    cond, mask, batch = gripper_batch(8)
    loss = expert.loss(cond, mask, batch)
    pred = expert._predict(cond, mask, batch)[0][:, 2:]
    target = batch["actions"][:, 2:]
    l1 = (pred[..., :2] - target[..., :2]).abs()
    bce = F.binary_cross_entropy_with_logits(pred[..., 2], (target[..., 2] == OPEN).float(), reduction="none")
    expected = (l1.sum() + bce.sum()) / (pred.shape[0] * pred.shape[1] * 3)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(expert.gripper_low[2:], torch.full((4, 1), CLOSED))
    torch.testing.assert_close(expert.gripper_high[2:], torch.full((4, 1), OPEN))
    assert torch.isinf(expert.gripper_low[:2]).all()  # past steps are context: never a target


def test_sampling_emits_exactly_the_two_command_values(action_registry):
    torch.manual_seed(0)
    expert = build(action_registry, gripper_dims=[2])
    cond, mask, batch = gripper_batch(64)
    with pytest.raises(ValueError, match="train it first"):
        expert.sample(cond, mask, batch)
    opt = torch.optim.AdamW(expert.parameters(), lr=3e-3)
    for _ in range(60):
        loss = expert.loss(cond, mask, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expert.eval()
    out = expert.sample(cond, mask, batch)
    gripper = out[:, 2:, 2]
    torch.testing.assert_close(gripper.unique(), torch.tensor([CLOSED, OPEN]))
    assert (gripper == batch["actions"][:, 2:, 2]).float().mean() > 0.95  # the classifier learned the rule
    torch.testing.assert_close(out[:, :2], batch["actions"][:, :2])  # past actions are still pinned
    plain = build(action_registry)  # without gripper_dims: a regressed value, and no extra state
    assert not any(k.startswith("gripper") for k in plain.state_dict())


def test_bad_gripper_dims_fail_naming_the_key(action_registry):
    with pytest.raises(ConfigError, match=r"gripper_dims: \[3\] out of range for action_dim 3"):
        build(action_registry, gripper_dims=[3])
    with pytest.raises(ConfigError, match="gripper_dims"):
        build(action_registry, gripper_dims=[-1])
    with pytest.raises(ConfigError, match="gripper_dims must not repeat"):
        build(action_registry, gripper_dims=[1, 1])


def test_command_values_survive_export(foundry_pm, tmp_path):
    """Train a tiny VLA with gripper_dims, load its export as a Policy: every planned gripper value is one
    of the store's own gripper actions (a regression head would emit values in between)."""
    import foundry_action.plugin
    from foundry_action.policy import Policy
    from foundry_action.store import open_store
    from foundry_action.testing import make_tiny_store
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.registry import collect
    from foundry_core.train.run import train_from_config

    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(foundry_pm)
    store = make_tiny_store(tmp_path / "store.zarr", lengths=(12, 14))
    robot = {"name": "zarr_episodes", "path": str(store), "past": 1, "future": 3}
    raw = {
        "run": {"name": "gripper", "out_dir": str(tmp_path / "run"), "device": "cpu"},
        "model": {
            "name": "vla",
            "backbone": {"name": "tiny_test", "width": 16},
            "expert": {"name": "l1_regression", "preset": "debug", "gripper_dims": [9]},
        },
        "data": {"mix": [{"source": robot}]},
        "train": {
            "budget": {"steps": 4},
            "batch": {"global": 8, "per_device": 8},
            "optim": {"name": "adamw", "lr": 1.0e-2},
            "progress": False,
        },
    }
    policy = Policy.from_pretrained(
        train_from_config(raw, pm=foundry_pm) / "export", registry=collect(foundry_pm)
    )
    expert = policy.model.expert
    assert expert.cfg.gripper_dims == [9]
    assert bool((expert.gripper_low[1:] <= expert.gripper_high[1:]).all())  # loaded, not the initial inf
    ep = open_store(store).episode(0)
    stored = np.asarray(ep["action"])[:, 9]
    emitted = []
    for t in range(6):
        obs = {
            "images": {c: ep[f"camera/{c}"][t] for c in ("scene", "wrist")},
            "proprio": ep["proprio"][t],
            "instruction": "do thing number 0",
        }
        emitted.extend(policy.act(obs)[:, 9].tolist())
    all_stored = np.concatenate([np.asarray(open_store(store).episode(i)["action"])[:, 9] for i in range(2)])
    for value in emitted:
        assert np.abs(all_stored - value).min() < 1e-4, (value, stored)


def test_sampled_choice_follows_the_probability_once_per_chunk(action_registry):
    """``gripper_choice: sample``: open with probability sigmoid(logit), one draw per chunk (no flicker
    inside it), reproducible from the row's own generator; ``sign`` never varies for a fixed input."""
    torch.manual_seed(0)
    cond, mask, batch = gripper_batch(16)
    expert = build(action_registry, gripper_dims=[2], gripper_choice="sample")
    expert.loss(cond, mask, batch)  # records the command values; weights stay at their initial zeros
    expert.eval()
    with torch.no_grad():
        expert.net.out.bias[2] = 0.85  # every gripper logit: P(open) = sigmoid(0.85) = 0.70
    n = 2000
    one = {k: v[:1].expand(n, *v.shape[1:]) for k, v in batch.items()}
    out = expert.sample(cond[:1].expand(n, -1, -1), mask[:1].expand(n, -1), one)[:, 2:, 2]
    is_open = out == OPEN
    assert bool((is_open | (out == CLOSED)).all())
    assert abs(is_open[:, 0].float().mean().item() - torch.sigmoid(torch.tensor(0.85)).item()) < 0.04
    assert bool((is_open == is_open[:, :1]).all())  # one draw for the whole chunk
    rows = {**{k: v[:2] for k, v in batch.items()}}
    draws = [
        expert.sample(
            cond[:2],
            mask[:2],
            {**rows, "noise_generators": [torch.Generator().manual_seed(s) for s in (7, 8)]},
        )
        for _ in range(2)
    ]
    torch.testing.assert_close(draws[0], draws[1])
    sign = build(action_registry, gripper_dims=[2])
    sign.load_state_dict(expert.state_dict())
    sign.eval()
    assert bool(
        (sign.sample(cond[:1].expand(n, -1, -1), mask[:1].expand(n, -1), one)[:, 2:, 2] == OPEN).all()
    )
    with pytest.raises(ConfigError, match="gripper_choice"):
        build(action_registry, gripper_dims=[2], gripper_choice="argmax")
