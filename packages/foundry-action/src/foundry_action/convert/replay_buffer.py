"""diffusion_policy Zarr replay buffer (v2 or v3 on disk) -> episode store (REFERENCE.md c.1).

``data/<key>`` arrays concatenated over time and ``meta/episode_ends`` (exclusive ends). A uint8
array shaped (T, H, W, 3) becomes a camera named after its key; every other array a field with its
own shape and dtype. Other ``meta/`` arrays with one entry per episode go into per-episode metadata.
The buffer has no fps, task or instruction: ``--fps`` (default 10), ``--task`` and ``--instruction``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.convert import ConvertOptions, Episode, Plan
from foundry_core.errors import DataError

DEFAULT_FPS = 10.0


def _open(src: Path) -> Any:
    import zarr

    try:
        return zarr.open_group(str(src), mode="r")
    except Exception as exc:  # zarr raises several types for a missing/broken group
        raise DataError(f"{src}: cannot open as a Zarr group: {exc}") from exc


def detect(src: Path) -> bool:
    if not src.is_dir():
        return False
    if (src / ".zgroup").exists():
        return (src / "data").is_dir() and (src / "meta" / "episode_ends").exists()
    if (src / "zarr.json").exists():
        from foundry_action.store import is_store

        return not is_store(src) and (src / "meta" / "episode_ends").exists()
    return False


def _is_camera(arr: Any) -> bool:
    return arr.dtype == np.uint8 and len(arr.shape) == 4 and arr.shape[-1] == 3


def plan(src: Path, options: ConvertOptions) -> Plan:
    root = _open(src)
    if "data" not in root or "meta" not in root or "episode_ends" not in root["meta"]:
        raise DataError(f"{src}: a replay buffer needs data/ and meta/episode_ends")
    ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)
    if len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
        raise DataError(f"{src}: meta/episode_ends is not strictly increasing: {ends.tolist()[:10]}...")
    fields, dtypes, cameras = {}, {}, {}
    total = int(ends[-1]) if len(ends) else 0
    for key, arr in root["data"].arrays():
        if arr.shape[0] < total:
            raise DataError(f"{src}: data/{key} has {arr.shape[0]} steps, meta/episode_ends says {total}")
        if _is_camera(arr):
            cameras[key] = (int(arr.shape[1]), int(arr.shape[2]))
        else:
            fields[key], dtypes[key] = tuple(int(d) for d in arr.shape[1:]), str(arr.dtype)
    per_episode_meta = [k for k, a in root["meta"].arrays() if k != "episode_ends" and a.shape[:1] == (len(ends),)]
    starts = np.concatenate([[0], ends[:-1]])
    units = [(str(src), i, int(a), int(b), per_episode_meta, options.task or src.name, options.instruction)
             for i, (a, b) in enumerate(zip(starts, ends))]
    attrs = {"replay_buffer_attrs": dict(root.attrs)}
    return Plan(float(options.fps or DEFAULT_FPS), fields, dtypes, cameras, units, {}, attrs)


def load(unit: tuple[str, int, int, int, list[str], str, str | None]) -> list[Episode]:
    src, index, start, stop, meta_keys, task, instruction = unit
    root = _open(Path(src))
    arrays = {}
    for key, arr in root["data"].arrays():
        arrays[f"camera/{key}" if _is_camera(arr) else key] = np.asarray(arr[start:stop])
    extra: dict[str, Any] = {"replay_buffer_episode": index}
    for key in meta_keys:
        value = np.asarray(root[f"meta/{key}"][index])
        extra[f"meta_{key}"] = value.tolist()
    return [Episode(arrays, task=task, instruction=instruction or "", source=f"replay_buffer:{Path(src).name}", extra=extra)]
