"""LBM Eval's messages <-> Foundry observations and actions, driven by what the policy was trained on.

A :class:`LbmLayout` says how a policy's vectors map to LBM's named robots, grippers and cameras:

* proprio/action *fields* named as in LBM's data (``robot__actual__poses__left::panda__xyz`` (3),
  ``..__rot_6d`` (6, the first two rows of R), ``robot__actual__grippers__left::panda_hand`` (1),
  ``robot__actual__joint_position__left::panda`` (n), ``robot__desired__...``) are read from / written
  to the robot of that name; any other field is *flat*: 10 values per arm, arms in ``arms`` order (by
  default right before left, as LBM's tools flatten; ``arms:`` in the camera map overrides it), either
  ``per_arm`` (xyz, first two rows of R, opening: Foundry's own ``proprio`` / ``action``) or
  ``poses_then_grippers`` (every arm's xyz + rot6d, then every opening: LBM's 20-D spartan action),
  chosen by ``flat_layout`` in the camera map or else from the field's semantics in the export (a
  description listing two poses before the grippers, as the spartan converter writes);
* cameras arrive by serial: a camera map (``--camera-map`` YAML, or the one recorded in the export)
  renames them to the policy's camera names; without a map, a serial must *be* a camera name;
* RGB frames of another size are resized to the policy's (center crop to its aspect, then bilinear).

Decoding validates every field and raises :class:`~foundry_eval.serving.codec.RequestError` naming it
(``observation.robot.actual.pose_status['left::panda'].pose.rotation``), which the server answers
``INVALID_ARGUMENT``. Tested by ``tests/test_eval_serving_lbm.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from foundry_core.errors import ConfigError
from foundry_eval.serving import lbm_policy_pb2 as lbm
from foundry_eval.serving.codec import (
    ARM_DIM,
    RESIZE_METHODS,
    RequestError,
    resize_frame,
    rot6d_to_matrix,
)
from foundry_eval.serving.lbm_camera_map import CameraMap, parse_camera_map

SCHEMA_VERSION = 20241212.0
RIGHT_ARM, LEFT_ARM = "right::panda", "left::panda"
#: the arm order of flat vectors unless a camera map says otherwise (LBM's tools flatten right before left)
LBM_ARMS = (RIGHT_ARM, LEFT_ARM)
GRIPPER_SUFFIX = "_hand"  # "left::panda" -> "left::panda_hand"
_POSE_FIELD = re.compile(r"^robot__(actual|desired)__poses__(.+)__(xyz|rot_6d)$")
_GRIPPER_FIELD = re.compile(r"^robot__(actual|desired)__grippers__(.+)$")
_JOINT_KINDS = (
    "joint_position",
    "joint_velocity",
    "joint_torque",
    "joint_torque_external",
    "external_wrench",
    "wrench",
)
_JOINT_FIELD = re.compile(rf"^robot__(actual|desired)__({'|'.join(_JOINT_KINDS)})__(.+)$")


def gripper_of(arm: str) -> str:
    return arm + GRIPPER_SUFFIX


def default_arms(n_arms: int) -> list[str]:
    """Robot names of a flat vector with ``n_arms`` arms: LBM's, right first; ``arm_{i}`` beyond two."""
    return list(LBM_ARMS[:n_arms]) if n_arms <= len(LBM_ARMS) else [f"arm_{i}" for i in range(n_arms)]


# ----------------------------------------------------------------------------- layout


@dataclass
class LbmLayout:
    """How one policy's observation/action vectors map onto LBM's robot and camera names."""

    proprio_fields: list[tuple[str, int]]
    action_fields: list[tuple[str, int]]
    cameras: list[str] | None  # the policy's cameras (None: it uses none; images are ignored)
    image_hw: tuple[int, int] | None
    camera_map: CameraMap | None
    arms: list[str]
    is_language_conditioned: bool = False
    resize: str = "center_crop"
    #: used when a Step carries no instruction (``foundry serve --instruction``); "" = none
    default_instruction: str = ""
    flat_layouts: dict[str, str] = field(default_factory=dict)  # flat field -> one of FLAT_LAYOUTS

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, Any],
        camera_map: CameraMap | None = None,
        *,
        arms: Sequence[str] | None = None,
        resize: str = "center_crop",
    ) -> LbmLayout:
        """From a policy's ``metadata()`` (foundry-action's, or any ``interfaces.Policy``'s)."""
        if resize not in RESIZE_METHODS:
            raise ConfigError(f"resize: {resize!r} is not one of {list(RESIZE_METHODS)}")
        dims = {str(k): int(v) for k, v in dict(metadata.get("field_dims") or {}).items()}
        # a policy that declares no sizes gets both of LBM's arms, flat (10 values each)
        proprio_dim = metadata.get("proprio_dim", ARM_DIM * len(arms or default_arms(2)))
        action_dim = metadata.get("action_dim", proprio_dim)
        proprio = [(f, dims[f]) for f in metadata.get("proprio_fields") or []] or (
            [("proprio", int(proprio_dim))] if proprio_dim is not None else []
        )
        action = [(f, dims[f]) for f in metadata.get("action_fields") or []] or (
            [("action", int(action_dim))] if action_dim is not None else []
        )
        flat = [d for name, d in proprio + action if not _is_named(name)]
        n_arms = max([d // ARM_DIM for d in flat] or [2])
        if camera_map is None and metadata.get("camera_id_to_semantic_name"):
            camera_map = parse_camera_map(
                {"cameras": metadata["camera_id_to_semantic_name"]}, "the camera map recorded in the export"
            )
        chosen = list(arms or (camera_map.arms if camera_map and camera_map.arms else default_arms(n_arms)))
        cameras = metadata.get("cameras")
        size = metadata.get("image_size")
        hw = None
        if size is not None:
            hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        semantics = dict(metadata.get("semantics") or {})
        flat_layouts = {
            name: (
                camera_map.flat_layout
                if camera_map and camera_map.flat_layout
                else _guess_layout(semantics.get(name, ""))
            )
            for name, _ in proprio + action
            if not _is_named(name)
        }
        layout = cls(
            proprio_fields=proprio,
            action_fields=action,
            cameras=list(cameras) if cameras else None,
            image_hw=hw,
            camera_map=camera_map,
            arms=chosen,
            is_language_conditioned=bool(metadata.get("is_language_conditioned", False)),
            resize=resize,
            flat_layouts=flat_layouts,
        )
        layout.check()
        return layout

    def check(self) -> None:
        """Fail at start-up (not at the first Step) when the layout cannot work."""
        for name, dims in self.proprio_fields + self.action_fields:
            if not _is_named(name) and dims != ARM_DIM * len(self.arms):
                raise ConfigError(
                    f"policy field {name!r} has {dims} values; a flat field needs {ARM_DIM} per arm for "
                    f"arms {self.arms} (set `arms:` in the camera map)"
                )
        for name, _ in self.action_fields:
            if _is_named(name) and not (
                name.startswith("robot__desired__poses__") or _GRIPPER_FIELD.match(name)
            ):
                raise ConfigError(
                    f"policy action field {name!r}: only desired poses and grippers can be commanded"
                )
        if self.camera_map is not None and self.cameras:
            targets = set(self.camera_map.serials.values())
            missing = [c for c in self.cameras if c not in targets]
            if missing:
                raise ConfigError(
                    f"{self.camera_map.source}: the policy's camera(s) {missing} have no serial in the camera "
                    f"map (it maps to {sorted(targets)})"
                )

    def controlled_arms(self) -> list[str]:
        """Arms the policy commands, in action order."""
        out: list[str] = []
        for name, _ in self.action_fields:
            arms = _field_arms(name, self.arms)
            out += [a for a in arms if a not in out]
        return out

    def describe(self) -> dict[str, str]:
        """For the server's start-up log and GetPolicyMetadata's runtime information."""
        return {
            "lbm_proprio_fields": ", ".join(f"{n}({d})" for n, d in self.proprio_fields),
            "lbm_action_fields": ", ".join(f"{n}({d})" for n, d in self.action_fields),
            "lbm_arms": ", ".join(self.controlled_arms()),
            "lbm_flat_layouts": ", ".join(f"{n}: {v}" for n, v in self.flat_layouts.items()) or "none",
            "lbm_cameras": ", ".join(
                f"{serial}->{name}"
                for serial, name in sorted((self.camera_map.serials if self.camera_map else {}).items())
                if not self.cameras or name in self.cameras
            )
            or ", ".join(self.cameras or [])
            or "none",
            "lbm_image_size": "x".join(map(str, self.image_hw)) if self.image_hw and self.cameras else "any",
        }


_POSES_FIRST = re.compile(r"xyz.*rot.?6d.*xyz.*rot.?6d.*gripper", re.IGNORECASE | re.DOTALL)


def _guess_layout(semantics: str) -> str:
    """``poses_then_grippers`` when a field's description lists two poses before any gripper."""
    head = semantics.split("gripper", 1)[0]
    return "poses_then_grippers" if _POSES_FIRST.search(semantics) and head.count("xyz") >= 2 else "per_arm"


def split_flat(vector: np.ndarray, n_arms: int, layout: str) -> list[np.ndarray]:
    """A flat vector -> per arm [xyz(3), rot6d(6), opening(1)] (see the module docstring)."""
    if layout == "per_arm":
        return [vector[i * ARM_DIM : (i + 1) * ARM_DIM] for i in range(n_arms)]
    poses, grippers = vector[: 9 * n_arms], vector[9 * n_arms :]
    return [np.concatenate([poses[i * 9 : (i + 1) * 9], grippers[i : i + 1]]) for i in range(n_arms)]


def join_flat(per_arm: list[np.ndarray], layout: str) -> np.ndarray:
    """Inverse of :func:`split_flat`."""
    if layout == "per_arm":
        return np.concatenate(per_arm)
    return np.concatenate([a[:9] for a in per_arm] + [a[9:10] for a in per_arm])


def _is_named(name: str) -> bool:
    return bool(_POSE_FIELD.match(name) or _GRIPPER_FIELD.match(name) or _JOINT_FIELD.match(name))


def _field_arms(name: str, arms: list[str]) -> list[str]:
    if m := _POSE_FIELD.match(name):
        return [m.group(2)]
    if m := _GRIPPER_FIELD.match(name):
        return [m.group(2).removesuffix(GRIPPER_SUFFIX)]
    if m := _JOINT_FIELD.match(name):
        return [m.group(3)]
    return list(arms)


# ----------------------------------------------------------------------------- observations


class RobotState:
    """One ``PosesAndGrippers`` indexed by name, validated on access (errors name the field)."""

    def __init__(self, msg: lbm.PosesAndGrippers, where: str) -> None:
        self.where = where
        self.poses: dict[str, lbm.RobotPoseStatus] = {}
        self.grippers: dict[str, float] = {}
        self._transforms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, status in enumerate(msg.pose_status):
            if not status.robot_name or status.robot_name in self.poses:
                raise RequestError(
                    f"{where}.pose_status[{i}].robot_name", f"empty or duplicate {status.robot_name!r}"
                )
            self.poses[status.robot_name] = status
            # every pose is checked, used or not: a NaN anywhere means the simulator state is broken
            pose_where = f"{where}.pose_status[{status.robot_name!r}].pose"
            self._transforms[status.robot_name] = decode_transform(status.pose, pose_where)
        for i, grip in enumerate(msg.gripper_status):
            if not grip.gripper_name or grip.gripper_name in self.grippers:
                raise RequestError(
                    f"{where}.gripper_status[{i}].gripper_name", f"empty or duplicate {grip.gripper_name!r}"
                )
            if not np.isfinite(grip.gripper_position):
                raise RequestError(
                    f"{where}.gripper_status[{grip.gripper_name!r}].gripper_position", "is not finite"
                )
            self.grippers[grip.gripper_name] = float(grip.gripper_position)

    def arm(self, name: str) -> lbm.RobotPoseStatus:
        if name not in self.poses:
            raise RequestError(
                f"{self.where}.pose_status", f"no robot named {name!r} (given: {sorted(self.poses)})"
            )
        return self.poses[name]

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self.arm(name)
        return self._transforms[name]

    def gripper(self, name: str) -> float:
        if name not in self.grippers:
            raise RequestError(
                f"{self.where}.gripper_status", f"no gripper named {name!r} (given: {sorted(self.grippers)})"
            )
        return self.grippers[name]

    def series(self, arm: str, kind: str, dims: int) -> np.ndarray:
        values = np.asarray(getattr(self.arm(arm), kind), dtype=np.float64)
        where = f"{self.where}.pose_status[{arm!r}].{kind}"
        if values.shape != (dims,):
            raise RequestError(
                where, f"expected {dims} values (the policy was trained on them), got {values.size}"
            )
        if not np.isfinite(values).all():
            raise RequestError(where, "contains non-finite values (NaN/inf)")
        return values

    def flat(self, arms: list[str], layout: str = "per_arm") -> np.ndarray:
        parts = []
        for arm in arms:
            xyz, rot = self.pose(arm)
            parts.append(np.concatenate([xyz, rot[0], rot[1], [self.gripper(gripper_of(arm))]]))
        return join_flat(parts, layout)


def decode_transform(msg: lbm.RigidTransform, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``RigidTransform`` -> (xyz float64 [3], R float64 [3, 3]); errors name ``where``."""
    if len(msg.translation) != 3:
        raise RequestError(f"{where}.translation", f"expected 3 values, got {len(msg.translation)}")
    if len(msg.rotation) != 9:
        raise RequestError(f"{where}.rotation", f"expected 9 values (row-major 3x3), got {len(msg.rotation)}")
    xyz = np.asarray(msg.translation, dtype=np.float64)
    rot = np.asarray(msg.rotation, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(xyz).all():
        raise RequestError(f"{where}.translation", "contains non-finite values (NaN/inf)")
    if not np.isfinite(rot).all():
        raise RequestError(f"{where}.rotation", "contains non-finite values (NaN/inf)")
    return xyz, rot


def _read_field(name: str, dims: int, robots: dict[str, RobotState], layout: LbmLayout) -> np.ndarray:
    if m := _POSE_FIELD.match(name):
        xyz, rot = robots[m.group(1)].pose(m.group(2))
        return xyz if m.group(3) == "xyz" else np.concatenate([rot[0], rot[1]])
    if m := _GRIPPER_FIELD.match(name):
        return np.array([robots[m.group(1)].gripper(m.group(2))])
    if m := _JOINT_FIELD.match(name):
        return robots[m.group(1)].series(m.group(3), m.group(2), dims)
    return robots["actual"].flat(layout.arms, layout.flat_layouts.get(name, "per_arm"))


def decode_rgb(msg: lbm.CameraImage, where: str) -> np.ndarray:
    """An RGB ``CameraImage`` -> uint8 [H, W, 3] (raw, or JPG/PNG decoded); errors name ``where``."""
    image = msg.image
    if image.dtype != lbm.DTYPE_UINT8:
        raise RequestError(
            f"{where}.image.dtype", f"expected DTYPE_UINT8 for RGB, got {lbm.ImageDtype.Name(image.dtype)}"
        )
    if image.height <= 0 or image.width <= 0:
        raise RequestError(f"{where}.image", f"empty image ({image.height}x{image.width})")
    if image.channels != 3:
        raise RequestError(f"{where}.image.channels", f"expected 3 (RGB), got {image.channels}")
    if image.compression != lbm.NONE:
        return _decode_compressed(image, where)
    expected = image.height * image.width * 3
    if len(image.data) != expected:
        raise RequestError(
            f"{where}.image.data",
            f"{len(image.data)} bytes do not match {image.height}x{image.width}x3 uint8 ({expected} bytes)",
        )
    return np.frombuffer(image.data, dtype=np.uint8).reshape(image.height, image.width, 3)


def _decode_compressed(image: lbm.Image, where: str) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image.data)) as img:
            out = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(
            f"{where}.image.data", f"cannot decode the {lbm.ImageCompression.Name(image.compression)}: {exc}"
        ) from None
    if out.shape[:2] != (image.height, image.width):
        raise RequestError(
            f"{where}.image",
            f"decoded {out.shape[0]}x{out.shape[1]}, header says {image.height}x{image.width}",
        )
    return out


def decode_observation(msg: lbm.MultiarmObservation, layout: LbmLayout) -> dict[str, Any]:
    """``MultiarmObservation`` -> Foundry observation ``{"images", "proprio", "instruction"}``."""
    if not msg.HasField("robot"):
        raise RequestError("observation.robot", "missing")
    robots = {
        "actual": RobotState(msg.robot.actual, "observation.robot.actual"),
        "desired": RobotState(msg.robot.desired, "observation.robot.desired"),
    }
    parts = [_read_field(name, dims, robots, layout) for name, dims in layout.proprio_fields]
    proprio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    images = _decode_cameras(msg.visuo, layout) if layout.cameras else {}
    instruction = msg.language_instruction if msg.use_language_instruction else ""
    instruction = instruction if instruction.strip() else layout.default_instruction
    if layout.is_language_conditioned and not instruction.strip():
        raise RequestError(
            "observation.language_instruction",
            "the policy is language-conditioned: set use_language_instruction and a non-empty instruction "
            "(or start the server with --instruction TEXT)",
        )
    return {"images": images, "proprio": proprio, "instruction": instruction}


def _decode_cameras(visuo: Sequence[lbm.CameraImageSet], layout: LbmLayout) -> dict[str, np.ndarray]:
    assert layout.cameras is not None
    serials = layout.camera_map.serials if layout.camera_map is not None else None
    images: dict[str, np.ndarray] = {}
    for i, cam in enumerate(visuo):
        where = f"observation.visuo[{i}]"
        if not cam.camera_serial:
            raise RequestError(f"{where}.camera_serial", "must not be empty")
        if serials is None:
            if cam.camera_serial not in layout.cameras:
                raise RequestError(
                    f"{where}.camera_serial",
                    f"unknown camera {cam.camera_serial!r}: the policy's cameras are {layout.cameras} and no camera "
                    "map renames serials (give `foundry serve --camera-map MAP.yaml`)",
                )
            name = cam.camera_serial
        else:
            name = serials.get(cam.camera_serial, "")
            if name not in layout.cameras:
                continue  # the map names the station's cameras; the policy uses some of them
        where = f"observation.visuo[{cam.camera_serial!r}]"
        if name in images:
            raise RequestError(f"{where}.camera_serial", f"a second image for camera {name!r}")
        if not (cam.has_rgb and cam.HasField("camera_rgb")):
            raise RequestError(f"{where}.camera_rgb", f"missing (camera {name!r} needs RGB)")
        frame = decode_rgb(cam.camera_rgb, f"{where}.camera_rgb")
        images[name] = (
            resize_frame(frame, layout.image_hw, layout.resize) if layout.image_hw else frame.copy()
        )
    missing = [c for c in layout.cameras if c not in images]
    if missing:
        mapped = {n: s for s, n in serials.items()} if serials else {}
        hint = ", ".join(f"{c} (serial {mapped[c]!r})" if c in mapped else c for c in missing)
        raise RequestError("observation.visuo", f"missing camera(s) {hint}")
    return images


# ----------------------------------------------------------------------------- actions


def encode_action(
    action: np.ndarray, layout: LbmLayout, hold: lbm.PosesAndGrippers | None = None
) -> lbm.PosesAndGrippers:
    """Absolute action float [A] -> ``PosesAndGrippers`` (an absolute pose + opening per arm).

    Arms in ``hold`` (the observation's desired state) that the policy does not command keep their
    desired pose and opening, so the response names every arm of the station.
    """
    from foundry_eval.serving.codec import PolicyOutputError

    action = np.asarray(action, dtype=np.float64)
    total = sum(d for _, d in layout.action_fields)
    if action.shape != (total,):
        raise PolicyOutputError(
            f"action has shape {list(action.shape)}; the policy's action fields add up to {total}"
        )
    if not np.isfinite(action).all():
        raise PolicyOutputError(f"action contains non-finite values (NaN/inf): {action.tolist()}")
    xyz: dict[str, np.ndarray] = {}
    rot: dict[str, np.ndarray] = {}
    grip: dict[str, float] = {}
    col = 0
    for name, dims in layout.action_fields:
        part = action[col : col + dims]
        col += dims
        if m := _POSE_FIELD.match(name):
            if m.group(3) == "xyz":
                xyz[m.group(2)] = part
            else:
                rot[m.group(2)] = rot6d_to_matrix(part)
        elif m := _GRIPPER_FIELD.match(name):
            grip[m.group(2).removesuffix(GRIPPER_SUFFIX)] = float(part[0])
        else:
            blocks = split_flat(part, len(layout.arms), layout.flat_layouts.get(name, "per_arm"))
            for arm, block in zip(layout.arms, blocks):
                xyz[arm], rot[arm], grip[arm] = block[:3], rot6d_to_matrix(block[3:9]), float(block[9])
    out = lbm.PosesAndGrippers()
    held = RobotState(hold, "observation.robot.desired") if hold is not None else None
    arms = layout.controlled_arms() + [
        a for a in (held.poses if held else {}) if a not in layout.controlled_arms()
    ]
    for arm in arms:
        if arm in xyz and arm in rot:
            t, r = xyz[arm], rot[arm]
        elif held is not None and arm in held.poses:
            t, r = held.pose(arm)
        else:
            raise PolicyOutputError(
                f"the policy commands only part of {arm!r}'s pose and the observation has no desired pose"
            )
        status = out.pose_status.add(robot_name=arm)
        status.pose.translation.extend(np.asarray(t, dtype=np.float64).tolist())
        status.pose.rotation.extend(np.asarray(r, dtype=np.float64).reshape(-1).tolist())
        if arm in grip:
            out.gripper_status.add(gripper_name=gripper_of(arm), gripper_position=grip[arm])
        elif held is not None and gripper_of(arm) in held.grippers:
            out.gripper_status.add(
                gripper_name=gripper_of(arm), gripper_position=held.grippers[gripper_of(arm)]
            )
    return out
