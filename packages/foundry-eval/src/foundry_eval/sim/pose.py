"""Conversions between gripper poses and the 10-D proprio/action vector (xyz, rot6d, opening).

rot6d is the first two ROWS of the rotation matrix R_WG flattened (the LBM Eval convention of
``interfaces.py``); ``vec10_to_pose`` re-orthonormalizes them with Gram-Schmidt so any 6 numbers
that span a plane give a valid rotation. Test: ``pytest packages/foundry-eval/tests/test_eval_sim_pose.py``.
"""

from __future__ import annotations

import numpy as np

ACTION_DIM = 10


def rot6d_from_matrix(R: np.ndarray) -> np.ndarray:
    """First two rows of ``R`` (3x3) flattened to 6 numbers."""
    return np.asarray(R, dtype=np.float64)[:2, :].reshape(6)


def matrix_from_rot6d(r6: np.ndarray) -> np.ndarray:
    """Rotation matrix whose first two rows are the Gram-Schmidt orthonormalized ``r6`` rows."""
    r6 = np.asarray(r6, dtype=np.float64).reshape(2, 3)
    a, b = r6[0], r6[1]
    na = np.linalg.norm(a)
    if not np.isfinite(na) or na < 1e-9:
        raise ValueError(f"rot6d first row {a.tolist()} has (near) zero norm")
    r0 = a / na
    b = b - np.dot(r0, b) * r0
    nb = np.linalg.norm(b)
    if nb < 1e-9:
        raise ValueError(f"rot6d rows {r6.tolist()} are (nearly) parallel")
    r1 = b / nb
    r2 = np.cross(r0, r1)
    return np.stack([r0, r1, r2])


def pose_to_vec10(X_WG: object, opening: float) -> np.ndarray:
    """Pack a pose (pydrake ``RigidTransform`` or 4x4 array) and an opening into float32 [10]."""
    if hasattr(X_WG, "GetAsMatrix4"):
        T = X_WG.GetAsMatrix4()
    else:
        T = np.asarray(X_WG, dtype=np.float64)
    vec = np.concatenate([T[:3, 3], rot6d_from_matrix(T[:3, :3]), [opening]])
    return vec.astype(np.float32)


def vec10_to_pose(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Unpack float [10] into (xyz [3], R [3, 3] orthonormal, opening); bad input -> ValueError."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape ({ACTION_DIM},) (xyz, rot6d, opening), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = [i for i in range(ACTION_DIM) if not np.isfinite(arr[i])]
        raise ValueError(f"action has non-finite entries at indices {bad}: {arr.tolist()}")
    return arr[:3].copy(), matrix_from_rot6d(arr[3:9]), float(arr[9])


def top_down_rotation(yaw: float) -> np.ndarray:
    """R_WG of a gripper pointing straight down (G's z axis = world -z), rotated by ``yaw`` about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    Rx_pi = np.diag([1.0, -1.0, -1.0])
    return Rz @ Rx_pi


def yaw_of(R_WG: np.ndarray) -> float:
    """Yaw of the top-down rotation closest to ``R_WG`` (roll/pitch are projected away)."""
    R = np.asarray(R_WG) @ np.diag([1.0, -1.0, -1.0])  # undo Rx(pi): leaves ~Rz(yaw)
    return float(np.arctan2(R[1, 0] - R[0, 1], R[0, 0] + R[1, 1]))


def wrap_angle(a: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return float((a + np.pi) % (2 * np.pi) - np.pi)
