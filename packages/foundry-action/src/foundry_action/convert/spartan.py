"""LBM public sim training data ("diffusion spartan" episode folders) -> episode store (LBM_EVAL.md).

An episode is ``.../tasks/<Skill>/<station>/sim/bc/teleop/<date>/diffusion_spartan/episode_<n>/processed/``
holding ``actions.npz``, ``observations.npz``, ``intrinsics.npz``, ``extrinsics.npz``, ``metadata.yaml``
and ``summary.npz``. ``src`` may be one such folder (``processed/`` or its ``episode_<n>`` parent) or
any tree of them; episodes are converted in sorted path order. What becomes what:

* ``actions.npz`` ``actions`` [T, 20] -> field ``action`` (LBM order: right xyz, right rot6d, left xyz,
  left rot6d, right gripper, left gripper; rot6d as in the source). ``skill_type`` is a pickled object
  array and is never read: every npz is opened with ``allow_pickle=False`` and only the keys we need are
  touched. The skill (the episode's ``task``) comes from the ``tasks/<Skill>/`` path component.
* ``observations.npz`` ``robot__actual__*`` / ``robot__desired__*`` traces -> fields of the same name and
  shape (poses xyz/rot6d, grippers, joint states, wrenches: whatever the first episode has; every
  episode must have the same set). RGB ``<camera id>`` [T, H, W, 3] -> camera named by
  ``metadata.yaml`` ``camera_id_to_semantic_name`` (an unmapped id keeps its id as name); depth and
  label images are not converted. ``--cameras`` picks cameras by semantic name (default: all RGB).
* ``extrinsics.npz`` [T, 4, 4] camera-to-world -> field ``extrinsics__<camera>``; ``intrinsics.npz``
  3x3 -> episode metadata ``intrinsics``.
* ``summary.npz`` ``episode_success`` -> the episode's ``success``.
* instruction: ``--instruction`` or the skill name in words (``PutMugOnSaucer`` -> ``put mug on
  saucer``): the documented layout carries no language annotation.

A corrupt episode (missing file or npz key, lengths that disagree, NaN/inf, an object array where
numbers are expected, a camera of another size) fails with the episode path and the key.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from foundry_action.convert import ConvertOptions, Episode, Plan
from foundry_core.errors import DataError

OPTIONS = ("cameras",)  # ConvertOptions this converter reads beyond fps/task/instruction
FPS = 10.0  # LBM_EVAL.md: frames are at 10 Hz
ACTION_DIM = 20
ACTION_SEMANTICS = (
    "LBM absolute action: right xyz(3) [m], right rot6d(6), left xyz(3) [m], left rot6d(6), right gripper, "
    "left gripper opening [m] (rot6d as in the source data)"
)
REQUIRED_FILES = (
    "actions.npz",
    "observations.npz",
    "intrinsics.npz",
    "extrinsics.npz",
    "metadata.yaml",
    "summary.npz",
)
ROBOT_PREFIXES = ("robot__actual__", "robot__desired__")


# ----------------------------------------------------------------------------------------------- finding episodes


def _is_episode(path: Path) -> bool:
    return path.is_dir() and (path / "actions.npz").is_file() and (path / "observations.npz").is_file()


def episode_dirs(src: Path) -> list[Path]:
    """Every ``processed`` episode folder at or under ``src`` (sorted)."""
    if not src.is_dir():
        return []
    if _is_episode(src):
        return [src]
    if _is_episode(src / "processed"):
        return [src / "processed"]
    found = {
        p.parent for p in src.rglob("actions.npz") if p.parent.name == "processed" and _is_episode(p.parent)
    }
    return sorted(found)


def detect(src: Path) -> bool:
    """A spartan episode folder or a tree that contains ``diffusion_spartan/episode_*/processed``."""
    if _is_episode(src) or _is_episode(src / "processed"):
        return True
    if not src.is_dir():
        return False
    return any(True for _ in src.glob("**/diffusion_spartan/episode_*/processed/actions.npz"))


def skill_of(episode: Path) -> tuple[str, str]:
    """(skill, station) from ``.../tasks/<Skill>/<station>/...``; ("", "") when the path has no ``tasks/``."""
    parts = episode.resolve().parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "tasks" and i + 2 < len(parts):
            return parts[i + 1], parts[i + 2]
    return "", ""


def skill_words(skill: str) -> str:
    """``PutMugOnSaucer`` -> ``put mug on saucer``."""
    return " ".join(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", skill))


# ----------------------------------------------------------------------------------------------- reading npz


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Key -> (shape, dtype) of every array in ``path`` from the .npy headers only (nothing is loaded,
    nothing unpickled)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _fortran, dtype = read(f)
                out[name[: -len(".npy")]] = (tuple(int(d) for d in shape), np.dtype(dtype))
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{path}: not a readable npz archive: {exc}") from exc
    return out


def _read(npz: Any, key: str, path: Path) -> np.ndarray:
    if key not in npz.files:
        raise DataError(f"{path}: missing key {key!r} (has {', '.join(sorted(npz.files)[:12])})")
    try:
        return np.asarray(npz[key])
    except ValueError as exc:  # an object (pickled) array: allow_pickle=False refuses it
        raise DataError(f"{path}: key {key!r} is not a plain numeric array: {exc}") from exc


def _load_npz(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read npz: {exc}") from exc


def _read_metadata(episode: Path) -> dict[str, Any]:
    import yaml

    path = episode / "metadata.yaml"
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a mapping")
    names = doc.get("camera_id_to_semantic_name")
    if not isinstance(names, dict) or not names:
        raise DataError(
            f"{path}: missing key 'camera_id_to_semantic_name' (a mapping of camera ids to names)"
        )
    return doc


def camera_names(episode: Path, rgb_ids: list[str]) -> dict[str, str]:
    """Semantic name -> camera id for the RGB cameras of ``episode``."""
    mapping = {str(k): str(v) for k, v in _read_metadata(episode)["camera_id_to_semantic_name"].items()}
    out: dict[str, str] = {}
    for cam_id in rgb_ids:
        name = mapping.get(cam_id, cam_id)
        if name in out:
            raise DataError(
                f"{episode / 'metadata.yaml'}: cameras {out[name]} and {cam_id} share the name {name!r}"
            )
        out[name] = cam_id
    return out


def _rgb_ids(headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> list[str]:
    return sorted(
        k
        for k, (shape, dtype) in headers.items()
        if not k.startswith("robot__") and dtype == np.uint8 and len(shape) == 4 and shape[-1] == 3
    )


# ----------------------------------------------------------------------------------------------- plan / load


def plan(src: Path, options: ConvertOptions) -> Plan:
    episodes = episode_dirs(src)
    if not episodes:
        raise DataError(f"{src}: no diffusion spartan episodes (…/episode_<n>/processed/actions.npz)")
    first = episodes[0]
    for name in REQUIRED_FILES:
        if not (first / name).is_file():
            raise DataError(f"{first}: missing {name}")
    obs = npz_headers(first / "observations.npz")
    names = camera_names(first, _rgb_ids(obs))
    if options.cameras:
        unknown = [c for c in options.cameras if c not in names]
        if unknown:
            raise DataError(
                f"{first}: no camera named {', '.join(unknown)} (metadata.yaml names: {', '.join(names)})"
            )
        names = {c: names[c] for c in options.cameras}
    if not names:
        raise DataError(f"{first / 'observations.npz'}: no RGB camera arrays [T, H, W, 3] uint8")
    fields: dict[str, tuple[int, ...]] = {"action": (ACTION_DIM,)}
    dtypes = {"action": "float32"}
    semantics = {"action": ACTION_SEMANTICS}
    for key, (shape, dtype) in sorted(obs.items()):
        if key.startswith(ROBOT_PREFIXES):
            if dtype.kind not in "fiu" or len(shape) < 1:
                raise DataError(
                    f"{first / 'observations.npz'}: key {key!r} is not a numeric per-step array ({dtype})"
                )
            fields[key], dtypes[key] = shape[1:], "float32"
    if len(fields) == 1:
        raise DataError(f"{first / 'observations.npz'}: no robot__actual__*/robot__desired__* traces")
    for name in names:
        fields[f"extrinsics__{name}"], dtypes[f"extrinsics__{name}"] = (4, 4), "float32"
        semantics[f"extrinsics__{name}"] = f"camera {name}: 4x4 camera-to-world transform"
    cameras = {name: tuple(obs[cam_id][0][1:3]) for name, cam_id in names.items()}
    for name, cam_id in names.items():
        semantics[name] = f"LBM camera {cam_id}"
    units = [
        {
            "episode": str(e),
            "cameras": names,
            "fields": sorted(k for k in fields if k.startswith(ROBOT_PREFIXES)),
            "task": options.task,
            "instruction": options.instruction,
        }
        for e in episodes
    ]
    attrs = {"spartan_cameras": names, "spartan_episodes": len(episodes)}
    return Plan(float(options.fps or FPS), fields, dtypes, cameras, units, semantics, attrs)  # type: ignore[arg-type]


def _check_steps(
    value: np.ndarray, key: str, path: Path, length: int, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    if value.ndim == 0 or value.shape[0] != length:
        got = value.shape[0] if value.ndim else "no"
        raise DataError(f"{path}: key {key!r} has {got} steps, actions.npz 'actions' has {length}")
    if shape is not None and tuple(value.shape[1:]) != shape:
        raise DataError(
            f"{path}: key {key!r} has shape {value.shape}, expected (T, {', '.join(map(str, shape))})"
        )
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value.reshape(length, -1)))[0]
        raise DataError(f"{path}: key {key!r} has NaN/inf at step {bad[0]} channel {bad[1]}")
    if value.dtype.kind not in "fiub":
        raise DataError(f"{path}: key {key!r} has dtype {value.dtype}, expected numbers")
    return value


def load(unit: dict[str, Any]) -> list[Episode]:
    episode = Path(unit["episode"])
    for name in REQUIRED_FILES:
        if not (episode / name).is_file():
            raise DataError(f"{episode}: missing {name}")
    with _load_npz(episode / "actions.npz") as npz:  # only 'actions': 'skill_type' is pickled, never touched
        actions = _read(npz, "actions", episode / "actions.npz")
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
        raise DataError(
            f"{episode / 'actions.npz'}: key 'actions' has shape {actions.shape}, expected (T, {ACTION_DIM})"
        )
    length = len(actions)
    if length == 0:
        raise DataError(f"{episode / 'actions.npz'}: key 'actions' has no steps")
    arrays: dict[str, Any] = {"action": _check_steps(actions, "actions", episode / "actions.npz", length)}
    obs_path = episode / "observations.npz"
    names: dict[str, str] = unit["cameras"]
    here = camera_names(episode, _rgb_ids(npz_headers(obs_path)))
    for name, cam_id in names.items():
        if here.get(name) != cam_id:
            raise DataError(
                f"{episode / 'metadata.yaml'}: camera {name!r} is {here.get(name)!r} here, "
                f"{cam_id!r} in the first episode"
            )
    with _load_npz(obs_path) as npz:
        for key in unit["fields"]:
            arrays[key] = _check_steps(_read(npz, key, obs_path), key, obs_path, length)
        for name, cam_id in names.items():
            arrays[f"camera/{name}"] = _check_steps(_read(npz, cam_id, obs_path), cam_id, obs_path, length)
    intrinsics = {}
    with _load_npz(episode / "intrinsics.npz") as npz:
        for name, cam_id in names.items():
            k = _read(npz, cam_id, episode / "intrinsics.npz")
            if k.shape != (3, 3) or not np.isfinite(k).all():
                raise DataError(
                    f"{episode / 'intrinsics.npz'}: key {cam_id!r} must be a finite 3x3 matrix, got {k.shape}"
                )
            intrinsics[name] = k.astype(float).tolist()
    with _load_npz(episode / "extrinsics.npz") as npz:
        for name, cam_id in names.items():
            arrays[f"extrinsics__{name}"] = _check_steps(
                _read(npz, cam_id, episode / "extrinsics.npz"),
                cam_id,
                episode / "extrinsics.npz",
                length,
                (4, 4),
            )
    with _load_npz(episode / "summary.npz") as npz:
        flag = _read(npz, "episode_success", episode / "summary.npz")
    if flag.size != 1 or flag.dtype.kind not in "bi":
        raise DataError(
            f"{episode / 'summary.npz'}: key 'episode_success' must be one bool, got {flag.dtype} {flag.shape}"
        )
    skill, station = skill_of(episode)
    task = unit["task"] or skill
    if not task:
        raise DataError(
            f"{episode}: cannot tell the skill from the path (no tasks/<Skill>/ component); pass --task"
        )
    instruction = unit["instruction"] or skill_words(task)
    extra = {
        "spartan_episode": str(episode),
        "skill": skill,
        "station": station,
        "camera_ids": names,
        "intrinsics": intrinsics,
    }
    return [
        Episode(
            arrays,
            task=task,
            instruction=instruction,
            success=bool(flag.reshape(-1)[0]),
            source=f"lbm_spartan:{skill or task}",
            extra=extra,
        )
    ]
