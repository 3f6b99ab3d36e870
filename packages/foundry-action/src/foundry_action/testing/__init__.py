"""Test data and helpers of foundry-action (its fixtures are in :mod:`foundry_action.testing.pytest_plugin`).

``make_tiny_store(path)``: a synthetic episode store with 3 episodes (lengths 20, 25, 30), two 32x32
cameras (``scene``, ``wrist``), 10-D ``action`` and ``proprio`` and normalization stats in
``<store>/stats``; ``tiny_vla_node(store)``: a small ``vla`` model node on such a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TINY_SEMANTICS = {
    "action": "absolute ee xyz [m] + rot6d (first two rows of R) + gripper opening [m]",
    "proprio": "measured ee xyz [m] + rot6d (first two rows of R) + gripper opening [m]",
    "scene": "static camera looking at the table",
    "wrist": "camera on the gripper",
}


def tiny_vla_node(
    store: str | Path,
    expert: str | dict[str, Any] = "flow_matching",
    backbone: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A small ``vla`` node: the tiny conv backbone, a ``debug`` expert, 1 past / 3 future steps on ``store``.

    ``expert``: a name (``{name, preset: debug}``) or a whole expert node; ``fields``: more vla keys.
    """
    return {
        "name": "vla",
        "backbone": backbone or {"name": "tiny_test", "width": 16},
        "expert": {"name": expert, "preset": "debug"} if isinstance(expert, str) else expert,
        "data": {"name": "zarr_episodes", "path": str(store), "past": 1, "future": 3, "image_offsets": [-1, 0]},
        **fields,
    }


def export_tiny_vla(registry: Any, store: str | Path, out_dir: str | Path) -> Path:
    """Export an untrained :func:`tiny_vla_node` policy (2 flow-matching steps, seed 0) to ``out_dir``."""
    import torch

    from foundry_core.export import export_model
    from foundry_core.registry import BuildContext

    node = tiny_vla_node(store, {"name": "flow_matching", "preset": "debug", "inference_steps": 2})
    torch.manual_seed(0)
    return export_model(registry.build("model", node, BuildContext(registry)), node, out_dir)


def synthetic_episode(length: int, seed: int, image_size: int = 32, dim: int = 10) -> dict[str, np.ndarray]:
    """A smooth random trajectory with frames whose pixel values encode (episode seed, step)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)[:, None]
    start, goal = rng.normal(size=(2, dim)).astype(np.float32)
    proprio = start + (goal - start) * t
    action = np.concatenate([proprio[1:], proprio[-1:]], axis=0) + rng.normal(scale=0.01, size=(length, dim))
    frames = {}
    for c, cam in enumerate(("scene", "wrist")):
        img = np.zeros((length, image_size, image_size, 3), dtype=np.uint8)
        img[..., 0] = (seed * 10 + c) % 256
        img[..., 1] = np.arange(length, dtype=np.uint8)[:, None, None]
        img[..., 2] = rng.integers(0, 255, size=(length, image_size, image_size), dtype=np.uint8)
        frames[f"camera/{cam}"] = img
    return {"action": action.astype(np.float32), "proprio": proprio.astype(np.float32), **frames}


def make_tiny_store(
    path: str | Path,
    lengths: Sequence[int] = (20, 25, 30),
    image_size: int = 32,
    dim: int = 10,
    fps: float = 10.0,
    with_stats: bool = True,
) -> Path:
    """Write a synthetic store (and its stats) at ``path`` and return the path."""
    from foundry_action.store import EpisodeWriter

    path = Path(path)
    with EpisodeWriter(
        path,
        fps=fps,
        fields={"action": (dim,), "proprio": (dim,)},
        cameras={"scene": (image_size, image_size), "wrist": (image_size, image_size)},
        semantics=TINY_SEMANTICS,
        mode="w",
    ) as w:
        for i, length in enumerate(lengths):
            w.append_episode(
                synthetic_episode(length, seed=i, image_size=image_size, dim=dim),
                task=f"task_{i % 2}",
                instruction=f"do thing number {i}",
                success=bool(i % 2 == 0),
                source="synthetic",
            )
    if with_stats:
        from foundry_action.normalization import NormStats
        from foundry_action.store import open_store

        NormStats.compute(open_store(path)).save(path / "stats")
    return path


#: The reference's LBM layout (b.3): 6 cameras; per arm an end-effector pose (xyz + rot6d) and a gripper.
LBM_CAMERAS = ("scene_right_0", "scene_left_0", "wrist_left_minus", "wrist_left_plus", "wrist_right_minus", "wrist_right_plus")
LBM_FIELDS = {
    f"robot__{kind}__{part}__{arm}::panda{suffix}": (size,)
    for kind in ("actual", "action")
    for arm in ("left", "right")
    for part, suffix, size in (("poses", "__xyz", 3), ("poses", "__rot_6d", 6), ("grippers", "_hand", 1))
}


def make_lbm_store(path: str | Path, lengths: Sequence[int] = (24, 30), image_size: int = 32) -> Path:
    """A synthetic store with the LBM layout (field and camera names, dims) and its stats, for recipe tests.

    Values are smooth random trajectories (rot6d entries are not valid rotations: only the layout counts).
    """
    from foundry_action.normalization import NormStats
    from foundry_action.store import EpisodeWriter, open_store

    path = Path(path)
    with EpisodeWriter(path, fps=10.0, fields=dict(LBM_FIELDS), cameras={c: (image_size, image_size) for c in LBM_CAMERAS},
                       semantics={}, mode="w") as w:
        for i, length in enumerate(lengths):
            rng = np.random.default_rng(i)
            t = np.linspace(0.0, 1.0, length, dtype=np.float32)[:, None]
            episode: dict[str, np.ndarray] = {}
            for name, (size,) in LBM_FIELDS.items():
                start, goal = rng.normal(size=(2, size)).astype(np.float32)
                episode[name] = (start + (goal - start) * t).astype(np.float32)
            for c in LBM_CAMERAS:
                episode[f"camera/{c}"] = rng.integers(0, 255, size=(length, image_size, image_size, 3), dtype=np.uint8)
            w.append_episode(episode, task=f"task_{i % 2}", instruction=f"put the cup number {i} on the plate",
                             success=True, source="synthetic")
    NormStats.compute(open_store(path)).save(path / "stats")
    return path


def write_synthetic_wds(
    directory: str | Path,
    episodes: Sequence[dict[str, np.ndarray]],
    *,
    past: int = 1,
    future: int = 14,
    image_offsets: Sequence[int] = (-1, 0),
    samples_per_shard: int = 128,
    jpeg_quality: int = 90,
    instruction: str = "push the block",
    timesteps: bool = False,
    anchor_every: int = 1,
) -> Path:
    """Write episodes as the reference system's robotics WebDataset (windowed samples, JPEG + lowdim.npz).

    Every step is an anchor (edge windows use copy padding, as the reference does); cameras are the
    ``camera/<name>`` keys; low-dim fields become ``lowdim.npz`` arrays. Used by converter tests and
    ``benchmarks/robot_loader.py``. ``timesteps`` adds ``lowdim_start_timestep``/``lowdim_end_timestep``/
    ``image_timesteps`` to ``metadata.json`` as the reference does (the converter then rebuilds episodes);
    ``anchor_every`` = the reference's ``stride``.
    """
    import io
    import json
    import tarfile

    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, bytes]] = []
    names: list[str] = []
    for e, ep in enumerate(episodes):
        cams = [k for k in ep if k.startswith("camera/")]
        low = [k for k in ep if not k.startswith("camera/")]
        length = len(ep[low[0]])
        for t in range(0, length, anchor_every):
            pos = np.arange(t - past, t + future + 1)
            clipped = np.clip(pos, 0, length - 1)
            valid = (pos >= 0) & (pos < length)
            lowdim = {k: ep[k][clipped] for k in low}
            lowdim["past_mask"] = valid & (pos < t)
            lowdim["future_mask"] = valid & (pos >= t)
            buf = io.BytesIO()
            np.savez(buf, **lowdim)
            meta = {"episode_id": f"episode_{e}", "sample_id": f"episode_{e}_t{t:04d}", "anchor_timestep": t,
                    "anchor_relative_idx": past, "camera_names": [c[7:] for c in cams],
                    "original_episode_length": length}
            if timesteps:
                meta.update(lowdim_start_timestep=t - past, lowdim_end_timestep=t + future,
                            image_timesteps=[int(np.clip(t + o, 0, length - 1)) for o in sorted(image_offsets)])
            sample = {"lowdim.npz": buf.getvalue(), "metadata.json": json.dumps(meta).encode(),
                      "language_instructions.json": json.dumps({"original": [instruction]}).encode()}
            for cam in cams:
                for off in image_offsets:
                    jpg = io.BytesIO()
                    Image.fromarray(ep[cam][int(np.clip(t + off, 0, length - 1))]).save(jpg, format="JPEG", quality=jpeg_quality)
                    sample[f"{cam[7:]}_t{off}.jpg"] = jpg.getvalue()
            samples.append(sample)
            names.append(f"e{e:04d}t{t:05d}")
    manifest = []
    for s in range(0, len(samples), samples_per_shard):
        shard = f"shard_{s // samples_per_shard:06d}"
        with tarfile.open(directory / f"{shard}.tar", "w") as tar:
            for key, sample in zip(names[s : s + samples_per_shard], samples[s : s + samples_per_shard]):
                for ext, data in sample.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        manifest.append(json.dumps({"shard": shard, "num_sequences": len(samples[s : s + samples_per_shard])}))
    (directory / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
    return directory


def assert_invalid_frames_ignored(model: Any, batch: dict[str, Any]) -> None:
    """A vla's loss, sampled action window and conditioning are identical when the pixels of frames marked
    invalid (``image_mask`` false) change, and its window changes with a valid frame's pixels."""
    import torch

    assert not batch["image_mask"].all() and batch["image_mask"].any()
    with torch.no_grad():  # experts start as a no-op (zero output layer): give every weight a value
        for p in model.parameters():
            p.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    other = dict(batch)
    noise = torch.randint(0, 256, batch["images"].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    other["images"] = torch.where(batch["image_mask"][:, :, None, None, None], batch["images"], noise)
    assert not torch.equal(other["images"], batch["images"])
    model.eval()  # fixed batch-norm statistics in the read-out: one batch's values cannot shift another's
    outs = []
    for b in (batch, other):
        torch.manual_seed(0)
        loss = model.compute_loss(b)[0]
        torch.manual_seed(0)
        outs.append((loss, model.predict(b), model.condition(b)))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][2][0], outs[1][2][0], rtol=0, atol=0)
    # and a valid frame's pixels do matter (the check can fail)
    changed = dict(batch)
    changed["images"] = torch.where(batch["image_mask"][:, :, None, None, None], noise, batch["images"])
    torch.manual_seed(0)
    assert not torch.equal(model.predict(changed), outs[0][1])
