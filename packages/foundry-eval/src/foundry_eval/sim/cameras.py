"""RGB cameras of the tabletop scene: a fixed ``scene`` camera and a ``wrist`` camera on the palm.

Rendering is CPU-only (RenderEngineVtk) and lazy: an image is rendered only when its port is
evaluated, i.e. once per control step. Drake camera frames look along +z with +x right, +y down.
"""

from __future__ import annotations

import numpy as np
from pydrake.geometry import ClippingRange, ColorRenderCamera, DepthRange, DepthRenderCamera, RenderCameraCore
from pydrake.math import RigidTransform, RotationMatrix
from pydrake.systems.sensors import CameraInfo, RgbdSensor

CAMERA_NAMES: tuple[str, ...] = ("scene", "wrist")
_FOV_Y = {"scene": np.deg2rad(48.0), "wrist": np.deg2rad(70.0)}


def look_at(
    eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])
) -> RigidTransform:
    """Pose of a Drake camera at ``eye`` looking at ``target`` (image up ~ ``up``)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return RigidTransform(RotationMatrix(np.column_stack([x, y, z])), eye)


def camera_pose(name: str) -> RigidTransform:
    """Pose of camera ``name`` in its parent frame (world for ``scene``, palm for ``wrist``)."""
    if name == "scene":
        return look_at(np.array([0.36, 0.0, 0.56]), np.array([-0.02, 0.0, 0.0]))
    # Wrist: on the palm's side, looking down past the fingers (image up = palm +x).
    return look_at(np.array([-0.045, 0.0, -0.02]), np.array([0.0, 0.0, -0.13]), up=np.array([1.0, 0.0, 0.0]))


def add_cameras(
    builder: object, plant: object, scene_graph: object, palm: object, names: list[str], image_size: int
) -> dict[str, RgbdSensor]:
    """Add one RgbdSensor per camera name (square ``image_size`` images) and wire it to the scene graph."""
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    sensors = {}
    for name in names:
        info = CameraInfo(width=image_size, height=image_size, fov_y=float(_FOV_Y[name]))
        core = RenderCameraCore("vtk", info, ClippingRange(0.01, 5.0), RigidTransform())
        color = ColorRenderCamera(core, False)
        depth = DepthRenderCamera(core, DepthRange(0.02, 4.0))
        if name == "scene":
            parent = scene_graph.world_frame_id()
        else:
            parent = plant.GetBodyFrameIdOrThrow(palm.index())
        sensor = builder.AddSystem(RgbdSensor(parent, camera_pose(name), color, depth))
        sensor.set_name(f"camera_{name}")
        builder.Connect(scene_graph.get_query_output_port(), sensor.query_object_input_port())
        sensors[name] = sensor
    return sensors
