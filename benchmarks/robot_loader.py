"""Robot data loading: samples/s of our Zarr window sampler vs the reference WebDataset samples.

Both read the same synthetic episodes (2 cameras 224x224, images at offsets {-1, 0}, 16-step windows
= past 1 + anchor + future 14, 10-D action/proprio) into the same batch of 32: decoded uint8 images
[B, 4, 3, 224, 224], normalized actions/proprio, masks, plus the same random crop + colour jitter.

* baseline: the reference layout (one tar sample per window: 4 JPEGs (quality 90) + lowdim.npz +
  metadata.json + language_instructions.json), read with ``webdataset`` (shuffle buffer 1000), JPEG
  decode with PIL, npz decode, collate, normalize, augment;
* ours: ``zarr_episodes`` over a Zarr v3 episode store (Blosc-LZ4 frames, one chunk per frame; low-dim
  arrays in memory), same augmentation.

Single process each (num_workers 0, 1 torch thread), page cache warm for both; steady state after one
warm-up batch. The two pipelines take turns batch by batch, and the ratio uses samples per CPU-second
of the process (both robust on a shared machine); wall-clock rates are reported too.
ratio = ours / baseline samples per CPU-second (goal >= 2).

Data share of a training step (second goal: <= 5%): a small VLA (``vla`` = ``vision_encoder`` backbone
over a ``vit`` at 224x224, patch 16, width 192, depth 4, heads 3, + a ``flow_matching`` expert, preset
``tiny``; 2.1 M parameters) takes forward + backward + AdamW step on one batch of our loader (the same
4 images x 32 windows). step time = CPU seconds of the process with 1 torch thread on CPU (the same
budget the loader gets), or wall seconds with ``torch.cuda.synchronize`` on ``device="cuda"`` (batch
copy to the device included); data time = CPU seconds per batch of our single-process loader.
``data_share = data / (data + step)``, reported for the reference loader as well. On a GPU a single
loader process is far from 5% of such a step: the share there says how many loader workers it needs.
Frame encodings (``frames`` in the result): the same episodes in a second store with JPEG frames
(quality 90, ``EpisodeWriter(frames=FrameEncoding.parse("jpeg", 90))``): bytes on disk of each store,
raw frame reads per CPU-second (``FrameReader`` over every frame in a shuffled order, the loader's
access pattern; page cache warm; the two stores take turns), and the training loader's samples per
CPU-second (the same ``zarr_episodes`` pipeline over each store, measured alongside the two above).
Ratios are JPEG / lossless.
Run: ``uv run python benchmarks/robot_loader.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH, PAST, FUTURE, SIZE, OFFSETS = 32, 1, 14, 224, (-1, 0)


def _base_image() -> np.ndarray:
    """A real photograph (matplotlib sample) at 256x256, so JPEG and zstd see natural statistics."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB").resize((256, 256))
    return np.asarray(img)


def make_episodes(n_episodes: int, length: int) -> list[dict[str, np.ndarray]]:
    base = _base_image()
    rng = np.random.default_rng(0)
    eps = []
    for e in range(n_episodes):
        t = np.linspace(0, 1, length, dtype=np.float32)[:, None]
        a, b = rng.normal(size=(2, 10)).astype(np.float32)
        proprio = a + (b - a) * t
        ep: dict[str, np.ndarray] = {"action": proprio + 0.01 * rng.normal(size=proprio.shape).astype(np.float32),
                                     "proprio": proprio}
        for c, cam in enumerate(("scene", "wrist")):
            frames = np.empty((length, SIZE, SIZE, 3), np.uint8)
            for i in range(length):
                y, x = (e * 7 + i + c * 11) % 32, (e * 3 + 2 * i) % 32
                frames[i] = base[y : y + SIZE, x : x + SIZE]
            ep[f"camera/{cam}"] = frames
        eps.append(ep)
    return eps


def write_zarr(path: Path, eps: list[dict[str, np.ndarray]], frames: Any = None) -> Path:
    """The episodes as a store (``frames``: a ``FrameEncoding``; None = lossless) with its stats."""
    from foundry_action.normalization import NormStats
    from foundry_action.store import EpisodeWriter, open_store

    with EpisodeWriter(path, fps=10.0, fields={"action": (10,), "proprio": (10,)},
                       cameras={"scene": (SIZE, SIZE), "wrist": (SIZE, SIZE)}, mode="w", frames=frames) as w:
        for ep in eps:
            w.append_episode(ep, task="bench", instruction="push the block")
    NormStats.compute(open_store(path)).save(path / "stats")
    return path


def _wds_decode(sample: dict[str, Any]) -> dict[str, Any]:
    from PIL import Image

    with np.load(io.BytesIO(sample["lowdim.npz"])) as npz:
        low = {k: npz[k] for k in npz.files}
    imgs = []
    for off in OFFSETS:  # time-major, like ours
        for cam in ("scene", "wrist"):
            with Image.open(io.BytesIO(sample[f"{cam}_t{off}.jpg"])) as im:
                imgs.append(np.asarray(im.convert("RGB")))
    meta = json.loads(sample["metadata.json"])
    instr = json.loads(sample["language_instructions.json"])["original"][0]
    return {"low": low, "images": np.stack(imgs), "meta": meta, "instruction": instr}


def wds_batches(directory: Path, stats: Any, aug: Any, seed: int = 0):
    """The reference pipeline: webdataset read + decode + collate + normalize + augment."""
    import torch
    import webdataset as wds

    from foundry_action.augment import augment

    urls = sorted(str(p) for p in directory.glob("*.tar"))
    gen = torch.Generator().manual_seed(seed)
    while True:
        pipe = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.shuffle(1000, rng=random.Random(seed)),
                                wds.map(_wds_decode))
        buf = []
        for sample in pipe:
            buf.append(sample)
            if len(buf) < BATCH:
                continue
            low = {k: np.stack([s["low"][k] for s in buf]) for k in ("action", "proprio", "past_mask", "future_mask")}
            images = torch.from_numpy(np.stack([s["images"] for s in buf])).permute(0, 1, 4, 2, 3)
            yield {
                "images": augment(images, aug, gen),
                "actions": torch.from_numpy(stats.normalize("action", low["action"].astype(np.float32))),
                "proprio": torch.from_numpy(stats.normalize("proprio", low["proprio"][:, : PAST + 1].astype(np.float32))),
                "past_mask": torch.from_numpy(low["past_mask"]),
                "future_mask": torch.from_numpy(low["future_mask"]),
                "instruction": [s["instruction"] for s in buf],
            }
            buf = []


def _rates(pipelines: dict[str, Any], n_batches: int) -> dict[str, tuple[float, float]]:
    """name -> (samples per CPU-second, samples per wall-second) after one warm-up batch each.

    Batches alternate between the pipelines (the order flips every round), so a change of load on a
    shared machine hits both alike; each pipeline's previous batch stays alive while it builds the next,
    as in a training loop.
    """
    held = {name: next(it) for name, it in pipelines.items()}
    cpu, wall = dict.fromkeys(pipelines, 0.0), dict.fromkeys(pipelines, 0.0)
    names = list(pipelines)
    for i in range(n_batches):
        for name in names if i % 2 == 0 else names[::-1]:
            w, c = time.perf_counter(), time.process_time()
            held[name] = next(pipelines[name])
            cpu[name] += time.process_time() - c
            wall[name] += time.perf_counter() - w
            assert held[name]["images"].shape == (BATCH, 4, 3, SIZE, SIZE)
    n = n_batches * BATCH
    return {name: (n / cpu[name], n / wall[name]) for name in names}


def frame_read_rates(stores: dict[str, Path], rounds: int) -> dict[str, float]:
    """name -> camera frames decoded per CPU-second (every frame of both cameras, shuffled; stores alternate)."""
    from foundry_action.store import open_store

    readers = {name: [open_store(p).frame_reader(c) for c in ("scene", "wrist")] for name, p in stores.items()}
    n = open_store(next(iter(stores.values()))).num_steps
    order = np.random.default_rng(0).permutation(n)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    cpu = dict.fromkeys(stores, 0.0)
    for name in stores:  # warm-up: page cache and decoders
        readers[name][0].read(order[:8], out[:8])
    for r in range(rounds):
        for name in list(stores) if r % 2 == 0 else list(stores)[::-1]:
            c = time.process_time()
            for reader in readers[name]:
                reader.read(order, out)
            cpu[name] += time.process_time() - c
    return {name: rounds * 2 * n / cpu[name] for name in stores}


def _store_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


#: The small VLA of the data-share measurement (see the module docstring).
VLA_BACKBONE = {"name": "vision_encoder",
                "encoder": {"name": "vit", "image_size": SIZE, "patch_size": 16, "width": 192, "depth": 4, "heads": 3}}
VLA_EXPERT = {"name": "flow_matching", "preset": "tiny"}


def vla_step_seconds(store: Path, batch: dict[str, Any], device: str, steps: int) -> tuple[float, float]:
    """(seconds per training step, million parameters) of the small VLA on ``batch``, after one warm-up step.

    CPU: CPU seconds of this process (1 torch thread, like the loaders); CUDA: synchronized wall seconds.
    """
    import torch

    import foundry_action.plugin
    import foundry_vision.plugin
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import BuildContext, collect

    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_action.plugin, name="foundry-action")
    pm.register(foundry_vision.plugin, name="foundry-vision")
    registry = collect(pm)
    data = {"name": "zarr_episodes", "path": str(store), "past": PAST, "future": FUTURE, "image_offsets": list(OFFSETS)}
    torch.manual_seed(0)
    # a vision-only backbone: the VLA must be told to ignore the instruction (refused otherwise)
    node = {"name": "vla", "backbone": VLA_BACKBONE, "expert": VLA_EXPERT, "data": data, "use_instruction": False}
    model = registry.build("model", node, BuildContext(registry, device=device))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device.startswith("cuda")

    def step() -> None:
        on_device = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss, _ = model.compute_loss(on_device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)

    step()  # warm-up: optimizer state, kernels, allocator
    clock = time.perf_counter if cuda else time.process_time
    start = clock()
    for _ in range(steps):
        step()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (clock() - start) / steps, params


def run(quick: bool, device: str = "cpu") -> dict[str, Any]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both pipelines (and the CPU training step) single-threaded: CPU time is a fair cost
    try:
        return _measure(quick, device)
    finally:
        torch.set_num_threads(threads)


def _measure(quick: bool, device: str) -> dict[str, Any]:
    from foundry_action.augment import AugmentConfig
    from foundry_action.data_source import ZarrEpisodes
    from foundry_action.frame_codecs import FrameEncoding
    from foundry_action.normalization import NormStats
    from foundry_action.testing import write_synthetic_wds

    # quick: 288 windows = 9 batches, exactly one epoch of the reference shards (warm-up + 8 measured)
    n_eps, length, n_batches = (6, 48, 8) if quick else (20, 100, 30)
    eps = make_episodes(n_eps, length)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        store = write_zarr(tmp_path / "bench.zarr", eps)
        t_zarr = time.perf_counter() - t0
        t0 = time.perf_counter()
        wds_dir = write_synthetic_wds(tmp_path / "wds", eps, past=PAST, future=FUTURE, image_offsets=OFFSETS,
                                      samples_per_shard=100, jpeg_quality=90)
        t_wds = time.perf_counter() - t0
        t0 = time.perf_counter()
        jpeg_store = write_zarr(tmp_path / "bench_jpeg.zarr", eps, frames=FrameEncoding.parse("jpeg", 90))
        t_jpeg = time.perf_counter() - t0
        zarr_mb, jpeg_mb = _store_mb(store), _store_mb(jpeg_store)
        wds_mb = sum(p.stat().st_size for p in wds_dir.glob("*.tar")) / 1e6

        def loader(path: Path) -> Any:
            cfg = ZarrEpisodes.Config(path=str(path), past=PAST, future=FUTURE, image_offsets=list(OFFSETS),
                                      augment=AugmentConfig(enabled=True))
            return ZarrEpisodes(cfg).batches(BATCH, rank=0, world_size=1, seed=0)

        ours_it = loader(store)
        stats = NormStats.load(store / "stats")
        rates = _rates({"ours": ours_it, "baseline": wds_batches(wds_dir, stats, AugmentConfig(enabled=True)),
                        "ours_jpeg": loader(jpeg_store)}, n_batches)
        (ours, ours_wall), (base, base_wall) = rates["ours"], rates["baseline"]
        frame_rates = frame_read_rates({"lossless": store, "jpeg": jpeg_store}, 1 if quick else 4)
        step_s, params_m = vla_step_seconds(store, next(ours_it), device, 1 if quick else 3)
    data_s, base_data_s = BATCH / ours, BATCH / base
    share = data_s / (data_s + step_s)
    return {
        "name": "robot_loader",
        "metric": "zarr_episodes / webdataset samples per CPU-second (decode + augment, batch 32)",
        "unit": "samples/CPU-s",
        "goal": 2.0,
        "higher_is_better": True,
        "baseline": round(base, 1),
        "ours": round(ours, 1),
        "ratio": round(ours / base, 2),
        "wall": {"baseline": round(base_wall, 1), "ours": round(ours_wall, 1), "ratio": round(ours_wall / base_wall, 2)},
        "samples": n_eps * length,
        "zarr_mb": round(zarr_mb, 1),
        "wds_mb": round(wds_mb, 1),
        "write_s": {"zarr": round(t_zarr, 1), "wds": round(t_wds, 1), "zarr_jpeg": round(t_jpeg, 1)},
        "frames": {
            "jpeg_quality": 90,
            "store_mb": {"lossless": round(zarr_mb, 1), "jpeg": round(jpeg_mb, 1)},
            "size_ratio": round(jpeg_mb / zarr_mb, 3),
            "frames_per_cpu_s": {k: round(v, 1) for k, v in frame_rates.items()},
            "read_ratio": round(frame_rates["jpeg"] / frame_rates["lossless"], 3),
            "loader_samples_per_cpu_s": {"lossless": round(ours, 1), "jpeg": round(rates["ours_jpeg"][0], 1)},
            "loader_ratio": round(rates["ours_jpeg"][0] / ours, 3),
        },
        "vla_step": {
            "device": device,
            "model": f"vla: vit 224/16 w192 d4 + flow_matching tiny, {params_m:.1f} M params",
            "step_ms": round(step_s * 1e3, 1),
            "data_ms": round(data_s * 1e3, 1),
            "data_share": round(share, 4),
            "baseline_data_share": round(base_data_s / (base_data_s + step_s), 4),
            "goal": 0.05,
            "ok": share <= 0.05,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data set, < 60 s")
    parser.add_argument("--device", default="cpu", help="device of the VLA training step (the loaders run on CPU)")
    args = parser.parse_args()
    r = run(args.quick, args.device)
    print(f"{'loader':28s} {'samples/CPU-s':>14s} {'samples/wall-s':>15s}")
    print(f"{'webdataset (reference)':28s} {r['baseline']:14.1f} {r['wall']['baseline']:15.1f}")
    print(f"{'zarr_episodes (ours)':28s} {r['ours']:14.1f} {r['wall']['ours']:15.1f}")
    print(f"ratio ours/baseline: {r['ratio']:.2f}x CPU, {r['wall']['ratio']:.2f}x wall   ({r['samples']} windows; zarr {r['zarr_mb']} MB, "
          f"wds {r['wds_mb']} MB; write s {r['write_s']})")
    f = r["frames"]
    print(f"frames lossless vs jpeg q{f['jpeg_quality']} (ratio jpeg/lossless): store {f['store_mb']['lossless']} MB vs "
          f"{f['store_mb']['jpeg']} MB ({f['size_ratio']:.3f}x); frame reads {f['frames_per_cpu_s']['lossless']:.0f} vs "
          f"{f['frames_per_cpu_s']['jpeg']:.0f} frames/CPU-s ({f['read_ratio']:.2f}x); training loader "
          f"{f['loader_samples_per_cpu_s']['lossless']:.1f} vs {f['loader_samples_per_cpu_s']['jpeg']:.1f} samples/CPU-s "
          f"({f['loader_ratio']:.2f}x)")
    v = r["vla_step"]
    print(f"data share of a small VLA step on {v['device']} ({v['model']}): step {v['step_ms']:.0f} ms, "
          f"our data {v['data_ms']:.1f} ms -> {100 * v['data_share']:.2f}% (goal <= {100 * v['goal']:.0f}%: "
          f"{'met' if v['ok'] else 'missed'}; reference loader {100 * v['baseline_data_share']:.2f}%)")


if __name__ == "__main__":
    main()
