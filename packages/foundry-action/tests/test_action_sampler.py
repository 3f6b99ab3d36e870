"""Windowed sampler and the zarr_episodes source: edges, masks, images, determinism, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_action import plugin
from foundry_action.data_source import ZarrEpisodes, split_episodes
from foundry_action.sampler import WindowSampler
from foundry_action.store import open_store
from foundry_action.testing import make_tiny_store
from foundry_core.config import parse_dataclass
from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import collect


def _source(path, **kw):
    return ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {"path": str(path), **kw}))


def test_first_and_last_step_padding(tiny_episodes):
    store = open_store(tiny_episodes)
    s = WindowSampler(store, past=2, future=3, image_offsets=[-1, 0])
    assert len(s) == 75
    ep = store.episode(1)
    first = int(np.flatnonzero((s.index_episode == 1) & (s.index_anchor == 0))[0])
    last = int(np.flatnonzero((s.index_episode == 1) & (s.index_anchor == 24))[0])
    wb = s.windows([first, last])
    # first step: both past positions are padding (repeat-edge values, masked)
    assert wb.past_mask[0].tolist() == [False, False, False, False, False, False]
    assert wb.future_mask[0].tolist() == [False, False, True, True, True, True]
    np.testing.assert_array_equal(wb.proprio[0], ep["proprio"][[0, 0, 0]])
    np.testing.assert_array_equal(wb.actions[0, 2:], ep["action"][0:4])
    assert wb.image_mask[0].tolist() == [False, True]
    # last step: the future is padding, the past is real
    assert wb.past_mask[1].tolist() == [True, True, False, False, False, False]
    assert wb.future_mask[1].tolist() == [False, False, True, False, False, False]
    np.testing.assert_array_equal(wb.actions[1, :3], ep["action"][22:25])
    np.testing.assert_array_equal(wb.actions[1, 3:], ep["action"][[24, 24, 24]])
    imgs = s.images(wb.frames)  # [B, N_t * N_cam, H, W, 3], time-major
    assert imgs.shape == (2, 4, 32, 32, 3)
    np.testing.assert_array_equal(imgs[1, 0], ep["camera/scene"][23])
    np.testing.assert_array_equal(imgs[1, 1], ep["camera/wrist"][23])
    np.testing.assert_array_equal(imgs[1, 3], ep["camera/wrist"][24])
    np.testing.assert_array_equal(imgs[0, 0], ep["camera/scene"][0])  # clipped to the episode start
    assert s.image_names() == ["scene@-1", "wrist@-1", "scene@0", "wrist@0"]


def test_source_batch_contract_and_normalization(tiny_episodes):
    src = _source(tiny_episodes, past=1, future=4, image_offsets=[-1, 0], image_size=24)
    b = next(src.batches(8, rank=0, world_size=1, seed=0))
    assert b["modality"] == "robot"
    assert b["images"].shape == (8, 4, 3, 24, 24) and b["images"].dtype == torch.uint8
    assert b["image_mask"].shape == (8, 4) and b["image_mask"].dtype == torch.bool
    assert b["proprio"].shape == (8, 2, 10) and b["actions"].shape == (8, 6, 10)
    assert b["actions"].dtype == torch.float32 and b["past_mask"].shape == (8, 6)
    assert len(b["instruction"]) == 8 and b["instruction"][0].startswith("do thing number")
    store = open_store(tiny_episodes)
    e, t = int(b["episode"][0]), int(b["anchor"][0])
    raw = store.episode(e)["action"][min(t, store.episode_length(e) - 1)]
    np.testing.assert_allclose(src.stats.unnormalize("action", b["actions"][0, 1].numpy()), raw, atol=1e-5)
    meta = src.metadata()
    assert meta["cameras"] == ["scene", "wrist"] and meta["image_size"] == [24, 24]
    assert meta["action_dim"] == 10 and meta["past"] == 1 and meta["future"] == 4 and meta["fps"] == 10.0


def test_deterministic_resumable_and_sharded(tiny_episodes):
    cfg = {"past": 1, "future": 2, "augment": {"enabled": True}}
    a = _source(tiny_episodes, **cfg)
    it = a.batches(4, rank=0, world_size=1, seed=3)
    first = [next(it) for _ in range(3)]
    state = a.state_dict()
    fourth = next(it)
    b = _source(tiny_episodes, **cfg)
    b.load_state_dict(state)
    resumed = next(b.batches(4, rank=0, world_size=1, seed=3))
    for k in ("images", "actions", "episode", "anchor"):
        torch.testing.assert_close(resumed[k], fourth[k])
    c = _source(tiny_episodes, **cfg)
    again = next(c.batches(4, rank=0, world_size=1, seed=3))
    torch.testing.assert_close(again["images"], first[0]["images"])
    other_seed = next(_source(tiny_episodes, **cfg).batches(4, rank=0, world_size=1, seed=4))
    assert not torch.equal(other_seed["anchor"], first[0]["anchor"])
    # two ranks split one global batch: together they equal the world-size-1 batch of size 8
    r0 = next(_source(tiny_episodes, **cfg).batches(2, rank=0, world_size=2, seed=3))
    r1 = next(_source(tiny_episodes, **cfg).batches(2, rank=1, world_size=2, seed=3))
    torch.testing.assert_close(torch.cat([r0["anchor"], r1["anchor"]]), first[0]["anchor"])


def test_epochs_cover_every_window(tiny_episodes):
    src = _source(tiny_episodes, past=0, future=1)
    it = src.batches(25, rank=0, world_size=1, seed=0)
    seen = {(int(e), int(t)) for b in (next(it) for _ in range(3)) for e, t in zip(b["episode"], b["anchor"])}
    assert len(seen) == 75


def test_workers_match_main_process(tiny_episodes):
    main = next(_source(tiny_episodes, future=2).batches(4, rank=0, world_size=1, seed=0))
    src = _source(tiny_episodes, future=2, num_workers=1)
    it = src.batches(4, rank=0, world_size=1, seed=0)
    got = next(it)
    assert src.state_dict() == {"position": 4}
    torch.testing.assert_close(got["images"], main["images"])
    torch.testing.assert_close(got["actions"], main["actions"])
    it.close()


def test_augment_changes_images_only(tiny_episodes):
    plain = next(_source(tiny_episodes, future=2).batches(4, rank=0, world_size=1, seed=0))
    aug = next(_source(tiny_episodes, future=2, augment={"enabled": True}).batches(4, rank=0, world_size=1, seed=0))
    assert aug["images"].shape == plain["images"].shape and not torch.equal(aug["images"], plain["images"])
    torch.testing.assert_close(aug["actions"], plain["actions"])


def test_split_is_disjoint_and_stable():
    train, val = split_episodes(list(range(10)), "train", 0.2), split_episodes(list(range(10)), "val", 0.2)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert val == split_episodes(list(range(10)), "val", 0.2)
    with pytest.raises(ConfigError):
        split_episodes([0], "train", 0.5)


def test_bad_inputs_name_episode_and_field(tmp_path, tiny_episodes):
    store = open_store(tiny_episodes)
    with pytest.raises(DataError, match=r"episode 0 has 20 steps, shorter than the window \(21"):
        WindowSampler(store, past=5, future=15)
    assert len(WindowSampler(store, past=5, future=15, pad_short=True)) == 75
    with pytest.raises(DataError, match="camera 'top' is missing"):
        WindowSampler(store, cameras=["top"], future=2)
    with pytest.raises(DataError, match="field 'gripper' is missing"):
        WindowSampler(store, action_fields=["gripper"], future=2)
    other = make_tiny_store(tmp_path / "o.zarr", dim=7)
    (tiny_episodes / "stats" / "norm_stats.safetensors").write_bytes((other / "stats" / "norm_stats.safetensors").read_bytes())
    with pytest.raises(DataError, match=r"field 'action' has dims \(7,\) but store"):
        _source(tiny_episodes, future=2)
    with pytest.raises(ConfigError, match="normalization"):
        _source(tiny_episodes, normalization="zscore")


def test_registered_in_plugin(foundry_pm, tiny_episodes):
    foundry_pm.register(plugin, name="foundry-action")
    src = collect(foundry_pm).build("data_source", {"name": "zarr_episodes", "path": str(tiny_episodes), "future": 3})
    assert isinstance(src, ZarrEpisodes) and len(src) == 75


def test_augment_identity_determinism_and_resize():
    from foundry_action.augment import AugmentConfig, augment, resize

    x = torch.randint(0, 256, (2, 3, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    same = augment(x, AugmentConfig(enabled=True, crop_scale=1.0, brightness=0.0, contrast=0.0), torch.Generator())
    torch.testing.assert_close(same, x)
    cfg = AugmentConfig(enabled=True)
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    c = augment(x, cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    sat = augment(x, AugmentConfig(enabled=True, saturation=0.5), torch.Generator().manual_seed(1))
    assert sat.shape == x.shape
    assert resize(x, 16).shape == (2, 3, 3, 16, 16) and resize(x, 16).dtype == torch.uint8
    with pytest.raises(ConfigError):
        parse_dataclass(AugmentConfig, {"crop_scale": 1.5})


def test_several_action_fields_are_concatenated_and_normalized_per_field(tmp_path):
    from foundry_action.normalization import NormStats
    from foundry_action.store import EpisodeWriter

    path = tmp_path / "two.zarr"
    rng = np.random.default_rng(0)
    with EpisodeWriter(path, fps=10.0, fields={"xyz": (3,), "grip": (1,), "q": (2,)}, cameras={"cam": (16, 16)}, mode="w") as w:
        for n in (8, 9):
            w.append_episode({"xyz": rng.normal(size=(n, 3)), "grip": 100 + rng.normal(size=(n, 1)),
                              "q": rng.normal(size=(n, 2)), "camera/cam": np.zeros((n, 16, 16, 3), np.uint8)})
    NormStats.compute(open_store(path)).save(path / "stats")
    src = _source(path, future=2, action_field=["xyz", "grip"], proprio_field="q", normalization="min_max")
    b = next(src.batches(6, rank=0, world_size=1, seed=0))
    assert b["actions"].shape == (6, 4, 4) and b["proprio"].shape == (6, 2, 2)
    assert float(b["actions"].abs().max()) <= 1.0 + 1e-5  # the gripper (around 100) is scaled on its own
    assert src.metadata()["field_dims"] == {"xyz": 3, "grip": 1, "q": 2} and src.metadata()["action_dim"] == 4
