"""LeRobot v3 dataset folder -> episode store (REFERENCE.md c.2).

Reads ``meta/info.json`` (fps, features, path templates), ``meta/tasks.parquet``,
``meta/episodes/**/*.parquet`` (per-episode offsets into shared files), ``data/**.parquet`` frames and
``videos/<key>/chunk-XXX/file-XXX.mp4`` (decoded with PyAV, seeking to the episode's timestamps) or
``image`` features stored in the parquet files. Every numeric feature becomes a field with its name
kept (``observation.state``, ``action``, ``timestamp``, ``frame_index``, ...); ``episode_index``,
``index`` and ``task_index`` go to per-episode metadata. A camera is named after its feature key
without the ``observation.images.`` prefix. The episode's tasks become its instructions.
A work unit is a run of consecutive episodes stored in the same data file, so each parquet file is read
once (not once per episode), up to ``UNIT_FRAME_BYTES`` of decoded frames per unit.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.convert import ConvertOptions, Episode, Plan
from foundry_core.errors import DataError

BOOKKEEPING = ("episode_index", "index", "task_index")
CAMERA_PREFIX = "observation.images."


def detect(src: Path) -> bool:
    info = src / "meta" / "info.json"
    if not info.exists():
        return False
    try:
        return str(json.loads(info.read_text()).get("codebase_version", "")).startswith("v3")
    except json.JSONDecodeError:
        return False


def _camera_name(key: str) -> str:
    return key.removeprefix(CAMERA_PREFIX).replace("/", "_")


def _hw(feature: dict[str, Any], key: str) -> tuple[int, int]:
    shape, names = list(feature["shape"]), feature.get("names") or ["height", "width", "channels"]
    if len(shape) != 3:
        raise DataError(f"feature {key}: expected an image shape of 3 dims, got {shape}")
    dims = dict(zip(names, shape))
    if "height" in dims and "width" in dims:
        return int(dims["height"]), int(dims["width"])
    return int(shape[0]), int(shape[1])


def _read_table(path: Path, **kw: Any) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, **kw)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read parquet: {exc}") from exc


def _tasks(src: Path) -> dict[int, str]:
    path = src / "meta" / "tasks.parquet"
    if not path.exists():
        return {}
    table = _read_table(path).to_pydict()
    name_col = next((c for c in ("task", "__index_level_0__") if c in table), None)
    if name_col is None or "task_index" not in table:
        raise DataError(f"{path}: expected columns task_index and task")
    return {int(i): str(t) for i, t in zip(table["task_index"], table[name_col])}


def plan(src: Path, options: ConvertOptions) -> Plan:
    info_path = src / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    features: dict[str, dict[str, Any]] = info.get("features") or {}
    if not features:
        raise DataError(f"{info_path}: no features")
    fields, dtypes, cameras, camera_kinds = {}, {}, {}, {}
    for key, feat in features.items():
        dtype = feat.get("dtype")
        if dtype in ("video", "image"):
            cameras[_camera_name(key)] = _hw(feat, key)
            camera_kinds[key] = dtype
        elif key not in BOOKKEEPING and dtype not in ("string",):
            try:
                dtypes[key] = str(np.dtype(dtype))
            except TypeError as exc:
                raise DataError(f"{info_path}: feature {key} has unsupported dtype {dtype!r}") from exc
            fields[key] = tuple(int(d) for d in feat.get("shape", [1]))
    ep_files = sorted((src / "meta" / "episodes").rglob("*.parquet"))
    if not ep_files:
        raise DataError(f"{src}: no meta/episodes/**/*.parquet")
    rows: list[dict[str, Any]] = []
    for path in ep_files:
        rows.extend(_read_table(path).to_pylist())
    rows.sort(key=lambda r: int(r["episode_index"]))
    tasks = _tasks(src)
    frame_bytes = sum(h * w * 3 for h, w in cameras.values())
    units = []
    for group in _file_groups([{k: v for k, v in r.items() if not k.startswith("stats/")} for r in rows], frame_bytes):
        units.append({"src": str(src), "info": info, "rows": group, "fields": fields, "dtypes": dtypes,
                      "camera_kinds": camera_kinds, "tasks": tasks, "task": options.task,
                      "instruction": options.instruction})
    fps = float(options.fps or info.get("fps") or 0)
    if fps <= 0:
        raise DataError(f"{info_path}: no fps; pass --fps")
    semantics = {k: ", ".join(map(str, f["names"])) for k, f in features.items()
                 if k in fields and isinstance(f.get("names"), list)}
    attrs = {"lerobot_info": info}
    return Plan(fps, fields, dtypes, cameras, units, semantics, attrs)


#: Decoded camera bytes one work unit may hold (its episodes travel back from the worker together).
UNIT_FRAME_BYTES = 1 << 30


def _file_groups(rows: list[dict[str, Any]], frame_bytes: int) -> list[list[dict[str, Any]]]:
    """Consecutive episodes stored in the same data file, as one unit: the file is read once for all of
    them (it was read once per episode). A group is closed early when its decoded frames would pass
    ``UNIT_FRAME_BYTES``, so a file of long camera episodes is read once per such group."""
    groups: list[list[dict[str, Any]]] = []
    key, held = None, 0
    for row in rows:
        row_key = (row.get("data/chunk_index"), row.get("data/file_index"))
        size = int(row.get("length") or 0) * frame_bytes
        if groups and row_key == key and held + size <= UNIT_FRAME_BYTES:
            groups[-1].append(row)
            held += size
        else:
            groups.append([row])
            key, held = row_key, size
    return groups


def _column(table: Any, key: str, shape: tuple[int, ...], dtype: str, where: str) -> np.ndarray:
    values = table.column(key).to_pylist()
    arr = np.asarray(values, dtype=dtype)
    try:
        return arr.reshape(len(values), *shape)
    except ValueError as exc:
        raise DataError(f"{where}: feature {key} has shape {arr.shape[1:]}, info.json says {list(shape)}") from exc


def _decode_video(path: Path, start: float, stop: float, fps: float, length: int, where: str) -> np.ndarray:
    import av

    if not path.exists():
        raise DataError(f"{where}: video {path} does not exist")
    half = 0.5 / fps
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.time_base is not None and start > 0:
            container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else 0.0
            if t < start - half:
                continue
            if t >= stop - half or len(frames) == length:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    if len(frames) != length:
        raise DataError(f"{where}: {path} has {len(frames)} frames in [{start:.3f}, {stop:.3f}) s, expected {length}")
    return np.stack(frames)


def _decode_images(values: list[Any], where: str) -> np.ndarray:
    from PIL import Image

    out = []
    for v in values:
        data = v.get("bytes") if isinstance(v, dict) else v
        if not data:
            raise DataError(f"{where}: an image cell has no bytes (external image paths are not supported)")
        with Image.open(io.BytesIO(data)) as img:
            out.append(np.asarray(img.convert("RGB")))
    return np.stack(out)


def load(unit: dict[str, Any]) -> list[Episode]:
    """The unit's episodes, all from one data file, which is read once."""
    import pyarrow.compute as pc

    src, info, first = Path(unit["src"]), unit["info"], unit["rows"][0]
    data_path = src / info["data_path"].format(chunk_index=int(first["data/chunk_index"]),
                                               file_index=int(first["data/file_index"]))
    table = _read_table(data_path)
    episodes = table.column("episode_index")
    return [_episode(unit, row, table.filter(pc.equal(episodes, int(row["episode_index"]))), data_path)
            for row in unit["rows"]]


def _episode(unit: dict[str, Any], row: dict[str, Any], table: Any, data_path: Path) -> Episode:
    src, info = Path(unit["src"]), unit["info"]
    ep = int(row["episode_index"])
    where = f"{src}: episode {ep}"
    if "frame_index" in table.column_names:
        table = table.sort_by("frame_index")
    length = table.num_rows
    if length == 0 or ("length" in row and int(row["length"]) != length):
        raise DataError(f"{where}: {data_path} has {length} frames, meta/episodes says {row.get('length')}")
    arrays: dict[str, Any] = {k: _column(table, k, tuple(unit["fields"][k]), unit["dtypes"][k], where) for k in unit["fields"]}
    fps = float(info["fps"])
    for key, kind in unit["camera_kinds"].items():
        name = f"camera/{_camera_name(key)}"
        if kind == "image":
            arrays[name] = _decode_images(table.column(key).to_pylist(), f"{where} {key}")
        else:
            vpath = src / info["video_path"].format(
                video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]), file_index=int(row[f"videos/{key}/file_index"])
            )
            arrays[name] = _decode_video(vpath, float(row[f"videos/{key}/from_timestamp"]),
                                         float(row[f"videos/{key}/to_timestamp"]), fps, length, f"{where} {key}")
    tasks = [str(t) for t in (row.get("tasks") or [])]
    if not tasks and "task_index" in table.column_names:
        tasks = [unit["tasks"].get(int(i), "") for i in dict.fromkeys(table.column("task_index").to_pylist())]
    instructions = tasks or [unit["instruction"] or ""]
    extra = {"lerobot_episode_index": ep}
    if "index" in table.column_names:
        extra["lerobot_first_index"] = int(table.column("index")[0].as_py())
    return Episode(arrays, task=unit["task"] or (tasks[0] if tasks else ""), instruction=instructions,
                   source=f"lerobot:{src.name}", extra=extra)
