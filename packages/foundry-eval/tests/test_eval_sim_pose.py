"""Tests of the 10-D pose <-> vector helpers of the Drake tasks."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_eval.sim.pose import (
    matrix_from_rot6d,
    pose_to_vec10,
    top_down_rotation,
    vec10_to_pose,
    wrap_angle,
    yaw_of,
)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_round_trip_and_row_convention():
    rng = np.random.default_rng(0)
    for _ in range(20):
        T = np.eye(4)
        T[:3, :3] = _random_rotation(rng)
        T[:3, 3] = rng.normal(size=3)
        v = pose_to_vec10(T, 0.03)
        assert v.dtype == np.float32 and v.shape == (10,)
        np.testing.assert_allclose(v[3:6], T[0, :3], atol=1e-6)  # first ROW, not column
        np.testing.assert_allclose(v[6:9], T[1, :3], atol=1e-6)
        xyz, R, opening = vec10_to_pose(v)
        np.testing.assert_allclose(R, T[:3, :3], atol=1e-5)
        np.testing.assert_allclose(xyz, T[:3, 3], atol=1e-6)
        assert opening == pytest.approx(0.03)


def test_gram_schmidt_repairs_noisy_rot6d():
    R = matrix_from_rot6d(np.array([2.0, 0.0, 0.0, 0.3, 1.0, 0.0]))
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R[0], [1, 0, 0], atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        matrix_from_rot6d(np.array([1.0, 0, 0, 2.0, 0, 0]))


@pytest.mark.parametrize(
    ("action", "match"),
    [(np.zeros(9), r"shape \(10,\)"), (np.full(10, np.nan), "non-finite"), (np.zeros((2, 10)), "shape")],
)
def test_invalid_actions_raise(action, match):
    with pytest.raises(ValueError, match=match):
        vec10_to_pose(action)


def test_top_down_yaw_round_trip():
    for yaw in np.linspace(-3.1, 3.1, 13):
        R = top_down_rotation(yaw)
        assert R[2, 2] == pytest.approx(-1.0)  # approach axis points down
        assert yaw_of(R) == pytest.approx(yaw, abs=1e-9)
    assert wrap_angle(3 * np.pi / 2) == pytest.approx(-np.pi / 2)
