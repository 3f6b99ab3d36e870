"""Tests of the example plugin, written the way a third-party author would: in-process, isolated manager."""

from __future__ import annotations

import torch

import foundry_example_plugin.plugin as plugin
from foundry_core.cli.main import build_cli
from foundry_core.registry import BuildContext, collect


def build_expert(foundry_pm, **fields):
    foundry_pm.register(plugin, name="foundry-example-plugin")
    registry = collect(foundry_pm)
    ctx = BuildContext(registry, dims={"cond": 8, "action": 3, "proprio": 2, "window": 4})
    return registry, registry.build("action_expert", {"name": "mlp_chunk", **fields}, ctx)


def toy_batch(n: int = 64):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(n, 5, 8, generator=g)
    proprio = torch.randn(n, 1, 2, generator=g)
    # the target chunk is a fixed linear function of the inputs: learnable by an MLP
    target = (cond.mean(1)[:, :3] + proprio[:, 0, :1]).unsqueeze(1).repeat(1, 4, 1)
    past = torch.zeros(n, 4, dtype=torch.bool)
    past[:, 0] = True
    return cond, torch.ones(n, 5, dtype=torch.bool), {"proprio": proprio, "actions": target, "future_mask": ~past, "past_mask": past}


def test_registered_and_built_from_dims(foundry_pm):
    registry, expert = build_expert(foundry_pm, hidden=32)
    assert registry.get("action_expert", "mlp_chunk").provider == "foundry-example-plugin"
    cond, mask, batch = toy_batch(2)
    assert expert.sample(cond, mask, batch).shape == (2, 4, 3)


def test_trains_on_a_toy_problem(foundry_pm):
    torch.manual_seed(0)
    _, expert = build_expert(foundry_pm, hidden=64)
    cond, mask, batch = toy_batch()
    opt = torch.optim.Adam(expert.parameters(), lr=3e-3)
    first = expert.loss(cond, mask, batch).item()
    for _ in range(150):
        opt.zero_grad()
        loss = expert.loss(cond, mask, batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    sample = expert.sample(cond, mask, batch)
    assert torch.equal(sample[:, 0], batch["actions"][:, 0])  # past step pinned


def test_command(foundry_pm, cli_runner):
    foundry_pm.register(plugin, name="foundry-example-plugin")
    result = cli_runner.invoke(build_cli(lambda: foundry_pm), ["example", "describe-expert", "--hidden", "16"])
    assert result.exit_code == 0, result.output
    assert "parameters, action window shape (16, 10)" in result.output
