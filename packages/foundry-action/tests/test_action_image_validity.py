"""Image validity: the pixels of a frame marked invalid (``image_mask`` false) never change what a vla
computes (loss and sampled chunk), for every expert, with and without the flat image read-out; and
its tokens are masked out of the conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_action.testing import assert_invalid_frames_ignored, tiny_vla_node
from foundry_core.registry import BuildContext


@pytest.mark.parametrize("expert", ["flow_matching", "diffusion", "l1_regression"])
@pytest.mark.parametrize("readout", [0, 4])
def test_invalid_frames_cannot_change_the_output(action_registry, tiny_episodes, expert, readout):
    torch.manual_seed(0)
    node = tiny_vla_node(tiny_episodes, {"name": expert, "preset": "debug", "image_readout": readout})
    model = action_registry.build("model", node, BuildContext(action_registry))
    source = action_registry.build("data_source", node["data"], BuildContext(action_registry))
    batch = source.make_batch(
        torch.arange(6).numpy(), torch.Generator().manual_seed(0)
    )  # anchors 0..5 of episode 0
    assert batch["image_mask"][0].tolist() == [False, False, True, True]  # t-1 before the start: invalid
    batch["image_mask"][3, 2] = False  # and one frame of the current step
    assert_invalid_frames_ignored(model, batch)
    tokens, mask = model.condition(batch)
    per_image = 4  # tiny backbone: grid 2 -> 4 tokens per image, image tokens first
    assert not mask[0, : 2 * per_image].any() and mask[0, 2 * per_image :].all()
    assert not tokens[0, : 2 * per_image].any()


def test_policy_marks_history_before_the_start_invalid(action_registry, tiny_episodes, tmp_path):
    from foundry_action.policy import Policy
    from foundry_core.export import export_model

    torch.manual_seed(0)
    node = tiny_vla_node(tiny_episodes, "l1_regression")
    model = action_registry.build("model", node, BuildContext(action_registry))
    policy = Policy.from_pretrained(export_model(model, node, tmp_path / "export"), registry=action_registry)
    from foundry_action.store import open_store

    ep = open_store(tiny_episodes).episode(0)
    obs = {
        "images": {c: ep[f"camera/{c}"][0] for c in ("scene", "wrist")},
        "proprio": ep["proprio"][0],
        "instruction": "go",
    }
    policy.observe(obs)
    assert policy.batch()["image_mask"].tolist() == [
        [False, False, True, True]
    ]  # as the sampler masks anchor 0


def test_anchors_at_real_frames_only(tmp_path, caplog):
    from foundry_action.convert import convert
    from foundry_action.data_source import ZarrEpisodes
    from foundry_action.testing import synthetic_episode, write_synthetic_wds

    # anchors every 4th step of a 12-step episode: windows 0-2, 3-6, 7-10 (one run), images at t-1, t
    src = write_synthetic_wds(
        tmp_path / "wds", [synthetic_episode(12, seed=0)], future=2, timesteps=True, anchor_every=4
    )
    convert(src, tmp_path / "s.zarr")
    cfg = {
        "path": str(tmp_path / "s.zarr"),
        "past": 1,
        "future": 2,
        "image_offsets": [-1, 0],
        "pad_short": True,
    }
    with caplog.at_level("WARNING"):
        every = ZarrEpisodes(ZarrEpisodes.Config(**cfg))
    assert len(every) == 11 and "have no real frame at the anchor" in caplog.text
    real = ZarrEpisodes(ZarrEpisodes.Config(**cfg, anchors="image_valid"))
    assert sorted(real.sampler.index_anchor.tolist()) == [0, 3, 4, 7, 8]  # timesteps 0, 3, 4, 7, 8
    batch = real.make_batch(np.arange(len(real)), torch.Generator().manual_seed(0))
    assert batch["image_mask"][:, 2:].all()  # the anchor's own frame is always real
