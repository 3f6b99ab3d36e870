"""Action experts: toy training (loss goes down), sample shapes, past pinning, bimodal sampling."""

from __future__ import annotations

import time

import pytest
import torch

import foundry_action.plugin
from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext
from foundry_core.testing import registered_names

EXPERTS = registered_names(foundry_action.plugin, "foundry-action", "action_expert")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def build(action_registry, name, dims, **fields):
    return action_registry.build("action_expert", {"name": name, "preset": "debug", **fields}, BuildContext(action_registry, dims=dims))


def toy_batch(b: int, window: int = 6, past: int = 2, a_dim: int = 3, p_dim: int = 4, seed: int = 0):
    """Actions are a fixed linear function of the (single-step) proprio; cond is noise."""
    g = torch.Generator().manual_seed(seed)
    proprio = torch.randn(b, 2, p_dim, generator=g)
    w = torch.linspace(-1, 1, p_dim * window * a_dim).view(p_dim, window * a_dim)
    actions = (proprio[:, -1] @ w).view(b, window, a_dim).tanh()
    steps = torch.arange(window)
    batch = {
        "modality": "robot",
        "proprio": proprio,
        "actions": actions,
        "past_mask": (steps < past).expand(b, window).clone(),
        "future_mask": (steps >= past).expand(b, window).clone(),
    }
    cond = torch.randn(b, 3, 8, generator=g)
    mask = torch.ones(b, 3, dtype=torch.bool)
    mask[:, -1] = False
    return cond, mask, batch


DIMS = {"cond": 8, "action": 3, "proprio": 4, "window": 6, "proprio_steps": 2}


@pytest.mark.parametrize("name", EXPERTS)
def test_expert_trains_and_samples(action_registry, name):
    torch.manual_seed(0)
    expert = build(action_registry, name, DIMS, num_action_head_repeats=2)
    opt = torch.optim.AdamW(expert.parameters(), lr=3e-3)
    cond, mask, batch = toy_batch(32)
    losses = []
    for _ in range(40):
        loss = expert.loss(cond, mask, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    expert.eval()
    out = expert.sample(cond[:5], mask[:5], {k: v[:5] if torch.is_tensor(v) else v for k, v in batch.items()})
    assert out.shape == (5, 6, 3)
    assert torch.isfinite(out).all()
    # past actions are pinned exactly
    torch.testing.assert_close(out[:, :2], batch["actions"][:5, :2])


@pytest.mark.parametrize("name", EXPERTS)
def test_debug_preset_is_fast_and_samples_without_past(action_registry, name):
    expert = build(action_registry, name, DIMS)
    cond, mask, batch = toy_batch(8)
    start = time.process_time()  # CPU time: robust to other processes sharing the cores
    loss = expert.loss(cond, mask, batch)
    loss.backward()
    out = expert.sample(cond, mask, {"proprio": batch["proprio"]})  # no past actions given
    assert time.process_time() - start < 1.0
    assert out.shape == (8, 6, 3)


def test_padded_conditioning_tokens_are_ignored(action_registry):
    torch.manual_seed(0)
    expert = build(action_registry, "l1_regression", DIMS)
    torch.nn.init.normal_(expert.net.out.weight)  # zero-init output would hide any dependence
    cond, mask, batch = toy_batch(4)
    a = expert.sample(cond, mask, batch)
    cond2 = cond.clone()
    cond2[:, -1] = 100.0  # masked position
    torch.testing.assert_close(expert.sample(cond2, mask, batch), a)
    cond2[:, 0] = 100.0  # visible position
    assert not torch.allclose(expert.sample(cond2, mask, batch), a)


def test_missing_dims_and_bad_config_are_clear(action_registry):
    with pytest.raises(ConfigError, match="action_dim"):
        build(action_registry, "flow_matching", {"cond": 8, "window": 4})
    with pytest.raises(ConfigError, match="inference_steps"):
        build(action_registry, "diffusion", DIMS, inference_steps=0)
    with pytest.raises(ConfigError, match="num_action_head_repeats"):
        build(action_registry, "flow_matching", DIMS, num_action_head_repeats=0)
    expert = build(action_registry, "flow_matching", DIMS)
    cond, mask, batch = toy_batch(2)
    batch["actions"] = batch["actions"][:, :4]
    with pytest.raises(ValueError, match=r"\[B, window 6, 3\]"):
        expert.loss(cond, mask, batch)


def bimodal_fraction(samples: torch.Tensor) -> tuple[float, float, float]:
    x = samples.flatten()
    return (x > 0.5).float().mean().item(), (x < -0.5).float().mean().item(), (x.abs() < 0.3).float().mean().item()


@pytest.mark.parametrize(
    ("name", "fields", "samplers"),
    [
        ("flow_matching", {"inference_steps": 16}, [{}]),
        ("diffusion", {"inference_steps": 10}, [{"sampler": "ddim"}, {"sampler": "ddpm"}]),
        ("diffusion", {"prediction": "epsilon", "clip_sample": 1.5}, [{"sampler": "ddpm"}]),
    ],
)
def test_sampler_reproduces_bimodal_distribution(action_registry, name, fields, samplers):
    """1-D actions drawn from {-1, +1} (+ small noise) with identical conditioning: both modes appear."""
    torch.manual_seed(0)
    dims = {"cond": 4, "action": 1, "proprio": 0, "window": 1, "proprio_steps": 1}
    expert = build(action_registry, name, dims, **fields)
    opt = torch.optim.AdamW(expert.parameters(), lr=3e-3)
    b = 128
    cond = torch.ones(b, 1, 4)
    mask = torch.ones(b, 1, dtype=torch.bool)
    for _ in range(300):
        sign = torch.randint(0, 2, (b, 1, 1)).float() * 2 - 1
        actions = sign + 0.05 * torch.randn(b, 1, 1)
        batch = {"actions": actions, "past_mask": torch.zeros(b, 1, dtype=torch.bool),
                 "future_mask": torch.ones(b, 1, dtype=torch.bool)}
        loss = expert.loss(cond, mask, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expert.eval()
    n = 512
    for sample_kw in samplers:
        out = expert.sample(cond[:1].expand(n, 1, 4), mask[:1].expand(n, 1), {}, **sample_kw)
        pos, neg, mid = bimodal_fraction(out)
        assert pos > 0.3 and neg > 0.3, (sample_kw, pos, neg, mid)
        assert mid < 0.1, (sample_kw, pos, neg, mid)


def test_l1_regression_collapses_bimodal_to_the_median_region(action_registry):
    """Contrast for the test above: a deterministic regressor cannot produce both modes."""
    torch.manual_seed(0)
    dims = {"cond": 4, "action": 1, "proprio": 0, "window": 1, "proprio_steps": 1}
    expert = build(action_registry, "l1_regression", dims)
    out = expert.sample(torch.ones(16, 1, 4), torch.ones(16, 1, dtype=torch.bool), {"actions": None})
    assert out.std() < 1e-5  # one answer per conditioning


def test_ddim_timesteps_descend_and_ddpm_uses_all(action_registry):
    expert = build(action_registry, "diffusion", DIMS, num_train_timesteps=50, inference_steps=10)
    ks = expert.timesteps("ddim", 10)
    assert ks[0] == 49 and ks[-1] == 0 and len(ks) == 10 and ks == sorted(ks, reverse=True)
    assert expert.timesteps("ddpm", 10) == list(range(49, -1, -1))


def hot_token_batch(b: int, n_tokens: int = 8, seed: int = 0):
    """Which of the first ``n_tokens`` (image) tokens is 'hot' decides the action (a localization toy).

    Every token has the same content up to noise, except the hot one; the target is the hot token's
    index scaled to [-1, 1]. Attention over tokens without positions cannot tell where the hot one is.
    """
    g = torch.Generator().manual_seed(seed)
    hot = torch.randint(0, n_tokens, (b,), generator=g)
    cond = 0.1 * torch.randn(b, n_tokens + 1, 8, generator=g)
    cond[torch.arange(b), hot, 0] += 3.0
    target = (hot.float() / (n_tokens - 1) * 2 - 1)[:, None, None].expand(b, 2, 1).clone()
    batch = {"modality": "robot", "actions": target, "past_mask": torch.zeros(b, 2, dtype=torch.bool),
             "future_mask": torch.ones(b, 2, dtype=torch.bool)}
    return cond, torch.ones(b, n_tokens + 1, dtype=torch.bool), batch


def test_image_readout_localizes_where_attention_alone_does_not(action_registry):
    dims = {"cond": 8, "action": 1, "proprio": 0, "window": 2, "proprio_steps": 1, "image_span": (0, 8)}
    cond, mask, batch = hot_token_batch(256)
    test_cond, test_mask, test_batch = hot_token_batch(128, seed=1)
    errors = {}
    for readout in (0, 2):
        torch.manual_seed(0)
        expert = build(action_registry, "l1_regression", dims, image_readout=readout)
        opt = torch.optim.AdamW(expert.parameters(), lr=3e-3)
        for step in range(150):
            i = torch.arange(step * 32, step * 32 + 32) % 256
            loss = expert.loss(cond[i], mask[i], {k: v[i] if torch.is_tensor(v) else v for k, v in batch.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        expert.eval()
        pred = expert.sample(test_cond, test_mask, {"modality": "robot"})
        errors[readout] = (pred - test_batch["actions"]).abs().mean().item()
    # measured: 0.62 without (about the median guess), 0.05 with the read-out
    assert errors[0] > 0.35 and errors[2] < 0.15, errors


def test_image_readout_uses_token_order_and_needs_a_span(action_registry):
    dims = {"cond": 8, "action": 3, "proprio": 4, "window": 6, "proprio_steps": 2}
    with pytest.raises(ConfigError, match="image_readout needs the image tokens' positions"):
        build(action_registry, "l1_regression", dims, image_readout=4)
    with pytest.raises(ConfigError, match="image_readout must be >= 0"):
        build(action_registry, "l1_regression", {**dims, "image_span": (0, 2)}, image_readout=-1)
    cond, mask, batch = toy_batch(4)
    mask[:] = True
    swapped = cond[:, [1, 0, 2]]
    plain = build(action_registry, "l1_regression", dims).eval()
    with torch.no_grad():
        plain.net.out.weight.normal_()
    # without the read-out the expert cannot tell the order of its conditioning tokens ...
    torch.testing.assert_close(plain.sample(cond, mask, batch), plain.sample(swapped, mask, batch))
    expert = build(action_registry, "l1_regression", {**dims, "image_span": (0, 2)}, image_readout=4).eval()
    with torch.no_grad():
        expert.net.out.weight.normal_()
        expert.net.readout_out.weight.normal_()
    # ... with it, it can (it reads tokens 0 and 1 in order)
    assert not torch.allclose(expert.sample(cond, mask, batch), expert.sample(swapped, mask, batch))
    # a training batch of one sample is normalized with the running estimates (batch norm would fail)
    expert.train()
    one = {k: v[:1] if torch.is_tensor(v) else v for k, v in batch.items()}
    expert.net.readout_norm.running_mean.fill_(0.5)
    train_out = expert.net(cond[:1], mask[:1], one["proprio"], torch.zeros(1, 6, 3), torch.zeros(1, 6, dtype=torch.bool))
    expert.eval()
    torch.testing.assert_close(train_out, expert.sample(cond[:1], mask[:1], {**one, "actions": None}))
    with pytest.raises(ValueError, match="image tokens at positions 0..4"):
        build(action_registry, "l1_regression", {**dims, "image_span": (0, 5)}, image_readout=4).sample(cond, mask, batch)


def test_prompt_readout_reads_the_last_unmasked_token(action_registry):
    """``prompt_readout``: the last valid conditioning token reaches every action token directly."""
    cond, mask, batch = toy_batch(4)  # the third token is padding
    expert = build(action_registry, "l1_regression", DIMS, prompt_readout=True).eval()
    with torch.no_grad():
        expert.net.out.weight.normal_()
        assert torch.equal(expert.net.prompt_out.weight, torch.zeros_like(expert.net.prompt_out.weight))  # starts as a no-op
        expert.net.prompt_out.weight.normal_()
    base = expert.sample(cond, mask, batch)
    padded = cond.clone()
    padded[:, 2] += 5.0  # padding: ignored
    torch.testing.assert_close(expert.sample(padded, mask, batch), base)
    net = expert.net
    with torch.no_grad():
        torch.testing.assert_close(net.last_token(cond, mask), net.prompt_out(net.prompt_norm(cond[:, 1])))  # token 1: the last valid
        mask[0, 1] = False  # a shorter prompt: its last valid token is read
        torch.testing.assert_close(net.last_token(cond, mask)[0], net.prompt_out(net.prompt_norm(cond[0, 0])))
    plain = build(action_registry, "l1_regression", DIMS).eval()
    assert not hasattr(plain.net, "prompt_out")
