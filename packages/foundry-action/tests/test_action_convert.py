"""Converters: round trips (values equal to the source) for WebDataset, LeRobot v3 and replay buffers."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from foundry_action.convert import ConvertOptions, convert, detect_format
from foundry_action.normalization import NormStats
from foundry_action.store import open_store
from foundry_action.testing import synthetic_episode, write_synthetic_wds
from foundry_core.errors import DataError


# --------------------------------------------------------------------------- WebDataset (reference)
def _tar_samples(shard: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def _jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _encode(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_wds_reference_shard_rebuilds_episodes(shared_data, tmp_path):
    src = shared_data / "vla_foundry" / "small_lbm_dataset"
    assert detect_format(src) == "wds"
    done = []
    summary = convert(src, tmp_path / "lbm.zarr", progress=lambda d, n: done.append((d, n)))
    # 5 windows of episode_0 (timesteps 6-21, 24-39, 64-79, 78-93, 108-123) -> 4 runs; 64-79/78-93 overlap
    assert done[-1] == (1, 1) and summary.episodes == 4 and summary.steps == 78
    store = open_store(tmp_path / "lbm.zarr")
    assert store.attrs["wds_layout"] == "episodes"
    assert [(m["wds_episode_id"], m["wds_first_timestep"]) for m in store.all_meta()] == [
        ("episode_0", 6), ("episode_0", 24), ("episode_0", 64), ("episode_0", 108)]
    assert store.lengths().tolist() == [16, 16, 30, 16]
    assert not any(k.endswith("_relative") or k in ("past_mask", "future_mask") for k in store.fields)
    first = {m["wds_first_timestep"]: i for i, m in enumerate(store.all_meta())}
    real_images = 0
    for members in _tar_samples(src / "shard_000000.tar").values():
        meta = json.loads(members["metadata.json"])
        start = max(t for t in first if t <= meta["lowdim_start_timestep"])
        ep = store.episode(first[start])
        lo = meta["lowdim_start_timestep"] - start
        with np.load(io.BytesIO(members["lowdim.npz"])) as npz:
            for k in store.fields:
                if k != "image_valid":
                    assert ep[k].dtype == npz[k].dtype, k
                    np.testing.assert_array_equal(ep[k][lo : lo + 16], npz[k], err_msg=k)
        for ext, data in members.items():
            if ext.endswith(".jpg"):
                cam, _, off = ext[:-4].rpartition("_t")
                step = meta["anchor_timestep"] + int(off) - start
                np.testing.assert_array_equal(ep[f"camera/{cam}"][step], _jpeg(data))
                assert ep["image_valid"][step]
                real_images += 1
        instr = json.loads(members["language_instructions.json"])
        assert instr["original"][0] in store.meta(first[start])["instructions"]
    valid = store.read("image_valid", 0, store.num_steps)
    assert real_images == 60 and valid.sum() == 10  # 10 timesteps x 6 cameras
    for i in range(len(store)):  # steps without a real image are black, never a copy of another frame
        ep = store.episode(i, ["camera/scene_left_0", "image_valid"])
        assert not ep["camera/scene_left_0"][~ep["image_valid"]].any()
    stats = NormStats.load(tmp_path / "lbm.zarr" / "stats")
    stats.check_compatible(store)


def test_wds_reference_shard_keep_windows(shared_data, tmp_path):
    src = shared_data / "vla_foundry" / "small_lbm_dataset"
    summary = convert(src, tmp_path / "lbm.zarr", options=ConvertOptions(keep_windows=True))
    assert summary.episodes == 5 and summary.steps == 80
    store = open_store(tmp_path / "lbm.zarr")
    assert store.attrs["wds_layout"] == "windows" and store.attrs["wds_windows_reason"] == "keep_windows option"
    by_id = {store.meta(i)["wds_metadata"]["sample_id"]: i for i in range(len(store))}
    for members in _tar_samples(src / "shard_000000.tar").values():
        meta = json.loads(members["metadata.json"])
        i = by_id[meta["sample_id"]]
        assert store.meta(i)["wds_metadata"] == meta
        ep = store.episode(i)
        with np.load(io.BytesIO(members["lowdim.npz"])) as npz:
            for k in npz.files:
                if npz[k].dtype.kind == "U":
                    assert store.meta(i)["lowdim_language_instruction"] == npz[k].tolist()
                    continue
                assert ep[k].dtype == npz[k].dtype, k
                np.testing.assert_array_equal(ep[k], npz[k], err_msg=k)
        anchor = meta["anchor_relative_idx"]
        for ext, data in members.items():
            if ext.endswith(".jpg"):
                cam, _, off = ext[:-4].rpartition("_t")
                np.testing.assert_array_equal(ep[f"camera/{cam}"][anchor + int(off)], _jpeg(data))
        assert ep["image_valid"].tolist() == [True, True] + [False] * 14
        assert not ep["camera/wrist_left_plus"][2:].any()  # no copies: black where there is no image
        instr = json.loads(members["language_instructions.json"])
        assert store.meta(i)["instructions"][0] == instr["original"][0]
        assert len(store.meta(i)["instructions"]) == sum(len(v) for v in instr.values())


def test_wds_synthetic_episodes_rebuilt_exactly(tmp_path):
    eps = [synthetic_episode(12, seed=0), synthetic_episode(9, seed=1)]
    src = write_synthetic_wds(tmp_path / "wds", eps, future=2, timesteps=True, samples_per_shard=7)
    convert(src, tmp_path / "full.zarr")
    store = open_store(tmp_path / "full.zarr")
    assert store.lengths().tolist() == [12, 9]  # every step is an anchor: whole episodes come back
    for i, ep in enumerate(eps):
        got = store.episode(i)
        np.testing.assert_array_equal(got["action"], ep["action"])
        assert got["image_valid"].all()
        for t in (0, 5, len(ep["action"]) - 1):  # the frame of that very step (as the writer encoded it)
            np.testing.assert_array_equal(got["camera/scene"][t], _jpeg(_encode(ep["camera/scene"][t])))
    # anchors every 5th step: windows [t-1, t+2] cover 0-2, 4-7, 9-11 of the 12-step episode -> 3 runs
    src = write_synthetic_wds(tmp_path / "sparse", eps[:1], future=2, timesteps=True, anchor_every=5)
    convert(src, tmp_path / "sparse.zarr")
    store = open_store(tmp_path / "sparse.zarr")
    assert [m["wds_first_timestep"] for m in store.all_meta()] == [0, 4, 9]
    assert store.lengths().tolist() == [3, 4, 3]
    np.testing.assert_array_equal(store.episode(1)["action"], eps[0]["action"][4:8])
    assert store.episode(1)["image_valid"].tolist() == [True, True, False, False]  # images at t-1, t only


def test_wds_overlapping_windows_that_disagree_fail(tmp_path):
    a, b = synthetic_episode(6, seed=0), synthetic_episode(6, seed=1)
    src = write_synthetic_wds(tmp_path / "wds", [a, b], future=2, timesteps=True)
    shard = src / "shard_000000.tar"
    samples = _tar_samples(shard)
    with tarfile.open(shard, "w") as tar:  # two different episodes under one episode_id
        for key, members in sorted(samples.items()):
            meta = json.loads(members["metadata.json"])
            meta["episode_id"] = "episode_0"
            members["metadata.json"] = json.dumps(meta).encode()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"sample e0001t\d+: episode_id episode_0 timestep \d+: \w+ differs from sample"):
        convert(src, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    convert(src, tmp_path / "win.zarr", options=ConvertOptions(keep_windows=True))  # the way out: windows
    assert len(open_store(tmp_path / "win.zarr")) == 12


def test_wds_bad_sample_names_sample_and_leaves_nothing(tmp_path):
    src = write_synthetic_wds(tmp_path / "wds", [synthetic_episode(4, seed=0)], future=2)
    shard = src / "shard_000000.tar"
    samples = _tar_samples(shard)
    with tarfile.open(shard, "w") as tar:  # drop one sample's lowdim.npz
        for n, (key, members) in enumerate(sorted(samples.items())):
            for ext, data in members.items():
                if n == 2 and ext == "lowdim.npz":
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"sample e0000t00002: missing lowdim.npz"):
        convert(src, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr.partial").exists()


# --------------------------------------------------------------------------- LeRobot v3
def _encode_video(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_lerobot_v3(root: Path, lengths=(6, 9, 5), fps: int = 10) -> list[dict[str, np.ndarray]]:
    """A LeRobot v3 folder: one data file, one mp4 per video camera, PNG images in parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    eps = []
    for n in lengths:
        top = np.zeros((n, 32, 48, 3), np.uint8)
        top[..., 0] = (np.arange(n) * 20)[:, None, None]
        top[:, 8:24, 8:24, 1] = 200
        eps.append({"observation.state": rng.normal(size=(n, 4)).astype(np.float32),
                    "action": rng.normal(size=(n, 3)).astype(np.float32),
                    "top": top, "wrist": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)})
    features = {
        "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "g"]},
        "action": {"dtype": "float32", "shape": [3], "names": None},
        "observation.images.top": {"dtype": "video", "shape": [32, 48, 3], "names": ["height", "width", "channels"]},
        "observation.images.wrist": {"dtype": "image", "shape": [16, 16, 3], "names": ["height", "width", "channels"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {"codebase_version": "v3.0", "fps": fps, "features": features,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    cols: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index", "episode_index",
                                             "index", "task_index", "observation.images.wrist")}
    ep_rows, start = [], 0
    for e, ep in enumerate(eps):
        n = len(ep["action"])
        for t in range(n):
            png = io.BytesIO()
            Image.fromarray(ep["wrist"][t]).save(png, format="PNG")
            for k, v in (("observation.state", ep["observation.state"][t].tolist()), ("action", ep["action"][t].tolist()),
                         ("timestamp", t / fps), ("frame_index", t), ("episode_index", e), ("index", start + t),
                         ("task_index", e % 2), ("observation.images.wrist", {"bytes": png.getvalue(), "path": None})):
                cols[k].append(v)
        ep_rows.append({"episode_index": e, "tasks": [f"task {e % 2}"], "length": n, "data/chunk_index": 0,
                        "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": start + n,
                        "videos/observation.images.top/chunk_index": 0, "videos/observation.images.top/file_index": 0,
                        "videos/observation.images.top/from_timestamp": start / fps,
                        "videos/observation.images.top/to_timestamp": (start + n) / fps})
        start += n
    schema = pa.schema([("observation.state", pa.list_(pa.float32())), ("action", pa.list_(pa.float32())),
                        ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
                        ("index", pa.int64()), ("task_index", pa.int64()),
                        ("observation.images.wrist", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    pq.write_table(pa.table(cols, schema=schema), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "task": ["task 0", "task 1"]}), root / "meta" / "tasks.parquet")
    _encode_video(root / "videos" / "observation.images.top" / "chunk-000" / "file-000.mp4",
                  np.concatenate([ep["top"] for ep in eps]), fps)
    return eps


def test_lerobot_v3_round_trip(tmp_path):
    eps = make_lerobot_v3(tmp_path / "lr")
    assert detect_format(tmp_path / "lr") == "lerobot_v3"
    summary = convert(tmp_path / "lr", tmp_path / "out.zarr")
    store = open_store(tmp_path / "out.zarr")
    assert summary.episodes == 3 and store.fps == 10.0
    assert store.cameras == {"top": (32, 48), "wrist": (16, 16)}
    assert store.semantics["observation.state"] == "x, y, z, g"
    for i, ep in enumerate(eps):
        got = store.episode(i)
        np.testing.assert_array_equal(got["observation.state"], ep["observation.state"])
        np.testing.assert_array_equal(got["action"], ep["action"])
        np.testing.assert_array_equal(got["camera/wrist"], ep["wrist"])
        np.testing.assert_array_equal(got["camera/top"], ep["top"])  # lossless x264rgb
        np.testing.assert_array_equal(got["frame_index"][:, 0], np.arange(len(ep["action"])))
        assert store.meta(i)["instructions"] == [f"task {i % 2}"] and store.meta(i)["lerobot_episode_index"] == i


# --------------------------------------------------------------------------- diffusion_policy replay buffer
def _replay_buffer(path: Path, lengths=(5, 8, 3)) -> dict[str, np.ndarray]:
    import zarr

    rng = np.random.default_rng(0)
    n = sum(lengths)
    data = {"img": rng.integers(0, 255, (n, 12, 12, 3), dtype=np.uint8), "state": rng.normal(size=(n, 5)),
            "action": rng.normal(size=(n, 2)).astype(np.float32), "keypoint": rng.normal(size=(n, 9, 2)).astype(np.float32)}
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for k, v in data.items():
        root.create_array(f"data/{k}", data=v, chunks=(1, *v.shape[1:]) if k == "img" else v.shape)
    root.create_array("meta/episode_ends", data=np.cumsum(lengths).astype(np.int64))
    return data


@pytest.mark.parametrize("workers", [1, 2])
def test_replay_buffer_v2_round_trip(tmp_path, workers):
    data = _replay_buffer(tmp_path / "pusht.zarr")
    assert (tmp_path / "pusht.zarr" / ".zgroup").exists()
    assert detect_format(tmp_path / "pusht.zarr") == "replay_buffer"
    convert(tmp_path / "pusht.zarr", tmp_path / "out.zarr", workers=workers,
            options=ConvertOptions(fps=12.0, task="pusht", instruction="push the T"))
    store = open_store(tmp_path / "out.zarr")
    assert store.lengths().tolist() == [5, 8, 3] and store.fps == 12.0 and store.cameras == {"img": (12, 12)}
    assert store.fields["keypoint"] == (9, 2) and store.dtypes["state"] == "float64"
    for k, v in data.items():
        key = "camera/img" if k == "img" else k
        np.testing.assert_array_equal(store.read(key, 0, store.num_steps), v)
    assert store.meta(2)["task"] == "pusht" and store.meta(2)["instructions"] == ["push the T"]


def test_replay_buffer_nan_names_episode_and_field(tmp_path):
    import zarr

    _replay_buffer(tmp_path / "rb.zarr")
    arr = zarr.open_array(str(tmp_path / "rb.zarr" / "data" / "state"), mode="r+")
    arr[6, 1] = np.nan  # episode 1, step 1
    with pytest.raises(DataError, match=r"episode 1: state has NaN/inf at step 1 channel 1"):
        convert(tmp_path / "rb.zarr", tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_detect_and_existing_destination(tmp_path, tiny_episodes):
    with pytest.raises(DataError, match="unrecognised source"):
        detect_format(tiny_episodes)
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "missing")
    _replay_buffer(tmp_path / "rb.zarr")
    with pytest.raises(DataError, match="already exists"):
        convert(tmp_path / "rb.zarr", tiny_episodes)


@pytest.mark.slow
def test_ray_conversion(tmp_path):
    ray = pytest.importorskip("ray")
    data = _replay_buffer(tmp_path / "rb.zarr")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        convert(tmp_path / "rb.zarr", tmp_path / "out.zarr", use_ray=True)
    finally:
        ray.shutdown()
    np.testing.assert_array_equal(open_store(tmp_path / "out.zarr").read("state", 0, 16), data["state"])


def test_wds_inconsistent_dims_name_episode_and_field(tmp_path):
    src = write_synthetic_wds(tmp_path / "wds", [synthetic_episode(3, seed=0), synthetic_episode(3, seed=1, dim=9)], future=2)
    with pytest.raises(DataError, match=r"episode 3: action has shape \(4, 9\), expected \(T, 10\)"):
        convert(src, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
