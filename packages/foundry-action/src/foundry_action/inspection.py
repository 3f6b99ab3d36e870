"""Store summary, contact sheet (PNG of frames + action plots) and validation for ``foundry data``.

Test: ``uv run pytest packages/foundry-action/tests/test_action_cli.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.normalization import FILENAME, NormStats
from foundry_action.store import EpisodeStore, camera_key, open_store
from foundry_core.errors import DataError


def summary(store: EpisodeStore) -> dict[str, Any]:
    """Plain-data description of a store (what ``foundry data inspect`` prints)."""
    lengths = store.lengths()
    metas = store.all_meta()
    successes = [m["success"] for m in metas if m.get("success") is not None]
    return {
        "path": str(store.path),
        "episodes": len(store),
        "steps": store.num_steps,
        "fps": store.fps,
        "length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())} if len(store) else {},
        "fields": {k: {"shape": list(v), "dtype": store.dtypes[k], "semantics": store.semantics[k]} for k, v in store.fields.items()},
        "cameras": {k: list(v) for k, v in store.cameras.items()},
        "frames": store.frames.to_attr(),
        "tasks": dict(Counter(str(m.get("task", "")) for m in metas)),
        "sources": dict(Counter(str(m.get("source", "")) for m in metas)),
        "success_rate": float(np.mean(successes)) if successes else None,
        "stats": (store.path / "stats" / FILENAME).exists(),
        "format_version": store.attrs.get("format_version"),
    }


def _plot_field(store: EpisodeStore) -> str | None:
    floats = [k for k in store.fields if np.dtype(store.dtypes[k]).kind == "f"]
    ranked = sorted(floats, key=lambda k: (k != "action", "action" not in k))  # "action", then *action*, then any
    return ranked[0] if ranked else None


def contact_sheet(store: EpisodeStore, out: str | Path, *, episodes: int = 4, frames: int = 4) -> Path:
    """PNG with, per episode (rows), ``frames`` evenly spaced frames of each camera and a plot of the actions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(store) == 0:
        raise DataError(f"{store.path}: no episodes to show")
    chosen = np.unique(np.linspace(0, len(store) - 1, min(episodes, len(store))).round().astype(int))
    field = _plot_field(store)
    cams = list(store.cameras)
    cols = len(cams) * frames + (1 if field else 0)
    fig, axes = plt.subplots(len(chosen), max(cols, 1), figsize=(1.8 * max(cols, 1) + 2, 1.9 * len(chosen)), squeeze=False)
    for row, e in enumerate(chosen):
        start, stop = store.bounds(int(e))
        steps = np.unique(np.linspace(0, stop - start - 1, frames).round().astype(int))
        col = 0
        for cam in cams:
            imgs = store.read(camera_key(cam), start, stop)
            for j in range(frames):
                ax = axes[row, col]
                col += 1
                ax.axis("off")
                if j < len(steps):
                    ax.imshow(imgs[steps[j]])
                    ax.set_title(f"ep{e} {cam} t={steps[j]}", fontsize=6)
        if field:
            ax = axes[row, col]
            values = store.read(field, start, stop).reshape(stop - start, -1)
            ax.plot(values[:, : min(values.shape[1], 12)], linewidth=0.8)
            ax.set_title(f"{field} ({values.shape[1]}-D)", fontsize=6)
            ax.tick_params(labelsize=5)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _stored_chunk_keys(arr: Any) -> set[str]:
    """Keys (``c/<i>/0/...``) of the chunks that exist in the store, from one listing."""
    from zarr.core.sync import sync

    prefix = f"{arr.path}/"

    async def collect() -> set[str]:
        return {k[len(prefix) :] async for k in arr.store.list_prefix(prefix + "c/")}

    return sync(collect())


def _chunk_problems(arr: Any, name: str, length: int, *, legacy: bool = False, decode: bool = True,
                    presence: bool = True, locate: Callable[[int], str] | None = None) -> list[str]:
    """Missing chunks (an error: zarr would return its fill value) and, with ``decode``, corrupt ones.

    ``locate(step)`` names the episode and frame of a chunk (camera arrays: one frame per chunk).
    """
    problems = []
    step = int(arr.chunks[0])
    stored = _stored_chunk_keys(arr) if presence else None
    zeros = (0,) * (len(arr.shape) - 1)
    hint = (" (this store predates complete chunk writing: an all-zero chunk was skipped; if the data is "
            "really all zeros, re-create the store)") if legacy else ""
    for i in range(-(-length // step)):
        lo, hi = i * step, min((i + 1) * step, length)
        where = f"steps {lo}..{hi - 1}" + ("" if locate is None else f": {locate(lo)}")
        if stored is not None and arr.metadata.encode_chunk_key((i, *zeros)) not in stored:
            problems.append(f"{name}: chunk {i} ({where}) is missing: that data is lost{hint}")
            continue
        if decode:
            try:
                np.asarray(arr[lo:hi])
            except Exception as exc:  # codec-specific errors (blosc/zstd RuntimeError, shape ValueError)
                problems.append(f"{name}: chunk {i} ({where}) cannot be decoded: {type(exc).__name__}: {exc}")
    return problems


def _read_or_report(store: EpisodeStore, key: str, problems: list[str]) -> np.ndarray | None:
    try:
        return store.read(key, 0, store.num_steps)
    except DataError:  # find and name every corrupt chunk
        problems.extend(_chunk_problems(store.array(key), f"data/{key}", store.num_steps, presence=False))
        return None


def validate(path: str | Path, *, full_frames: bool = False) -> tuple[EpisodeStore, list[str]]:
    """Check a store; raise DataError listing every problem, else return (store, warnings).

    Always: the commit record and monotonic ``episode_ends`` (``open_store``), declared shapes and
    dtypes, array lengths, NaN/inf, metadata, first/last frame of each episode, stats. ``full_frames``:
    every chunk of every array exists and decodes.
    """
    store = open_store(path)  # refuses a damaged index, undeclared shapes or short arrays, naming them
    problems: list[str] = []
    warnings: list[str] = []
    root = store._root
    extra_ends = root["meta/episode_ends"].shape[0] - len(store)
    if extra_ends > 0:
        warnings.append(f"meta/episode_ends has {extra_ends} uncommitted entries (an interrupted write; ignored)")
    for key in store.keys():
        n = store.array(key).shape[0]
        if n > store.num_steps:
            warnings.append(f"data/{key} has an uncommitted tail of {n - store.num_steps} steps (ignored)")
    floats = [k for k in store.fields if np.dtype(store.dtypes[k]).kind == "f"]
    data = {k: _read_or_report(store, k, problems) for k in floats}
    readers = {cam: store.frame_reader(cam) for cam in store.cameras}
    for i in range(len(store)):
        start, stop = store.bounds(i)
        for k in floats:
            if data[k] is None:
                continue
            x = data[k][start:stop].reshape(stop - start, -1)
            if not np.isfinite(x).all():
                step, ch = np.argwhere(~np.isfinite(x))[0]
                problems.append(f"episode {i}: field {k!r} has NaN/inf at step {step} channel {ch}")
        if not full_frames:
            for cam, reader in readers.items():
                try:
                    reader.read(np.array([start, stop - 1]))
                except Exception as exc:  # a corrupt chunk raises codec-specific errors
                    problems.append(f"episode {i}: camera {cam!r} frames cannot be read: {exc}")
    if full_frames:
        legacy = not store.all_chunks_written
        for key in store.keys():
            is_cam = key.startswith("camera/")
            decode = is_cam or key not in floats  # floats were decoded above
            problems += _chunk_problems(store.array(key), f"data/{key}", store.num_steps, legacy=legacy, decode=decode,
                                        locate=store.locate if is_cam else None)
        info_len = int(store._info_ends[-1]) if len(store) else 0
        for name, length in (("episode_ends", len(store)), ("episode_info_ends", len(store)), ("episode_info", info_len)):
            problems += _chunk_problems(root[f"meta/{name}"], f"meta/{name}", length)
    try:
        metas = store.all_meta()
        for i, m in enumerate(metas):
            if not isinstance(m.get("instructions"), list) or not all(isinstance(s, str) for s in m["instructions"]):
                problems.append(f"episode {i}: metadata 'instructions' must be a list of strings")
    except DataError as exc:
        problems.append(str(exc))
    if (store.path / "stats" / FILENAME).exists():
        try:
            stats = NormStats.load(store.path / "stats")
            stats.check_compatible(store)
            if stats.source.get("steps") not in (None, store.num_steps):
                warnings.append(
                    f"stats were computed on {stats.source.get('episodes')} episodes / {stats.source.get('steps')} steps; "
                    f"the store has {len(store)} / {store.num_steps} (run `foundry data stats`)"
                )
        except DataError as exc:
            problems.append(f"stats: {exc}")
    else:
        warnings.append("no stats/ folder (run `foundry data stats`)")
    if problems:
        raise DataError(f"{store.path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return store, warnings
