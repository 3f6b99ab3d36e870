"""Reference-system robotics WebDataset shards -> episode store (REFERENCE.md b.1-b.3).

The shards hold *windows* (T = past + 1 + future steps around an anchor, 16 in the LBM sample), shuffled
across shards, with images only at the anchor's image offsets. Two layouts, chosen per dataset:

* **episodes** (when every sample's ``metadata.json`` has ``episode_id``, ``anchor_timestep``,
  ``anchor_relative_idx``, ``lowdim_start_timestep``, ``lowdim_end_timestep`` and ``image_timesteps``,
  as the reference writes them): the windows of one ``episode_id`` are put back at their timesteps and
  every contiguous run of covered steps becomes one episode (the shared LBM shard: 5 windows of one
  124-step episode -> 4 runs, two windows overlap). Overlapping windows must agree on every value (else
  an error names both samples). Fields are the per-step ``lowdim.npz`` arrays except the window-relative
  ones (``*_relative``: relative to each window's own anchor, so not a property of a step; the data
  source derives relative actions itself) and the window masks ``past_mask``/``future_mask``. Episode
  metadata: ``wds_episode_id``, ``wds_first_timestep`` (timestep of step 0), ``wds_samples``.
* **windows** (otherwise, or ``ConvertOptions.keep_windows``): every sample is its own short episode with
  every numeric array kept (``past_mask``/``future_mask`` included); ``metadata.json`` -> ``wds_metadata``.

In both, ``<cam>_t<offset>.jpg`` lands at its timestep (``image_timesteps``, else ``anchor +
offset``); a step without a real image holds an all-black frame (Zarr stores no chunk for it, so it
costs no space) and the bool field ``image_valid`` is false there: the sampler masks it and every
backbone ignores masked images. ``language_instructions.json`` -> the episode's instructions (original,
randomized, verbose, alternative, in that order; the union over an episode's samples) and the dict in
metadata; the npz ``language_instruction`` strings -> ``lowdim_language_instruction`` (windows only).
Depth/point-map members are rejected with an error rather than dropped silently. Shards are indexed
once (tar headers + ``metadata.json``); members are then read by offset.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.convert import ConvertOptions, Episode, Plan
from foundry_core.errors import DataError

log = logging.getLogger(__name__)
INSTRUCTION_TYPES = ("original", "randomized", "verbose", "alternative")
OPTIONS = ("keep_windows",)  # ConvertOptions this converter reads beyond fps/task/instruction
DEFAULT_FPS = 10.0
#: metadata.json keys that place a window in its episode (all needed to rebuild episodes).
PLACEMENT_KEYS = ("episode_id", "anchor_timestep", "anchor_relative_idx", "lowdim_start_timestep",
                  "lowdim_end_timestep", "image_timesteps")
WINDOW_MASKS = ("past_mask", "future_mask")


def _shards(src: Path) -> list[Path]:
    if src.is_file():
        return [src] if src.suffix == ".tar" else []
    manifest = src / "manifest.jsonl"
    if manifest.exists():
        shards = []
        for n, line in enumerate(manifest.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                name = str(json.loads(line)["shard"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{manifest}:{n}: expected {{\"shard\": ..., \"num_sequences\": ...}}: {exc}") from exc
            path = src / (name.removesuffix(".tar") + ".tar")
            if not path.exists():
                raise DataError(f"{manifest}:{n}: shard {path} does not exist")
            shards.append(path)
        return shards
    return sorted(src.glob("*.tar"))


def detect(src: Path) -> bool:
    return bool(_shards(src)) and not (src / "zarr.json").exists()


def index_shard(shard: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """Sample key -> {extension: (data offset, size)} from the tar headers (no member data is read)."""
    samples: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, dot, ext = base.partition(".")
                if dot:
                    samples[key][ext] = (member.offset_data, member.size)
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"{shard}: corrupt tar shard: {exc}") from exc
    return dict(samples)


def read_members(shard: Path, members: dict[str, tuple[int, int]], only: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """The bytes of ``members`` (from :func:`index_shard`), or of the extensions in ``only``."""
    out = {}
    try:
        with open(shard, "rb") as f:
            for ext, (offset, size) in members.items():
                if only is None or ext in only:
                    f.seek(offset)
                    out[ext] = f.read(size)
                    if len(out[ext]) != size:
                        raise DataError(f"{shard}: member {ext} is truncated")
    except OSError as exc:
        raise DataError(f"{shard}: cannot read: {exc}") from exc
    return out


def _read_samples(shard: Path) -> dict[str, dict[str, bytes]]:
    return {key: read_members(shard, members) for key, members in index_shard(shard).items()}


def _decode_jpeg(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise DataError(f"{where}: cannot decode image: {exc}") from exc


def _load_npz(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Numeric and string arrays only: an object array would need unpickling, which we never do."""
    import zipfile

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            out = {}
            for k in npz.files:
                try:
                    out[k] = npz[k]
                except ValueError as exc:
                    raise DataError(
                        f"{where}: array {k!r} holds Python objects (loading it would unpickle code); "
                        "re-export the shard with numeric or string arrays"
                    ) from exc
            return out
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{where}: not a readable .npz archive: {exc}") from exc


def _load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: invalid JSON: {exc}") from exc


def _parse(key: str, members: dict[str, bytes], shard: Path) -> dict[str, Any]:
    """One sample -> {"lowdim": {...}, "meta": {...}, "instructions": {...}, "images": {cam: {offset: img}}}."""
    where = f"{shard}: sample {key}"
    for required in ("lowdim.npz", "metadata.json"):
        if required not in members:
            raise DataError(f"{where}: missing {required} (a robotics sample needs lowdim.npz, metadata.json, JPEGs)")
    lowdim = _load_npz(members["lowdim.npz"], f"{where} lowdim.npz")
    meta = _load_json(members["metadata.json"], f"{where} metadata.json")
    instructions = _load_json(members.get("language_instructions.json", b"{}") or b"{}", f"{where} language_instructions.json")
    images: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for ext, data in members.items():
        if ext.endswith((".png", ".tiff", ".tif")):
            raise DataError(f"{where}: depth/point-map member {ext!r} is not supported by this converter")
        if ext.endswith((".jpg", ".jpeg")):
            stem = ext.rsplit(".", 1)[0]
            cam, sep, offset = stem.rpartition("_t")
            if not sep:
                raise DataError(f"{where}: image {ext!r} is not named <camera>_t<offset>.jpg")
            images[cam][int(offset)] = _decode_jpeg(data, f"{where} {ext}")
    if not images:
        raise DataError(f"{where}: no camera images")
    return {"lowdim": lowdim, "meta": meta, "instructions": instructions, "images": dict(images)}


def _layout(
    sample: dict[str, Any], rebuild: bool
) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, tuple[int, int]]]:
    fields, dtypes = {}, {}
    for k, v in sample["lowdim"].items():
        if v.dtype.kind not in "fiub" or (rebuild and (k.endswith("_relative") or k in WINDOW_MASKS)):
            continue
        fields[k], dtypes[k] = tuple(v.shape[1:]), str(v.dtype)
    fields["image_valid"], dtypes["image_valid"] = (), "bool"
    cameras = {c: tuple(next(iter(imgs.values())).shape[:2]) for c, imgs in sample["images"].items()}
    return fields, dtypes, cameras  # type: ignore[return-value]


def _metadata(shard: Path, key: str, members: dict[str, tuple[int, int]]) -> dict[str, Any]:
    where = f"{shard}: sample {key}"
    if "metadata.json" not in members:
        raise DataError(f"{where}: missing metadata.json (a robotics sample needs lowdim.npz, metadata.json, JPEGs)")
    try:
        meta = json.loads(read_members(shard, members, ("metadata.json",))["metadata.json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: metadata.json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{where}: metadata.json must be an object")
    return meta


def plan(src: Path, options: ConvertOptions) -> Plan:
    shards = _shards(src)
    if not shards:
        raise DataError(f"{src}: no WebDataset shards (manifest.jsonl or *.tar)")
    samples = [(shard, key, members) for shard in shards for key, members in sorted(index_shard(shard).items())]
    if not samples:
        raise DataError(f"{shards[0]}: empty shard")
    metas = [_metadata(shard, key, members) for shard, key, members in samples]
    reason = "keep_windows option" if options.keep_windows else ""
    for (shard, key, _), meta in zip(samples, metas):
        missing = [k for k in PLACEMENT_KEYS if k not in meta]
        if missing and not reason:
            reason = f"{shard}: sample {key}: metadata.json has no {', '.join(missing)}"
    rebuild = not reason
    shard0, key0, members0 = samples[0]
    sample0 = _parse(key0, read_members(shard0, members0), shard0)
    fields, dtypes, cameras = _layout(sample0, rebuild)
    image_offsets = {cam: sorted(imgs) for cam, imgs in sample0["images"].items()}
    attrs: dict[str, Any] = {"wds_shards": [s.name for s in shards], "fps_from": "option" if options.fps else "default",
                             "wds_layout": "episodes" if rebuild else "windows"}
    if not rebuild:
        attrs["wds_windows_reason"] = reason
        log.info("%s: keeping windows as episodes (%s)", src, reason)
    cfg = (src / "preprocessing_config.yaml") if src.is_dir() else None
    if cfg is not None and cfg.exists():
        import yaml

        attrs["preprocessing_config"] = yaml.safe_load(cfg.read_text())
    task = options.task or (src.name if src.is_dir() else src.stem)
    semantics = {"image_valid": "true where the frame is a real image of the source; false = no image (black frame)"}
    if not rebuild:
        semantics["past_mask"] = "source window mask: valid past steps"
        semantics["future_mask"] = "source window mask: anchor and valid future steps"
    for name in fields:
        if name.endswith("rot_6d") or name.endswith("rot_6d_relative"):
            semantics[name] = "rotation: first two rows of R, row-major (reference convention)"
    if rebuild:
        groups: dict[str, list[tuple[str, str, dict[str, tuple[int, int]]]]] = defaultdict(list)
        for (shard, key, members), meta in zip(samples, metas):
            groups[str(meta["episode_id"])].append((str(shard), key, members))
        units: list[Any] = [
            {"layout": "episodes", "episode_id": eid, "samples": groups[eid], "fields": [f for f in fields if f != "image_valid"],
             "cameras": cameras, "task": task, "instruction": options.instruction, "source": f"wds:{src.name}"}
            for eid in sorted(groups)
        ]
        label = "episodes"
    else:
        units = [{"layout": "windows", "shard": str(s), "task": task, "instruction": options.instruction,
                  "image_offsets": image_offsets} for s in shards]
        label = "shards"
    return Plan(options.fps or DEFAULT_FPS, fields, dtypes, cameras, units, semantics, attrs, unit_label=label)


def _instruction_list(instr_dict: dict[str, Any]) -> list[str]:
    return [str(s) for t in INSTRUCTION_TYPES for s in instr_dict.get(t, [])]


def sample_to_episode(sample: dict[str, Any], task: str, default_instruction: str | None, where: str, source: str) -> Episode:
    """Windows layout: one parsed windowed sample -> one short episode (see the module docstring)."""
    lowdim, meta = sample["lowdim"], sample["meta"]
    numeric = {k: v for k, v in lowdim.items() if v.dtype.kind in "fiub"}
    lengths = {len(v) for v in numeric.values()}
    if len(lengths) != 1:
        raise DataError(f"{where}: lowdim arrays have different lengths {sorted(lengths)}")
    length = lengths.pop()
    if "anchor_relative_idx" in meta:
        anchor = int(meta["anchor_relative_idx"])
    elif "future_mask" in lowdim:
        anchor = int(np.argmax(lowdim["future_mask"]))
    else:
        raise DataError(f"{where}: metadata.json has no anchor_relative_idx and lowdim no future_mask")
    arrays: dict[str, Any] = dict(numeric)
    valid = np.zeros(length, dtype=bool)
    offsets = set().union(*(set(imgs) for imgs in sample["images"].values()))
    for cam, by_offset in sample["images"].items():
        missing = sorted(offsets - set(by_offset))
        if missing:  # never stand in a neighbour for a lost frame (image_valid is per step, not per camera)
            names = ", ".join(f"{cam}_t{off}.jpg" for off in missing)
            raise DataError(f"{where}: missing image member(s) {names} (other cameras have these offsets); the shard is incomplete")
        steps = {anchor + off: img for off, img in by_offset.items()}
        bad = [s for s in steps if not 0 <= s < length]
        if bad:
            raise DataError(f"{where}: camera {cam} image offsets land outside the {length}-step window")
        first = next(iter(steps.values()))
        frames = np.zeros((length, *first.shape), dtype=np.uint8)  # black = no image (image_valid false)
        for step, img in steps.items():
            frames[step] = img
        arrays[f"camera/{cam}"] = frames
        valid[sorted(steps)] = True
    arrays["image_valid"] = valid
    instr_dict = sample["instructions"]
    instructions = _instruction_list(instr_dict)
    extra: dict[str, Any] = {"wds_metadata": meta, "language_instructions": instr_dict}
    if "language_instruction" in lowdim:
        extra["lowdim_language_instruction"] = [str(s) for s in lowdim["language_instruction"].tolist()]
        if not instructions:
            instructions = list(dict.fromkeys(extra["lowdim_language_instruction"]))
    if not instructions:
        instructions = [default_instruction or ""]
    return Episode(arrays, task=task, instruction=instructions, source=source, extra=extra)


def _window_steps(sample: dict[str, Any], fields: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(timestep of every window position, which positions are real) from metadata + window masks."""
    meta, lowdim = sample["meta"], sample["lowdim"]
    missing = [f for f in fields if f not in lowdim]
    if missing:
        raise DataError(f"{where}: lowdim.npz has no {', '.join(missing)} (the first sample has them)")
    extra = [k for k, v in lowdim.items() if v.dtype.kind in "fiub" and k not in fields
             and not k.endswith("_relative") and k not in WINDOW_MASKS]
    if extra:
        raise DataError(f"{where}: lowdim.npz has {', '.join(extra)}, which the first sample lacks")
    lengths = {len(lowdim[f]) for f in (*fields, *[m for m in WINDOW_MASKS if m in lowdim])}
    if len(lengths) != 1:
        raise DataError(f"{where}: lowdim arrays have different lengths {sorted(lengths)}")
    length = lengths.pop()
    steps = int(meta["anchor_timestep"]) - int(meta["anchor_relative_idx"]) + np.arange(length)
    valid = np.ones(length, dtype=bool)
    if all(m in lowdim for m in WINDOW_MASKS):
        valid = lowdim["past_mask"].astype(bool) | lowdim["future_mask"].astype(bool)
    lo, hi = int(meta["lowdim_start_timestep"]), int(meta["lowdim_end_timestep"])
    if valid.any() and (steps[valid].min() < lo or steps[valid].max() > hi):
        raise DataError(f"{where}: real window steps span timesteps {steps[valid].min()}..{steps[valid].max()}, "
                        f"metadata.json says lowdim_start/end_timestep {lo}..{hi}")
    return steps, valid


def _image_steps(sample: dict[str, Any], cam: str, where: str) -> list[tuple[int, np.ndarray]]:
    """(timestep, frame) of one camera's images: ``image_timesteps`` in ascending offset order."""
    meta, by_offset = sample["meta"], sample["images"][cam]
    offsets, stamps = sorted(by_offset), [int(t) for t in meta["image_timesteps"]]
    if len(offsets) != len(stamps):
        raise DataError(f"{where}: camera {cam} has {len(offsets)} images, image_timesteps lists {len(stamps)}")
    anchor, last = int(meta["anchor_timestep"]), meta.get("original_episode_length")
    for off, t in zip(offsets, stamps):
        want = anchor + off
        clipped = (want < 0 and t == 0) or (last is not None and want > int(last) - 1 and t == int(last) - 1)
        if t != want and not clipped:
            raise DataError(f"{where}: image {cam}_t{off} should be at timestep {want}, image_timesteps says {t}")
    return [(t, by_offset[off]) for off, t in zip(offsets, stamps)]


def rebuild_episodes(unit: dict[str, Any], parsed: list[tuple[str, str, dict[str, Any]]]) -> list[Episode]:
    """Episodes layout: the windows of one ``episode_id`` -> one episode per contiguous run of steps."""
    eid, fields = unit["episode_id"], list(unit["fields"])
    rows: dict[int, tuple[str, dict[str, np.ndarray]]] = {}
    for key, where, sample in parsed:
        steps, valid = _window_steps(sample, fields, where)
        for i in np.flatnonzero(valid).tolist():
            t, row = int(steps[i]), {f: sample["lowdim"][f][i] for f in fields}
            if t not in rows:
                rows[t] = (key, row)
                continue
            other_key, other = rows[t]
            for f in fields:
                if not np.array_equal(other[f], row[f]):
                    raise DataError(f"{where}: episode_id {eid} timestep {t}: {f} differs from sample {other_key} "
                                    "(overlapping windows disagree: do two episodes share this episode_id?)")
    images: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for _key, where, sample in parsed:
        for cam in sample["images"]:
            for t, img in _image_steps(sample, cam, where):
                if t not in rows:
                    raise DataError(f"{where}: image of {cam} at timestep {t} lies outside every window's real steps")
                images[cam].setdefault(t, img)
    steps = np.array(sorted(rows))
    runs = np.split(steps, np.flatnonzero(np.diff(steps) > 1) + 1)
    episodes = []
    for run in runs:
        first, n = int(run[0]), len(run)
        arrays: dict[str, Any] = {f: np.stack([rows[int(t)][1][f] for t in run]) for f in fields}
        valid = np.zeros(n, dtype=bool)
        for cam, (h, w) in unit["cameras"].items():
            frames = np.zeros((n, h, w, 3), dtype=np.uint8)  # black = no image (image_valid false)
            for t, img in images.get(cam, {}).items():
                if first <= t < first + n:
                    if img.shape != (h, w, 3):
                        raise DataError(f"episode_id {eid}: camera {cam} image at timestep {t} is {img.shape}, "
                                        f"expected ({h}, {w}, 3)")
                    frames[t - first], valid[t - first] = img, True
            arrays[f"camera/{cam}"] = frames
        arrays["image_valid"] = valid
        keys = sorted({rows[int(t)][0] for t in run})
        in_run = [s for k, _w, s in parsed if k in keys]
        instructions = list(dict.fromkeys(s for smp in in_run for s in _instruction_list(smp["instructions"])))
        extra = {"wds_episode_id": eid, "wds_first_timestep": first, "wds_samples": keys,
                 "original_episode_length": in_run[0]["meta"].get("original_episode_length"),
                 "language_instructions": in_run[0]["instructions"]}
        episodes.append(Episode(arrays, task=unit["task"], instruction=instructions or [unit["instruction"] or ""],
                                source=unit["source"], extra=extra))
    return episodes


def _check_images(sample: dict[str, Any], expected: dict[str, list[int]], where: str) -> None:
    """Windows layout: every sample carries the images the first one has (camera x offset); a gap is an error."""
    for cam, offsets in expected.items():
        missing = [off for off in offsets if off not in sample["images"].get(cam, {})]
        if missing:
            names = ", ".join(f"{cam}_t{off}.jpg" for off in missing)
            raise DataError(f"{where}: missing image member(s) {names} (the data set's samples have them)")


def load(unit: dict[str, Any]) -> list[Episode]:
    if unit["layout"] == "episodes":
        parsed = []
        for shard_name, key, members in unit["samples"]:
            shard = Path(shard_name)
            parsed.append((key, f"{shard}: sample {key}", _parse(key, read_members(shard, members), shard)))
        return rebuild_episodes(unit, parsed)
    shard = Path(unit["shard"])
    samples = _read_samples(shard)
    parsed_w = [(key, _parse(key, members, shard)) for key, members in samples.items()]
    for key, p in parsed_w:
        _check_images(p, unit.get("image_offsets", {}), f"{shard}: sample {key}")
    parsed_w.sort(key=lambda kv: (str(kv[1]["meta"].get("episode_id", "")), int(kv[1]["meta"].get("anchor_timestep", 0)), kv[0]))
    return [sample_to_episode(p, unit["task"], unit["instruction"], f"{shard}: sample {key}", f"wds:{shard.parent.name}")
            for key, p in parsed_w]
