"""Reference-system robotics WebDataset shards -> episode store (REFERENCE.md b.1-b.3).

Choice: every windowed sample becomes one short episode (T = past + 1 + future steps, 16 in the LBM
sample). Grouping samples by ``metadata.json`` ``episode_id`` cannot rebuild episodes: the windows
cover a few scattered parts of an episode (5 windows of 16 steps out of 124 in the shared sample) and
images exist only at the image offsets. Every value is kept:

* every numeric ``lowdim.npz`` array -> a field with its own shape and dtype (``past_mask`` and
  ``future_mask`` included, so the original padding stays visible);
* ``<cam>_t<offset>.jpg`` -> camera frames at step ``anchor_relative_idx + offset``; the other steps
  repeat the nearest real frame and the bool field ``image_valid`` marks real frames (the sampler
  masks copies);
* ``language_instructions.json`` -> the episode's instructions (original, randomized, verbose,
  alternative, in that order) and the full dict in metadata; ``metadata.json`` -> ``wds_metadata``;
  the npz ``language_instruction`` strings -> ``lowdim_language_instruction``.

Depth/point-map members are rejected with an error rather than dropped silently.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.convert import ConvertOptions, Episode, Plan
from foundry_core.errors import DataError

INSTRUCTION_TYPES = ("original", "randomized", "verbose", "alternative")
DEFAULT_FPS = 10.0


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


def _read_samples(shard: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, dot, ext = base.partition(".")
                if not dot:
                    continue
                data = tar.extractfile(member)
                samples[key][ext] = data.read() if data else b""
    except tarfile.TarError as exc:
        raise DataError(f"{shard}: corrupt tar shard: {exc}") from exc
    return dict(samples)


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


def _layout(sample: dict[str, Any]) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, tuple[int, int]]]:
    fields, dtypes = {}, {}
    for k, v in sample["lowdim"].items():
        if v.dtype.kind in "fiub":
            fields[k], dtypes[k] = tuple(v.shape[1:]), str(v.dtype)
    fields["image_valid"], dtypes["image_valid"] = (), "bool"
    cameras = {c: tuple(next(iter(imgs.values())).shape[:2]) for c, imgs in sample["images"].items()}
    return fields, dtypes, cameras  # type: ignore[return-value]


def plan(src: Path, options: ConvertOptions) -> Plan:
    shards = _shards(src)
    if not shards:
        raise DataError(f"{src}: no WebDataset shards (manifest.jsonl or *.tar)")
    first = _read_samples(shards[0])
    if not first:
        raise DataError(f"{shards[0]}: empty shard")
    key = sorted(first)[0]
    sample = _parse(key, first[key], shards[0])
    fields, dtypes, cameras = _layout(sample)
    image_offsets = {cam: sorted(imgs) for cam, imgs in sample["images"].items()}
    attrs: dict[str, Any] = {"wds_shards": [s.name for s in shards], "fps_from": "option" if options.fps else "default"}
    cfg = (src / "preprocessing_config.yaml") if src.is_dir() else None
    if cfg is not None and cfg.exists():
        import yaml

        attrs["preprocessing_config"] = yaml.safe_load(cfg.read_text())
    task = options.task or (src.name if src.is_dir() else src.stem)
    semantics = {
        "image_valid": "true where the frame is a real image of the source sample; false = copy of the nearest one",
        "past_mask": "source window mask: valid past steps",
        "future_mask": "source window mask: anchor and valid future steps",
    }
    for name in fields:
        if name.endswith("rot_6d") or name.endswith("rot_6d_relative"):
            semantics[name] = "rotation: first two rows of R, row-major (reference convention)"
    units = [(str(s), task, options.instruction, image_offsets) for s in shards]
    return Plan(options.fps or DEFAULT_FPS, fields, dtypes, cameras, units, semantics, attrs, unit_label="shards")


def sample_to_episode(sample: dict[str, Any], task: str, default_instruction: str | None, where: str, source: str) -> Episode:
    """Turn one parsed windowed sample into a short episode (see the module docstring)."""
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
        have = np.array(sorted(steps))
        nearest = have[np.argmin(np.abs(np.arange(length)[:, None] - have[None, :]), axis=1)]
        arrays[f"camera/{cam}"] = np.stack([steps[int(s)] for s in nearest])
        valid[have] = True
    arrays["image_valid"] = valid
    instr_dict = sample["instructions"]
    instructions = [s for t in INSTRUCTION_TYPES for s in instr_dict.get(t, [])]
    extra: dict[str, Any] = {"wds_metadata": meta, "language_instructions": instr_dict}
    if "language_instruction" in lowdim:
        extra["lowdim_language_instruction"] = [str(s) for s in lowdim["language_instruction"].tolist()]
        if not instructions:
            instructions = list(dict.fromkeys(extra["lowdim_language_instruction"]))
    if not instructions:
        instructions = [default_instruction or ""]
    return Episode(arrays, task=task, instruction=instructions, source=source, extra=extra)


def _check_images(sample: dict[str, Any], expected: dict[str, list[int]], where: str) -> None:
    """Every sample must carry the images the first one has (camera x offset): a missing one is reported."""
    for cam, offsets in expected.items():
        have = sample["images"].get(cam, {})
        missing = [off for off in offsets if off not in have]
        if missing:
            names = ", ".join(f"{cam}_t{off}.jpg" for off in missing)
            raise DataError(f"{where}: missing image member(s) {names} (the data set's samples have them); the shard is incomplete")


def load(unit: tuple[str, str, str | None, dict[str, list[int]]]) -> list[Episode]:
    shard_name, task, instruction, image_offsets = unit
    shard = Path(shard_name)
    samples = _read_samples(shard)
    parsed = [(key, _parse(key, members, shard)) for key, members in samples.items()]
    for key, p in parsed:
        _check_images(p, image_offsets, f"{shard}: sample {key}")
    parsed.sort(key=lambda kv: (str(kv[1]["meta"].get("episode_id", "")), int(kv[1]["meta"].get("anchor_timestep", 0)), kv[0]))
    return [sample_to_episode(p, task, instruction, f"{shard}: sample {key}", f"wds:{shard.parent.name}") for key, p in parsed]
