"""JPEG camera frames in the episode store: round trip, integrity, append, CLI, training loader."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_action import plugin
from foundry_action.frame_codecs import FrameEncoding
from foundry_action.inspection import validate
from foundry_action.store import EpisodeWriter, open_store
from foundry_action.testing import synthetic_episode, write_synthetic_wds
from foundry_core.cli.main import build_cli
from foundry_core.errors import ConfigError, DataError

SIZE = 48
JPEG90 = FrameEncoding.parse("jpeg", 90)


def _photo_like(length: int, seed: int) -> np.ndarray:
    """Smooth frames with edges (a moving disc on a gradient): what cameras see, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = np.empty((length, SIZE, SIZE, 3), np.uint8)
    for t in range(length):
        cy, cx = 10 + 2 * t + seed, 20 + t
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 64).astype(np.float32)
        base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) + rng.normal(0, 2, (SIZE, SIZE, 3))
        out[t] = np.clip(
            base * (1 - disc[..., None]) + disc[..., None] * np.array([220, 40, 30]), 0, 255
        ).astype(np.uint8)
    return out


def _episode(length: int, seed: int) -> dict[str, np.ndarray]:
    ep = synthetic_episode(length, seed=seed, image_size=SIZE)
    ep["camera/scene"] = _photo_like(length, seed)
    ep["camera/wrist"] = _photo_like(length, seed + 7)[:, ::-1].copy()
    return ep


def _write(path, episodes, frames=None, mode="w"):
    with EpisodeWriter(
        path,
        fps=10.0,
        fields={"action": (10,), "proprio": (10,)},
        cameras={"scene": (SIZE, SIZE), "wrist": (SIZE, SIZE)},
        mode=mode,
        frames=frames,
    ) as w:
        for ep in episodes:
            w.append_episode(ep, task="t", instruction="push")
    return path


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse else float("inf")


@pytest.fixture
def jpeg_store(tmp_path):
    return _write(tmp_path / "jpeg.zarr", [_episode(6, 0), _episode(5, 1)], frames=JPEG90)


def test_round_trip_lossless_exact_jpeg_within_psnr(tmp_path, jpeg_store):
    eps = [_episode(6, 0), _episode(5, 1)]
    lossless = open_store(_write(tmp_path / "lossless.zarr", eps))
    jpeg = open_store(jpeg_store)
    assert lossless.frames == FrameEncoding("lossless") and lossless.attrs["frames"] == {
        "encoding": "lossless"
    }
    assert jpeg.frames == JPEG90 and jpeg.attrs["frames"] == {"encoding": "jpeg", "quality": 90}
    for i, ep in enumerate(eps):
        for cam in ("camera/scene", "camera/wrist"):
            np.testing.assert_array_equal(lossless.episode(i)[cam], ep[cam])
            got = jpeg.episode(i)[cam]
            assert got.shape == ep[cam].shape and got.dtype == np.uint8
            assert 30.0 < _psnr(got, ep[cam]) < 60.0  # lossy, but close (q90 on photo-like frames)
        np.testing.assert_array_equal(jpeg.episode(i)["action"], ep["action"])  # low-dim data stays exact
    start, stop = jpeg.bounds(1)
    fast = jpeg.frame_reader("wrist").read(np.arange(start, stop))  # the loader's one-file-per-frame path
    np.testing.assert_array_equal(fast, jpeg.read("camera/wrist", start, stop))
    low = open_store(_write(tmp_path / "q30.zarr", eps, frames=FrameEncoding.parse("jpeg", 30)))
    assert _psnr(low.episode(0)["camera/scene"], eps[0]["camera/scene"]) < _psnr(
        jpeg.episode(0)["camera/scene"], eps[0]["camera/scene"]
    )
    validate(jpeg_store, full_frames=True)


def test_plain_zarr_reads_a_jpeg_camera_array(jpeg_store):
    import zarr  # the zarr.codecs entry point names foundry.jpeg; open_store registers it too

    frame = zarr.open_array(str(jpeg_store / "data/camera/scene"), mode="r")[3]
    np.testing.assert_array_equal(frame, open_store(jpeg_store).read("camera/scene", 3, 4)[0])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_jpeg_chunk_is_one_error_naming_store_camera_episode_frame(jpeg_store, damage):
    chunk = jpeg_store / "data/camera/wrist/c/8/0/0/0"  # global step 8 = episode 1, frame 2
    raw = bytearray(chunk.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x10  # inside the entropy-coded scan: a JPEG decoder alone would accept it
    else:
        raw = raw[: len(raw) // 2]
    chunk.write_bytes(bytes(raw))
    store = open_store(jpeg_store)
    with pytest.raises(DataError) as err:
        store.frame_reader("wrist").read(np.array([7, 8]))
    msg = str(err.value)
    assert (
        str(jpeg_store) in msg and "camera 'wrist'" in msg and "episode 1 frame 2" in msg and "chunk 8" in msg
    )
    with pytest.raises(DataError, match=r"data/camera/wrist steps \[6, 11\).*start at episode 1 frame 0"):
        store.episode(1)
    with pytest.raises(DataError) as err:
        validate(jpeg_store, full_frames=True)
    msg = str(err.value)
    assert msg.startswith(f"{jpeg_store}: 1 problem(s)")
    assert "data/camera/wrist: chunk 8 (steps 8..8: episode 1 frame 2) cannot be decoded" in msg
    assert "checksum" in msg.lower()
    store.frame_reader("wrist").read(np.array([7, 9]))  # the other frames still read


def test_append_keeps_jpeg_and_refuses_another_encoding(jpeg_store):
    with EpisodeWriter(jpeg_store, mode="a") as w:  # no encoding given: the store's own
        w.append_episode(_episode(4, 2))
    store = open_store(jpeg_store)
    assert len(store) == 3 and store.frames == JPEG90
    assert _psnr(store.episode(2)["camera/scene"], _episode(4, 2)["camera/scene"]) > 30.0
    assert (jpeg_store / "data/camera/scene/c/14/0/0/0").read_bytes()[
        :2
    ] == b"\xff\xd8"  # a JPEG (SOI marker)
    with pytest.raises(DataError, match="keeps frames as jpeg \\(quality 90\\), appending asks lossless"):
        EpisodeWriter(jpeg_store, mode="a", frames=FrameEncoding())
    with pytest.raises(DataError, match="quality 90.*quality 50"):
        EpisodeWriter(jpeg_store, mode="a", frames=FrameEncoding.parse("jpeg", 50))
    with pytest.raises(DataError, match="fixed when the store is created"):
        with EpisodeWriter(jpeg_store, mode="a") as w:
            w.update_attrs({"frames": {"encoding": "lossless"}})
    validate(jpeg_store, full_frames=True)


def test_frame_encoding_validation_is_one_clear_error(tmp_path):
    assert FrameEncoding.parse("jpeg") == FrameEncoding("jpeg", 90)
    with pytest.raises(
        ConfigError, match=r"frames: unknown frame encoding 'png' \(choose one of lossless, jpeg\)"
    ):
        FrameEncoding.parse("png")
    for bad in (0, 101, True, "90"):
        with pytest.raises(ConfigError, match="JPEG quality must be an integer in 1..100"):
            FrameEncoding.parse("jpeg", bad)
    with pytest.raises(ConfigError, match="JPEG quality .* was given for lossless"):
        FrameEncoding.parse("lossless", 80)
    with pytest.raises(ConfigError, match="frames: JPEG quality must be an integer in 1..100, got None"):
        FrameEncoding("jpeg")  # built directly: checked too
    with pytest.raises(DataError, match="'frames' is set by the writer's frames argument, not by attrs"):
        EpisodeWriter(
            tmp_path / "s.zarr",
            fps=10.0,
            fields={"a": (1,)},
            attrs={"frames": {"encoding": "jpeg"}},
            mode="w",
        )
    assert not (tmp_path / "s.zarr").exists()


def test_a_store_whose_attribute_and_arrays_disagree_is_refused(jpeg_store):
    import json

    meta = jpeg_store / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["frames"] = {"encoding": "lossless"}
    meta.write_text(json.dumps(doc))
    with pytest.raises(
        DataError,
        match="data/camera/scene codecs .*foundry.jpeg.* do not match the store's frame encoding lossless",
    ):
        open_store(jpeg_store)
    doc["attributes"]["frames"] = {"encoding": "webp"}
    meta.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="'frames' = .*webp.* is not a frame encoding this Foundry reads"):
        open_store(jpeg_store)


@pytest.fixture
def cli(foundry_pm):
    foundry_pm.register(plugin, name="foundry-action")
    return build_cli(lambda: foundry_pm)


def test_convert_cli_writes_jpeg_and_validates(cli, cli_runner, tmp_path):
    src = write_synthetic_wds(
        tmp_path / "wds", [synthetic_episode(5, seed=0), synthetic_episode(4, seed=1)], future=3
    )
    out = tmp_path / "out.zarr"
    res = cli_runner.invoke(
        cli, ["data", "convert", str(src), str(out), "--fps", "5", "--frames", "jpeg", "--jpeg-quality", "85"]
    )
    assert res.exit_code == 0, res.output
    store = open_store(out)
    assert store.frames == FrameEncoding("jpeg", 85) and len(store) == 9
    res = cli_runner.invoke(cli, ["data", "validate", "--full", str(out)])
    assert res.exit_code == 0 and "ok: 9 episodes" in res.output, res.output
    res = cli_runner.invoke(cli, ["data", "inspect", str(out), "--out", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0 and "(frames: jpeg (quality 85))" in res.output, res.output
    for args, expected in (
        (["--frames", "png"], "unknown frame encoding 'png'"),
        (["--frames", "jpeg", "--jpeg-quality", "0"], "JPEG quality must be an integer in 1..100"),
        (["--jpeg-quality", "80"], "was given for lossless"),
    ):
        res = cli_runner.invoke(
            cli, ["data", "convert", str(src), str(tmp_path / "bad.zarr"), "--fps", "5", *args]
        )
        assert res.exit_code == 2 and expected in res.output, res.output
        assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad.zarr.partial").exists()


def test_training_loader_reads_a_jpeg_store(tmp_path, jpeg_store):
    from foundry_action.data_source import ZarrEpisodes
    from foundry_action.normalization import NormStats

    eps = [_episode(6, 0), _episode(5, 1)]
    lossless = _write(tmp_path / "lossless.zarr", eps)
    batches = {}
    for name, path in (("lossless", lossless), ("jpeg", jpeg_store)):
        NormStats.compute(open_store(path)).save(path / "stats")
        source = ZarrEpisodes(ZarrEpisodes.Config(path=str(path), past=1, future=3, image_offsets=[-1, 0]))
        batches[name] = next(source.batches(4, rank=0, world_size=1, seed=0))
    a, b = batches["lossless"], batches["jpeg"]
    assert a["images"].shape == b["images"].shape == (4, 4, 3, SIZE, SIZE)
    np.testing.assert_array_equal(a["actions"].numpy(), b["actions"].numpy())  # the same windows
    assert 30.0 < _psnr(b["images"].numpy(), a["images"].numpy()) < 60.0
