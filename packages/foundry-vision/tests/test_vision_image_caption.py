"""Image-caption data: the reference shards read unchanged, determinism, rank sharding, resume, bad input."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch

from foundry_core.errors import DataError
from foundry_vision.data.image_caption import ImageCaptionShards
from foundry_vision.data.shapes import SyntheticImageCaption, render_sample, write_image_caption_shards
from foundry_vision.preprocess import AugmentConfig


def _source(path, **kw):
    return ImageCaptionShards(ImageCaptionShards.Config(path=str(path), image_size=32, **kw))


def test_reads_reference_shards(shared_data, vision_registry):
    path = shared_data / "vla_foundry" / "tiny_dataset" / "image_caption"
    src = vision_registry.build("data_source", {"name": "wds_image_caption", "path": str(path), "image_size": 32,
                                                "augment": {"random_resized_crop": [0.5, 1.0], "color_jitter": 0.2}})
    assert len(src) == 128  # 16 shards x 8 real pairs
    batch = next(src.batches(4, rank=0, world_size=1, seed=0))
    assert batch["modality"] == "image_caption"
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (4, 1, 3, 32, 32)
    assert all(isinstance(c, str) and c for c in batch["captions"]) and batch["prompts"] == [""] * 4
    key = batch["keys"][0]
    shard = next(r for r in map(src.sample_ref, range(len(src))) if r.key == key).shard
    with tarfile.open(shard) as tar:
        assert tar.extractfile(f"{key}.txt").read().decode().strip() == batch["captions"][0]


@pytest.fixture
def shapes_dir(tmp_path):
    return write_image_caption_shards(tmp_path / "shapes", num_samples=24, per_shard=8, size=32)


def test_deterministic_and_rank_sharded(shapes_dir):
    def keys(rank, world, seed=0, n=3):
        it = _source(shapes_dir).batches(2, rank=rank, world_size=world, seed=seed)
        return [k for _ in range(n) for k in next(it)["keys"]]

    assert keys(0, 1) == keys(0, 1)
    assert keys(0, 1) != keys(0, 1, seed=1)
    r0, r1 = keys(0, 2), keys(1, 2)
    assert not set(r0) & set(r1) and len(set(r0 + r1)) == 12


def test_resume_is_exact(shapes_dir):
    aug = AugmentConfig(random_resized_crop=(0.5, 1.0), color_jitter=0.3)
    src = _source(shapes_dir, augment=aug)
    it = src.batches(4, rank=0, world_size=1, seed=3)
    next(it)
    state = src.state_dict()
    expected = [next(it) for _ in range(7)]  # crosses an epoch boundary (24 samples)
    resumed = _source(shapes_dir, augment=aug)
    resumed.load_state_dict(state)
    it2 = resumed.batches(4, rank=0, world_size=1, seed=3)
    for want in expected:
        got = next(it2)
        assert got["keys"] == want["keys"] and torch.equal(got["images"], want["images"])


def test_start_up_opens_no_tar_and_a_wrong_count_is_an_error_when_read(shapes_dir, monkeypatch):
    from foundry_vision.data import image_caption

    opened = []
    real = image_caption.index_shard
    monkeypatch.setattr(image_caption, "index_shard", lambda url: opened.append(url) or real(url))
    src = _source(shapes_dir, shuffle=False)
    assert len(src) == 24 and opened == []  # planned from the manifest alone
    next(src.batches(2, rank=0, world_size=1, seed=0))
    assert len(opened) == 1  # only the shard the first batch reads from
    lines = (shapes_dir / "manifest.jsonl").read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "num_sequences": 9})
    (shapes_dir / "manifest.jsonl").write_text("\n".join(lines))
    bad = _source(shapes_dir, shuffle=False)
    assert len(bad) == 25
    with pytest.raises(DataError, match=r"manifest.jsonl:1: shard .* claims num_sequences=9 but holds 8 samples"):
        next(bad.batches(2, rank=0, world_size=1, seed=0))


def _write_shard(folder, members):
    folder.mkdir()
    with tarfile.open(folder / "s.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / "manifest.jsonl").write_text(json.dumps({"shard": "s", "num_sequences": 1}) + "\n")
    return folder


def test_undecodable_image_names_the_sample(tmp_path):
    src = _source(_write_shard(tmp_path / "d", {"k1.jpg": b"not an image", "k1.txt": b"a cat"}), num_workers=1)
    with pytest.raises(DataError, match=r"sample 'k1': undecodable \.jpg"):
        next(src.batches(1, rank=0, world_size=1, seed=0))


def test_missing_caption_names_the_sample(tmp_path):
    buf = io.BytesIO()
    render_sample(0, 16)[0].save(buf, format="PNG")
    src = _source(_write_shard(tmp_path / "d", {"k2.png": buf.getvalue(), "k2.json": b"{}"}), num_workers=1)
    with pytest.raises(DataError, match="sample 'k2': missing caption"):
        next(src.batches(1, rank=0, world_size=1, seed=0))


def test_synthetic_source_matches_rendering_and_resumes():
    src = SyntheticImageCaption(SyntheticImageCaption.Config(num_samples=10, image_size=16))
    it = src.batches(3, rank=0, world_size=1, seed=0)
    first = next(it)
    assert first["images"].shape == (3, 1, 3, 16, 16)
    index = int(first["keys"][0])
    assert first["captions"][0] == render_sample(index, 16)[1]
    state = src.state_dict()
    want = next(it)
    src2 = SyntheticImageCaption(SyntheticImageCaption.Config(num_samples=10, image_size=16))
    src2.load_state_dict(state)
    assert next(src2.batches(3, rank=0, world_size=1, seed=0))["keys"] == want["keys"]
