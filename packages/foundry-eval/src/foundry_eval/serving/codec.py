"""Conversions between Foundry observations/actions (numpy dicts) and the policy-service messages.

Observation: ``{"images": {camera: uint8 [H, W, 3]}, "proprio": float32 [Dp], "instruction": str}``.
Action: float32 [A], A = 10 per arm (xyz, first two rows of the rotation, gripper opening in metres);
on the wire each arm is an absolute pose (translation + row-major rotation matrix) + gripper.

Both the in-process adapter and the gRPC client pass actions through :func:`canonical_action`
(rotation rows orthonormalized), so served and in-process evaluation give identical actions.
Decoding validates every field and raises :class:`RequestError` naming it (the server turns that
into ``INVALID_ARGUMENT``). Tested by ``tests/test_eval_serving.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from foundry_core.errors import FoundryError
from foundry_eval.serving import policy_pb2 as pb

ARM_DIM = 10
#: LBM Eval's robot names; single-arm actions use the first.
ARM_NAMES = ("left::panda", "right::panda")
#: gRPC message cap each way (as LBM Eval).
MAX_MESSAGE_BYTES = 30 * 1024 * 1024
#: Metadata keys carried in their own message fields; every other key goes to ``runtime_info``.
METADATA_FIELDS = ("name", "skill_type", "checkpoint_path", "git_repo", "git_sha", "config_yaml")
_DTYPES = {"uint8": np.uint8, "uint16": np.uint16}
RESIZE_METHODS = ("center_crop", "stretch")


class RequestError(FoundryError):
    """A malformed request; the message starts with the offending field's path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class PolicyOutputError(FoundryError):
    """The policy produced an unusable action (NaN, wrong shape): the episode fails, it did not crash."""


def arm_names(n_arms: int) -> list[str]:
    """Names of ``n_arms`` arms: LBM Eval's names for one or two arms, ``arm_{i}`` beyond."""
    if n_arms <= len(ARM_NAMES):
        return list(ARM_NAMES[:n_arms])
    return [f"arm_{i}" for i in range(n_arms)]


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """First two rows of a rotation -> the nearest proper rotation matrix (Gram-Schmidt), float64 [3, 3]."""
    a = np.asarray(rot6d[:3], dtype=np.float64)
    b = np.asarray(rot6d[3:6], dtype=np.float64)
    na = np.linalg.norm(a)
    if not na > 1e-9:
        raise PolicyOutputError(f"rotation rows {rot6d.tolist()} are degenerate (first row has zero length)")
    r1 = a / na
    b = b - r1 * float(r1 @ b)
    nb = np.linalg.norm(b)
    if not nb > 1e-9:
        raise PolicyOutputError(f"rotation rows {rot6d.tolist()} are degenerate (rows are parallel)")
    r2 = b / nb
    return np.stack([r1, r2, np.cross(r1, r2)])


def action_to_targets(action: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Action float [A] -> per arm ``(name, xyz float64 [3], rotation float64 [3, 3], gripper)``."""
    action = np.asarray(action)
    if action.ndim != 1 or action.shape[0] == 0 or action.shape[0] % ARM_DIM:
        raise PolicyOutputError(
            f"action has shape {list(action.shape)}; expected [A] with A a positive multiple of {ARM_DIM} "
            "(xyz, rot6d, gripper per arm)"
        )
    if not np.all(np.isfinite(action)):
        raise PolicyOutputError(f"action contains non-finite values (NaN/inf): {action.tolist()}")
    targets = []
    for i, name in enumerate(arm_names(action.shape[0] // ARM_DIM)):
        arm = action[i * ARM_DIM : (i + 1) * ARM_DIM]
        targets.append((name, arm[:3].astype(np.float64), rot6d_to_matrix(arm[3:9]), float(arm[9])))
    return targets


def targets_to_action(targets: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Inverse of :func:`action_to_targets`: float32 [10 * arms]."""
    parts = [np.concatenate([xyz, rot[0], rot[1], [grip]]) for _, xyz, rot, grip in targets]
    return np.concatenate(parts).astype(np.float32)


def canonical_action(action: np.ndarray) -> np.ndarray:
    """The action as the simulator receives it (rotation rows orthonormalized), float32 [A]."""
    return targets_to_action(action_to_targets(action))


# ----------------------------------------------------------------------------- observations


def encode_observation(observation: Mapping[str, Any], time_s: float = 0.0) -> pb.Observation:
    """Foundry observation dict -> ``Observation`` message (raw HWC bytes, flat proprio)."""
    msg = pb.Observation(
        language_instruction=str(observation.get("instruction", "")),
        use_language_instruction=bool(observation.get("instruction")),
        time=float(time_s),
    )
    for name, image in observation.get("images", {}).items():
        image = np.ascontiguousarray(image)
        cam = msg.cameras.add(name=str(name))
        _fill_image(cam.rgb, image)
    for name, depth in observation.get("depth", {}).items():
        cam = next((c for c in msg.cameras if c.name == name), None) or msg.cameras.add(name=str(name))
        _fill_image(cam.depth, np.ascontiguousarray(depth))
    proprio = observation.get("proprio")
    if proprio is not None:
        msg.proprio.extend(np.asarray(proprio, dtype=np.float32).reshape(-1).tolist())
    return msg


def _fill_image(out: pb.Image, image: np.ndarray) -> None:
    if image.ndim == 2:
        image = image[..., None]
    out.height, out.width, out.channels = (int(s) for s in image.shape)
    out.dtype = image.dtype.name
    out.data = image.tobytes()


def decode_image(msg: pb.Image, field: str, dtype: str, channels: int | None) -> np.ndarray:
    """Validate and decode one image; errors name ``field``."""
    if msg.dtype != dtype:
        raise RequestError(f"{field}.dtype", f"expected {dtype!r}, got {msg.dtype!r}")
    if msg.height == 0 or msg.width == 0:
        raise RequestError(field, f"empty image ({msg.height}x{msg.width})")
    if channels is not None and msg.channels != channels:
        raise RequestError(f"{field}.channels", f"expected {channels}, got {msg.channels}")
    expected = msg.height * msg.width * msg.channels * np.dtype(_DTYPES[dtype]).itemsize
    if len(msg.data) != expected:
        raise RequestError(
            f"{field}.data",
            f"{len(msg.data)} bytes do not match {msg.height}x{msg.width}x{msg.channels} {dtype} ({expected} bytes)",
        )
    # a writable copy: policies may preprocess in place
    image = np.frombuffer(msg.data, dtype=_DTYPES[dtype]).reshape(msg.height, msg.width, msg.channels).copy()
    return image[..., 0] if channels == 1 else image


def resize_frame(image: np.ndarray, hw: tuple[int, int], method: str = "center_crop") -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3]: ``center_crop`` to the target aspect (as LBM's preprocessing)
    then bilinear (antialiased); ``stretch`` resizes directly."""
    if image.shape[:2] == hw:
        return image
    import torch
    import torch.nn.functional as F

    if method == "center_crop":
        h, w = image.shape[:2]
        scale = min(h / hw[0], w / hw[1])
        ch, cw = round(hw[0] * scale), round(hw[1] * scale)
        top, left = (h - ch) // 2, (w - cw) // 2
        image = image[top : top + ch, left : left + cw]
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    out = F.interpolate(chw, size=hw, mode="bilinear", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).contiguous().numpy()


def decode_observation(
    msg: pb.Observation,
    *,
    cameras: Sequence[str] | None = None,
    proprio_dim: int | None = None,
    allow_extra_cameras: bool = False,
) -> dict[str, Any]:
    """``Observation`` message -> Foundry observation dict, validating every field.

    Args:
        cameras: the cameras the policy expects (all required); None accepts any.
        proprio_dim: the expected proprio length; None accepts any.
        allow_extra_cameras: drop cameras outside ``cameras`` instead of rejecting them (a simulator
            that renders more views than the policy uses, like LBM Eval's six).
    """
    images: dict[str, np.ndarray] = {}
    depth: dict[str, np.ndarray] = {}
    for i, cam in enumerate(msg.cameras):
        field = f"observation.cameras[{i}]"
        if not cam.name:
            raise RequestError(f"{field}.name", "must not be empty")
        if cam.name in images:
            raise RequestError(f"{field}.name", f"duplicate camera {cam.name!r}")
        if cameras is not None and cam.name not in cameras:
            if allow_extra_cameras:
                continue
            raise RequestError(
                f"{field}.name", f"unknown camera {cam.name!r}; expected one of {list(cameras)}"
            )
        field = f"observation.cameras[{cam.name!r}]"
        if not cam.HasField("rgb"):
            raise RequestError(f"{field}.rgb", "missing")
        images[cam.name] = decode_image(cam.rgb, f"{field}.rgb", "uint8", 3)
        if cam.HasField("depth"):
            depth[cam.name] = decode_image(cam.depth, f"{field}.depth", "uint16", 1)
        if len(cam.intrinsics) not in (0, 9):
            raise RequestError(f"{field}.intrinsics", f"expected 9 values, got {len(cam.intrinsics)}")
    if cameras is not None:
        missing = [c for c in cameras if c not in images]
        if missing:
            raise RequestError("observation.cameras", f"missing camera(s) {missing}")
    if msg.proprio:
        proprio = np.asarray(msg.proprio, dtype=np.float32)
        field = "observation.proprio"
    else:
        proprio = _proprio_from_robot(msg.actual)
        field = "observation.actual"
    if proprio_dim is not None and proprio.shape[0] != proprio_dim:
        raise RequestError(field, f"expected {proprio_dim} proprio values, got {proprio.shape[0]}")
    if not np.all(np.isfinite(proprio)):
        raise RequestError(field, "contains non-finite values (NaN/inf)")
    obs: dict[str, Any] = {"images": images, "proprio": proprio, "instruction": msg.language_instruction}
    if depth:
        obs["depth"] = depth
    return obs


def _proprio_from_robot(state: pb.RobotState) -> np.ndarray:
    """Per arm xyz + first two rotation rows + gripper (grippers matched by order)."""
    if len(state.grippers) not in (0, len(state.arms)):
        raise RequestError(
            "observation.actual.grippers", f"{len(state.grippers)} grippers for {len(state.arms)} arms"
        )
    parts = []
    for i, arm in enumerate(state.arms):
        field = f"observation.actual.arms[{i}].pose"
        pose = decode_pose(arm.pose, field)
        grip = state.grippers[i].position if state.grippers else 0.0
        parts.append(np.concatenate([pose[0], pose[1][0], pose[1][1], [grip]]))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def decode_pose(msg: pb.Pose, field: str) -> tuple[np.ndarray, np.ndarray]:
    """``Pose`` -> (translation float64 [3], rotation float64 [3, 3]); errors name ``field``."""
    if len(msg.translation) != 3:
        raise RequestError(f"{field}.translation", f"expected 3 values, got {len(msg.translation)}")
    if len(msg.rotation) != 9:
        raise RequestError(f"{field}.rotation", f"expected 9 values, got {len(msg.rotation)}")
    xyz = np.asarray(msg.translation, dtype=np.float64)
    rot = np.asarray(msg.rotation, dtype=np.float64).reshape(3, 3)
    if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(rot))):
        raise RequestError(field, "contains non-finite values (NaN/inf)")
    return xyz, rot


# ----------------------------------------------------------------------------- actions


def encode_action(action: np.ndarray) -> pb.Action:
    """Action float [A] -> ``Action`` (one ``ArmTarget`` per arm). Raises PolicyOutputError."""
    msg = pb.Action()
    for name, xyz, rot, grip in action_to_targets(action):
        arm = msg.arms.add(name=name, gripper=grip)
        arm.pose.translation.extend(xyz.tolist())
        arm.pose.rotation.extend(rot.reshape(-1).tolist())
    return msg


def decode_action(msg: pb.Action) -> np.ndarray:
    """``Action`` -> float32 [10 * arms] in message order."""
    if not msg.arms:
        raise RequestError("action.arms", "no arm targets in the response")
    targets = []
    for i, arm in enumerate(msg.arms):
        xyz, rot = decode_pose(arm.pose, f"action.arms[{i}].pose")
        targets.append((arm.name, xyz, rot, arm.gripper))
    return targets_to_action(targets)


# ----------------------------------------------------------------------------- metadata


def normalize_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A policy's ``metadata()`` in the form both clients return: the named message fields,
    ``is_language_conditioned`` and ``runtime_info`` (every other key, as a string; JSON for containers)."""
    out: dict[str, Any] = {key: str(metadata.get(key) or "") for key in METADATA_FIELDS}
    out["checkpoint_path"] = out["checkpoint_path"] or str(metadata.get("checkpoint") or "")
    out["is_language_conditioned"] = bool(metadata.get("is_language_conditioned", False))
    info = {str(k): v for k, v in dict(metadata.get("runtime_info") or {}).items()}
    for key, value in metadata.items():
        if key not in METADATA_FIELDS and key not in ("is_language_conditioned", "runtime_info"):
            info[str(key)] = value
    out["runtime_info"] = {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in sorted(info.items())
    }
    return out


def encode_metadata(metadata: Mapping[str, Any]) -> pb.MetadataResponse:
    norm = normalize_metadata(metadata)
    return pb.MetadataResponse(
        **{key: norm[key] for key in METADATA_FIELDS},
        is_language_conditioned=norm["is_language_conditioned"],
        runtime_info=norm["runtime_info"],
    )


def decode_metadata(msg: pb.MetadataResponse) -> dict[str, Any]:
    out: dict[str, Any] = {key: getattr(msg, key) for key in METADATA_FIELDS}
    out["is_language_conditioned"] = msg.is_language_conditioned
    out["runtime_info"] = dict(sorted(msg.runtime_info.items()))
    return out


def expected_inputs(metadata: Mapping[str, Any]) -> tuple[list[str] | None, int | None]:
    """The cameras and proprio length a policy declares in its metadata (``cameras``, ``proprio_dim``)."""
    cameras = metadata.get("cameras")
    proprio_dim = metadata.get("proprio_dim")
    return (
        list(cameras) if cameras is not None else None,
        int(proprio_dim) if proprio_dim is not None else None,
    )
