"""vla model: build from a store, train (loss goes down), freeze patterns, co-training delegation, export."""

from __future__ import annotations

import json

import pytest
import torch

import foundry_action.plugin
from foundry_action.testing import tiny_vla_node
from foundry_action.tiny_backbone import TinyBackbone, register_tiny_backbone
from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext, collect
from foundry_core.testing import registered_names

EXPERTS = registered_names(foundry_action.plugin, "foundry-action", "action_expert")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def source_batches(action_registry, node, batch_size=8, seed=0):
    source = action_registry.build("data_source", node["data"], BuildContext(action_registry))
    return source.batches(batch_size, rank=0, world_size=1, seed=seed)


@pytest.mark.parametrize("expert", EXPERTS)
def test_vla_builds_from_store_and_trains(action_registry, tiny_episodes, expert):
    torch.manual_seed(0)
    node = tiny_vla_node(tiny_episodes, expert)
    model = action_registry.build("model", node, BuildContext(action_registry))
    d = model.expert.dims
    assert (d.action_dim, d.proprio_dim, d.window, d.proprio_steps, d.cond_dim) == (10, 10, 5, 2, 16)
    assert model.spec["cameras"] == ["scene", "wrist"] and model.spec["is_language_conditioned"] is True
    batch = next(source_batches(action_registry, node, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, metrics = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["action_loss"])
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    out = model.predict(batch)
    assert out.shape == (16, 5, 10)
    assert model.fsdp_block_types() and model.flops_per_sample(batch) > 0


def test_freeze_backbone_and_patterns(action_registry, tiny_episodes):
    model = action_registry.build("model", tiny_vla_node(tiny_episodes, freeze_backbone=True), BuildContext(action_registry))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.expert.parameters())
    model = action_registry.build("model", tiny_vla_node(tiny_episodes, freeze=["conv.*"], unfreeze=["conv.2.*"]), BuildContext(action_registry))
    grads = {n: p.requires_grad for n, p in model.backbone.named_parameters()}
    assert grads["conv.0.weight"] is False and grads["conv.2.weight"] is True and grads["slot.weight"] is True
    with pytest.raises(ConfigError, match=r"model.freeze \(backbone parameters\): pattern 'convv.*' matches no parameter"):
        action_registry.build("model", tiny_vla_node(tiny_episodes, freeze=["convv.*"]), BuildContext(action_registry))


def test_vla_needs_data_or_policy(action_registry):
    node = {"name": "vla", "backbone": {"name": "tiny_test"}, "expert": {"name": "l1_regression"}}
    with pytest.raises(ConfigError, match="data"):
        action_registry.build("model", node, BuildContext(action_registry))


class LossBackbone(TinyBackbone):
    """A backbone that can also train on caption batches (like the composed VLM)."""

    def compute_loss(self, batch):
        loss = self.byte_emb.weight.pow(2).mean()
        return loss, {"caption_loss": float(loss.detach())}


def test_cotraining_delegates_non_robot_batches(action_registry, foundry_pm, tiny_episodes):
    caption = {"modality": "image_caption", "images": torch.zeros(2, 1, 3, 8, 8, dtype=torch.uint8), "captions": ["a", "b"]}
    model = action_registry.build("model", tiny_vla_node(tiny_episodes), BuildContext(action_registry))
    with pytest.raises(DataError, match="'image_caption' batch.*no compute_loss"):
        model.compute_loss(caption)
    register_tiny_backbone(foundry_pm, "tiny_loss")
    reg = collect(foundry_pm)
    spec = reg.get("backbone", "tiny_loss")
    object.__setattr__(spec, "target", LossBackbone)
    model = reg.build("model", {**tiny_vla_node(tiny_episodes), "backbone": {"name": "tiny_loss"}}, BuildContext(reg))
    loss, metrics = model.compute_loss(caption)
    assert "caption_loss" in metrics
    loss.backward()
    assert model.backbone.byte_emb.weight.grad is not None


def test_export_and_load_pretrained_round_trip(action_registry, tiny_episodes, tmp_path):
    from foundry_core.export import export_model, load_pretrained

    torch.manual_seed(0)
    node = tiny_vla_node(tiny_episodes, "diffusion")
    model = action_registry.build("model", node, BuildContext(action_registry)).eval()
    out = export_model(model, node, tmp_path / "export")
    assert (out / "stats" / "norm_stats.safetensors").is_file()
    policy = json.loads((out / "policy.json").read_text())
    assert policy["action_dim"] == 10 and policy["past"] == 1 and policy["future"] == 3 and policy["fps"] == 10.0
    # the export no longer needs the data
    tiny_episodes.rename(tmp_path / "moved.zarr")
    loaded = load_pretrained(out, registry=action_registry)
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)
    assert loaded.spec == model.spec
    torch.testing.assert_close(
        torch.as_tensor(loaded.stats.affine("action")[1]), torch.as_tensor(model.stats.affine("action")[1])
    )


def test_load_fails_loudly_when_stats_do_not_match(action_registry, tiny_episodes, tmp_path):
    from foundry_core.export import export_model, load_pretrained

    node = tiny_vla_node(tiny_episodes, "l1_regression")
    out = export_model(action_registry.build("model", node, BuildContext(action_registry)), node, tmp_path / "export")
    policy = json.loads((out / "policy.json").read_text())
    policy["field_dims"]["action"] = 7
    (out / "policy.json").write_text(json.dumps(policy))
    with pytest.raises(DataError, match="field 'action' has 7 dims but its statistics have 10"):
        load_pretrained(out, registry=action_registry)


def test_trainer_grad_checkpointing_gives_same_gradients(action_registry, tiny_episodes):
    """train.grad_checkpointing checkpoints the expert blocks (declared in fsdp_block_types) exactly."""
    from foundry_core.train.trainer import enable_grad_checkpointing

    node = tiny_vla_node(tiny_episodes, "l1_regression")
    batch = next(source_batches(action_registry, node, 4))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = action_registry.build("model", node, BuildContext(action_registry))
        torch.nn.init.normal_(model.expert.net.out.weight, std=0.1)  # zero-init would stop gradients upstream
        if checkpointing:
            enable_grad_checkpointing(model)
        loss, _ = model.compute_loss(batch)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.expert.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


class NoSpanBackbone(TinyBackbone):
    """A backbone that does not say where its image tokens are."""

    image_token_span = None


def test_image_readout_span_comes_from_the_backbone_and_survives_export(action_registry, foundry_pm, tiny_episodes, tmp_path):
    from foundry_core.export import export_model, load_pretrained

    torch.manual_seed(0)
    node = tiny_vla_node(tiny_episodes, "l1_regression")
    node["expert"] = {**node["expert"], "image_readout": 3}
    model = action_registry.build("model", node, BuildContext(action_registry))
    # 2 cameras x 2 image offsets, grid 2 x 2 each, before the prompt token
    assert model.expert.dims.image_span == (0, 16)
    batch = next(source_batches(action_registry, node, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(3):  # moves the read-out's running statistics off their defaults
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert not torch.all(model.expert.net.readout_norm.running_var == 1)
    out = export_model(model, node, tmp_path / "export")
    loaded = load_pretrained(out, registry=action_registry).eval()
    torch.testing.assert_close(loaded.predict(batch), model.predict(batch))
    register_tiny_backbone(foundry_pm, "tiny_nospan")
    reg = collect(foundry_pm)
    object.__setattr__(reg.get("backbone", "tiny_nospan"), "target", NoSpanBackbone)
    with pytest.raises(ConfigError, match="'tiny_nospan'.*does not say where its image tokens are"):
        reg.build("model", {**node, "backbone": {"name": "tiny_nospan"}}, BuildContext(reg))


def test_old_horizon_key_fails_in_a_config_and_loads_from_an_old_export(action_registry, tiny_episodes, tmp_path):
    """``horizon`` was the expert's window: a config naming it fails naming ``window``; an export written
    with it still loads (read under the new name) and a new export of that node writes ``window``."""
    import yaml

    from foundry_core.export import export_model, load_pretrained

    old_expert = {"name": "flow_matching", "preset": "debug", "horizon": 5}
    with pytest.raises(ConfigError, match=r"model\.expert\.horizon: this key is now called 'window'; rename it"):
        action_registry.build("model", {**tiny_vla_node(tiny_episodes), "expert": old_expert}, where="model")
    torch.manual_seed(0)
    model = action_registry.build("model", tiny_vla_node(tiny_episodes), BuildContext(action_registry)).eval()
    out = export_model(model, tiny_vla_node(tiny_episodes), tmp_path / "export")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["model"]["expert"] = old_expert  # what an export written before the rename holds
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_pretrained(out, registry=action_registry).eval()
    assert loaded.expert.dims.window == 5
    batch = next(source_batches(action_registry, tiny_vla_node(tiny_episodes), 4))
    torch.manual_seed(1)
    want = model.predict(batch)
    torch.manual_seed(1)
    torch.testing.assert_close(loaded.predict(batch), want)
    again = export_model(loaded, action_registry.node("model", cfg["model"], upgrade=True), tmp_path / "again")
    expert = yaml.safe_load((again / "config.yaml").read_text())["model"]["expert"]
    assert expert["window"] == 5 and "horizon" not in expert
