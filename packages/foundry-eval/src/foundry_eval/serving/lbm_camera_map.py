"""The camera map of ``foundry serve --protocol lbm``: camera serial (as LBM Eval sends it) -> the policy's
camera name, and optionally the arm order of flat vectors. Parsing does no I/O (``load_camera_map`` reads).
Format: ``docs/lbm_eval.md``. Tested by ``tests/test_eval_serving_lbm.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry_core.errors import ConfigError, did_you_mean

CAMERA_MAP_KEYS = ("cameras", "camera_id_to_semantic_name", "arms", "flat_layout")
#: how a flat vector orders its arms' values: Foundry's ``per_arm`` (xyz, rot6d, gripper per arm) or
#: LBM's ``poses_then_grippers`` (xyz, rot6d of every arm, then every gripper: the 20-D spartan action)
FLAT_LAYOUTS = ("per_arm", "poses_then_grippers")
EXAMPLE_ARMS = "[right::panda, left::panda]"


@dataclass
class CameraMap:
    """Camera serial -> policy camera name, plus the arm order and layout of flat vectors (optional)."""

    serials: dict[str, str] = field(default_factory=dict)
    arms: list[str] | None = None
    source: str = ""
    flat_layout: str | None = None


def parse_camera_map(doc: Any, where: str) -> CameraMap:
    """A camera-map document (already loaded) -> :class:`CameraMap`; no I/O.

    Accepted: ``{cameras: {serial: name}, arms: [...], flat_layout: ...}``, LBM's episode ``metadata.yaml``
    (``camera_id_to_semantic_name``), or a plain ``{serial: name}`` mapping.
    """
    if not isinstance(doc, Mapping) or not doc:
        raise ConfigError(f"{where}: expected a mapping of camera serial -> camera name")
    structured = [k for k in doc if k in CAMERA_MAP_KEYS]
    if structured:
        unknown = [k for k in doc if k not in CAMERA_MAP_KEYS and k != "camera_id_to_semantic_name"]
        # LBM's metadata.yaml carries other keys beside the map; a Foundry map file does not.
        if unknown and "camera_id_to_semantic_name" not in doc:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}{did_you_mean(str(unknown[0]), CAMERA_MAP_KEYS)}"
            )
        serials = doc.get("cameras", doc.get("camera_id_to_semantic_name")) or {}
        arms, flat_layout = doc.get("arms"), doc.get("flat_layout")
    else:
        serials, arms, flat_layout = doc, None, None
    if flat_layout is not None and flat_layout not in FLAT_LAYOUTS:
        raise ConfigError(f"{where}: flat_layout {flat_layout!r} is not one of {list(FLAT_LAYOUTS)}")
    if not isinstance(serials, Mapping):
        raise ConfigError(f"{where}: cameras must map camera serial -> camera name")
    out: dict[str, str] = {}
    for serial, name in serials.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: camera {serial!r} maps to {name!r}; expected a camera name")
        out[str(serial)] = name
    if arms is not None and (not isinstance(arms, list) or not all(isinstance(a, str) and a for a in arms)):
        raise ConfigError(f"{where}: arms must be a list of robot names (e.g. {EXAMPLE_ARMS})")
    return CameraMap(out, list(arms) if arms is not None else None, where, flat_layout)


def load_camera_map(path: str | Path) -> CameraMap:
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the camera map: {exc}") from None
    return parse_camera_map(doc, str(path))
