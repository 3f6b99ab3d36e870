"""Rotation helpers for actions in the Foundry convention (numpy only, no torch).

An arm action is 10 numbers: xyz (3), rot6d (6) = the first two ROWS of the rotation matrix R
(row-major), gripper opening in metres (1); a bimanual action concatenates arms. ``rot6d_to_matrix``
orthonormalises with Gram-Schmidt, so network outputs that are slightly off still give a rotation.
Relative actions (the reference LBM convention) are expressed in the frame of the current pose:
``absolute = pose ∘ relative`` (``R_abs = R_pose @ R_rel``, ``p_abs = p_pose + R_pose @ p_rel``) and
``relative = pose⁻¹ ∘ absolute``; the gripper opening stays absolute.
Test: ``uv run pytest packages/foundry-action/tests/test_action_policy.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ARM_DIM = 10


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """[..., 6] (first two rows of R) -> [..., 3, 3], orthonormalised (Gram-Schmidt on the rows)."""
    rot6d = np.asarray(rot6d, dtype=np.float64)
    a, b = rot6d[..., :3], rot6d[..., 3:6]
    r0 = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b - (r0 * b).sum(-1, keepdims=True) * r0
    r1 = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    r2 = np.cross(r0, r1)
    return np.stack([r0, r1, r2], axis=-2)


def matrix_to_rot6d(matrix: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 6]: the first two rows, row-major."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def split_arms(action: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """[..., 10 * arms] -> per arm (xyz [..., 3], R [..., 3, 3], gripper [...])."""
    action = np.asarray(action)
    if action.shape[-1] % ARM_DIM:
        raise ValueError(f"an action has {ARM_DIM} numbers per arm, got last dim {action.shape[-1]}")
    out = []
    for k in range(action.shape[-1] // ARM_DIM):
        arm = action[..., k * ARM_DIM : (k + 1) * ARM_DIM]
        out.append((arm[..., :3], rot6d_to_matrix(arm[..., 3:9]), arm[..., 9]))
    return out


Move = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _per_arm(actions: np.ndarray, pose: np.ndarray, move: Move) -> np.ndarray:
    """Apply ``move(p, R, p0, R0) -> (p', R')`` arm by arm; the gripper opening passes through unchanged."""
    actions = np.asarray(actions, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape[-1] != actions.shape[-1]:
        raise ValueError(f"pose has {pose.shape[-1]} numbers, actions {actions.shape[-1]}")
    out = []
    for (p, r, g), (p0, r0, _) in zip(split_arms(actions), split_arms(pose)):
        p_new, r_new = move(p, r, p0, r0)
        out.append(np.concatenate([p_new, matrix_to_rot6d(r_new), g[..., None]], axis=-1))
    return np.concatenate(out, axis=-1).astype(np.float32)


def relative_to_absolute(relative: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Compose relative actions [..., 10 * arms] onto the current pose(s) [..., 10 * arms] -> absolute."""
    return _per_arm(relative, pose, lambda p, r, p0, r0: (p0 + np.einsum("...ij,...j->...i", r0, p), r0 @ r))


def absolute_to_relative(absolute: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Express absolute actions [..., 10 * arms] in the frame of pose(s) [..., 10 * arms] (broadcast)."""

    def move(p: np.ndarray, r: np.ndarray, p0: np.ndarray, r0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r0_t = np.swapaxes(r0, -1, -2)
        return np.einsum("...ij,...j->...i", r0_t, p - p0), r0_t @ r

    return _per_arm(absolute, pose, move)
