"""Scripted experts: a task writes a plan as a generator of waypoints; ``WaypointExpert`` follows it.

The generator reads the simulator's true object poses (the expert is privileged) each time it is
resumed, i.e. after the previous waypoint was reached, so plans are closed-loop between waypoints.
Commands move toward a waypoint at a bounded speed, which keeps the demonstrations smooth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from foundry_eval.sim.pose import pose_to_vec10, top_down_rotation, wrap_angle, yaw_of


@dataclass
class Waypoint:
    """A target for the gripper command.

    Attributes:
        xyz: TCP target position.
        yaw: gripper yaw.
        opening: finger opening (m).
        speed: max TCP command speed toward it (m/s).
        hold: control steps to keep commanding it after it is reached (e.g. while fingers close).
        tol: reached when the measured TCP is within ``tol`` m; None = as soon as the command is there.
        patience: control steps to wait for ``tol`` before moving on anyway (contact can block it).
    """

    xyz: np.ndarray
    yaw: float
    opening: float
    speed: float = 0.3
    hold: int = 0
    tol: float | None = 0.01
    patience: int = 15


class WaypointExpert:
    """Follows the waypoints yielded by ``plan()``; after the last one it keeps commanding it."""

    def __init__(self, plan: Callable[[], Iterator[Waypoint]], dt: float, max_yaw_rate: float = 2.0) -> None:
        self._plan = plan()
        self._dt = dt
        self._max_yaw_rate = max_yaw_rate
        self._cmd: np.ndarray | None = None  # xyz, yaw, opening
        self._wp: Waypoint | None = None
        self._held = 0
        self._waited = 0
        self.finished = False

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        proprio = np.asarray(obs["proprio"], dtype=np.float64)
        xyz_now = proprio[:3]
        if self._cmd is None:
            R = np.vstack([proprio[3:6], proprio[6:9], np.cross(proprio[3:6], proprio[6:9])])
            self._cmd = np.array([*xyz_now, yaw_of(R), proprio[9]])
        if self._wp is None or self._reached(xyz_now):
            self._next()
        wp = self._wp
        if wp is not None:
            delta = np.asarray(wp.xyz) - self._cmd[:3]
            dist = float(np.linalg.norm(delta))
            step = wp.speed * self._dt
            self._cmd[:3] += delta if dist <= step else delta * (step / dist)
            dyaw = wrap_angle(wp.yaw - self._cmd[3])
            self._cmd[3] += float(
                np.clip(dyaw, -self._max_yaw_rate * self._dt, self._max_yaw_rate * self._dt)
            )
            self._cmd[4] = wp.opening
        T = np.eye(4)
        T[:3, :3] = top_down_rotation(self._cmd[3])
        T[:3, 3] = self._cmd[:3]
        return pose_to_vec10(T, self._cmd[4])

    def take_over(self, xyz: np.ndarray, yaw: float) -> None:
        """Continue from this commanded pose (xyz, yaw) instead of the expert's own command: after a
        step that someone else drove (a policy, in DAgger relabelling), the next command is the bounded
        step from where the robot is sent now toward the current waypoint."""
        if self._cmd is not None:  # before the first act() the command starts at the measured pose anyway
            self._cmd[:3] = np.asarray(xyz, dtype=np.float64)
            self._cmd[3] = float(yaw)

    def _reached(self, xyz_now: np.ndarray) -> bool:
        wp = self._wp
        assert wp is not None and self._cmd is not None
        at_cmd = (
            np.allclose(self._cmd[:3], wp.xyz, atol=1e-9) and abs(wrap_angle(wp.yaw - self._cmd[3])) < 1e-6
        )
        if not at_cmd:
            return False
        if wp.tol is not None and np.linalg.norm(xyz_now - np.asarray(wp.xyz)) > wp.tol:
            self._waited += 1
            if self._waited <= wp.patience:
                return False
        if self._held < wp.hold:
            self._held += 1
            return False
        return True

    def _next(self) -> None:
        self._held = 0
        self._waited = 0
        try:
            self._wp = next(self._plan)
        except StopIteration:
            self.finished = True


def grasp_yaw(object_yaw: float, current_yaw: float, symmetry: float = np.pi / 2) -> float:
    """Gripper yaw aligned with an object of the given rotational symmetry, nearest the current yaw."""
    k = np.round((current_yaw - object_yaw) / symmetry)
    return float(object_yaw + k * symmetry)


OPEN = 0.08  #: expert's open-gripper command (the maximum opening)


def pick_and_place(
    env: Any,
    obj: str,
    *,
    grasp_z: float,
    place_xy: Callable[[], np.ndarray],
    place_z: float,
    symmetry: float,
    carry_z: float = 0.16,
    attempts: int = 3,
    place_yaw: Callable[[float], float] | None = None,
) -> Iterator[Waypoint]:
    """Plan: above ``obj`` -> down -> close -> lift (retry if the object did not come up) -> over the
    place point -> down to ``place_z`` -> open -> up. ``place_xy`` is read when the object is lifted;
    ``place_yaw(grasp_yaw)``, when given, is the gripper yaw while carrying and placing."""
    from pydrake.math import RollPitchYaw

    scene = env.scene
    for _ in range(attempts):
        X = scene.pose(obj)
        p = X.translation()
        yaw_now = scene.gripper_state().yaw
        yaw = (
            grasp_yaw(RollPitchYaw(X.rotation()).yaw_angle(), yaw_now, symmetry) if symmetry > 0 else yaw_now
        )
        yield Waypoint(np.array([p[0], p[1], 0.12]), yaw, OPEN)
        yield Waypoint(np.array([p[0], p[1], grasp_z]), yaw, OPEN, speed=0.2, tol=0.006)
        yield Waypoint(np.array([p[0], p[1], grasp_z]), yaw, 0.0, hold=4, tol=None)
        yield Waypoint(np.array([p[0], p[1], carry_z]), yaw, 0.0)
        if env.z(obj) > grasp_z + 0.06:
            break
        yield Waypoint(np.array([p[0], p[1], carry_z]), yaw, OPEN, hold=2, tol=None)
    target = place_xy()
    if place_yaw is not None:
        yaw = place_yaw(yaw)
    yield Waypoint(np.array([target[0], target[1], carry_z]), yaw, 0.0)
    yield Waypoint(np.array([target[0], target[1], place_z]), yaw, 0.0, speed=0.15, tol=0.006)
    yield Waypoint(np.array([target[0], target[1], place_z]), yaw, OPEN, hold=3, tol=None)
    yield Waypoint(np.array([target[0], target[1], carry_z]), yaw, OPEN)
