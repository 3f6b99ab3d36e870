"""Shared Drake tabletop scene: a table, a floating parallel gripper and task objects, all primitives.

Nothing here loads a model file, so nothing can trigger Drake's run-time downloads. The gripper is a
palm box with two finger boxes on prismatic joints, carried by x/y/z prismatic joints and a yaw
revolute joint; every joint is a PD-controlled actuator (implicit in Drake's SAP solver, so stiff gains
are stable at a coarse time step and no Python runs inside the physics loop). Its model instance has
gravity disabled, so the PD needs no feed-forward term. Boxes, cylinders and fixtures rest on small
contact spheres at their corners/rim: Drake's point contact gives a single point per geometry pair,
which would make a box lying on a box wobble. Test: ``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydrake.geometry import (
    Box,
    CollisionFilterDeclaration,
    Cylinder,
    GeometrySet,
    MakeRenderEngineVtk,
    ProximityProperties,
    RenderEngineVtkParams,
    Sphere,
)
from pydrake.math import RigidTransform, RollPitchYaw, RotationMatrix
from pydrake.multibody.plant import (
    AddMultibodyPlant,
    CoulombFriction,
    MultibodyPlantConfig,
)
from pydrake.multibody.tree import (
    FixedOffsetFrame,
    PdControllerGains,
    PrismaticJoint,
    RevoluteJoint,
    SpatialInertia,
)
from pydrake.systems.analysis import Simulator
from pydrake.systems.framework import DiagramBuilder

from foundry_eval.sim.cameras import CAMERA_NAMES, add_cameras
from foundry_eval.sim.llvm_guard import preload_triton

TABLE_SIZE = (0.9, 0.9, 0.05)  #: table top surface is the plane z = 0
WORKSPACE_LOW = np.array([-0.35, -0.35, 0.0])  #: TCP position limits (joint limits of x/y/z)
WORKSPACE_HIGH = np.array([0.35, 0.35, 0.40])
MAX_OPENING = 0.08  #: distance between the finger pads, metres
FINGER_SIZE = (0.02, 0.012, 0.055)  #: x (palm axis), thickness along the closing axis, length
PALM_SIZE = (0.04, 0.12, 0.025)
PAD_HEIGHT = 0.016  #: the TCP lies this far above the fingertips, between the finger pads
_FINGER_FRICTION = CoulombFriction(1.2, 1.0)
_OBJECT_FRICTION = CoulombFriction(0.8, 0.6)
_TABLE_FRICTION = CoulombFriction(0.4, 0.3)
_SPHERE_R = 0.003


@dataclass(frozen=True)
class ObjectSpec:
    """One task object.

    Attributes:
        name: unique name (model instance and body name).
        kind: ``box`` (size = edge lengths), ``cylinder`` (size = radius, height), ``bin`` (size =
            outer length, width, height, wall thickness), ``plate`` (size = radius, thickness) or
            ``marker`` (a flat visual-only disk that floats where it is put; size = radius).
        size: dimensions as described for ``kind``.
        mass: kg (ignored for ``marker``).
        color: RGBA in [0, 1].
    """

    name: str
    kind: str
    size: tuple[float, ...]
    mass: float = 0.1
    color: tuple[float, float, float, float] = (0.8, 0.2, 0.2, 1.0)


@dataclass
class GripperState:
    """Measured gripper state: TCP position, yaw, finger opening (pad to pad) in metres."""

    xyz: np.ndarray
    yaw: float
    opening: float


def _proximity(friction: CoulombFriction) -> ProximityProperties:
    props = ProximityProperties()
    props.AddProperty("material", "coulomb_friction", friction)
    return props


class TabletopScene:
    """Builds and runs one tabletop diagram; tasks place objects and read their poses through it."""

    def __init__(
        self,
        objects: list[ObjectSpec],
        *,
        cameras: list[str],
        image_size: int,
        time_step: float = 4e-3,
    ) -> None:
        unknown = [c for c in cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; known: {list(CAMERA_NAMES)}")
        self.objects = {o.name: o for o in objects}
        builder = DiagramBuilder()
        cfg = MultibodyPlantConfig(
            time_step=time_step, contact_model="point", discrete_contact_approximation="lagged"
        )
        plant, scene_graph = AddMultibodyPlant(cfg, builder)
        if cameras:
            preload_triton()  # before Mesa's LLVM is loaded: see llvm_guard.py
            scene_graph.AddRenderer("vtk", MakeRenderEngineVtk(RenderEngineVtkParams()))
        self.plant = plant
        self._bodies: dict[str, object] = {}
        self._add_table()
        self._add_gripper()
        for spec in objects:
            self._add_object(spec)
        plant.Finalize()
        self._filter_gripper_self_collisions(scene_graph)
        self.camera_names = list(cameras)
        self._sensors = (
            add_cameras(builder, plant, scene_graph, self._palm, cameras, image_size) if cameras else {}
        )
        self.diagram = builder.Build()
        self.simulator = Simulator(self.diagram)
        self.context = self.simulator.get_mutable_context()
        self.plant_context = plant.GetMyMutableContextFromRoot(self.context)
        self._sensor_contexts = {
            name: sensor.GetMyContextFromRoot(self.context) for name, sensor in self._sensors.items()
        }
        self._desired_port = plant.get_desired_state_input_port(self._gripper)

    # ------------------------------------------------------------------ building
    def _add_table(self) -> None:
        plant = self.plant
        body = plant.AddRigidBody(
            "table", plant.AddModelInstance("table"), SpatialInertia.SolidBoxWithMass(10, *TABLE_SIZE)
        )
        X = RigidTransform([0, 0, -TABLE_SIZE[2] / 2])
        plant.WeldFrames(plant.world_frame(), body.body_frame(), X)
        plant.RegisterCollisionGeometry(
            body, RigidTransform(), Box(*TABLE_SIZE), "table", _proximity(_TABLE_FRICTION)
        )
        plant.RegisterVisualGeometry(
            body, RigidTransform(), Box(*TABLE_SIZE), "table", [0.55, 0.45, 0.35, 1.0]
        )

    def _add_gripper(self) -> None:
        plant = self.plant
        inst = plant.AddModelInstance("gripper")
        self._gripper = inst
        small = SpatialInertia.SolidBoxWithMass(0.2, 0.02, 0.02, 0.02)
        bx = plant.AddRigidBody("carriage_x", inst, small)
        by = plant.AddRigidBody("carriage_y", inst, small)
        bz = plant.AddRigidBody("carriage_z", inst, small)
        palm = plant.AddRigidBody("palm", inst, SpatialInertia.SolidBoxWithMass(0.3, *PALM_SIZE))
        self._palm = palm
        # The palm's frame is at the palm centre; the TCP (between the pads) is below it.
        palm_above_tcp = FINGER_SIZE[2] - PAD_HEIGHT + PALM_SIZE[2] / 2
        plant.RegisterVisualGeometry(palm, RigidTransform(), Box(*PALM_SIZE), "palm", [0.3, 0.3, 0.35, 1.0])
        plant.RegisterCollisionGeometry(
            palm, RigidTransform(), Box(*PALM_SIZE), "palm", _proximity(_FINGER_FRICTION)
        )
        joints = []
        lo, hi = WORKSPACE_LOW, WORKSPACE_HIGH
        for i, (parent, child, axis) in enumerate(
            [(plant.world_body(), bx, [1, 0, 0]), (bx, by, [0, 1, 0]), (by, bz, [0, 0, 1])]
        ):
            joints.append(
                plant.AddJoint(
                    PrismaticJoint(
                        f"joint_{'xyz'[i]}", parent.body_frame(), child.body_frame(), axis, lo[i], hi[i], 0.0
                    )
                )
            )
        tcp_on_palm = plant.AddFrame(
            _fixed_frame("palm_tcp", palm.body_frame(), RigidTransform([0, 0, -palm_above_tcp]))
        )
        joints.append(
            plant.AddJoint(RevoluteJoint("joint_yaw", bz.body_frame(), tcp_on_palm, [0, 0, 1], 0.0))
        )
        for side, sign in (("left", 1.0), ("right", -1.0)):
            finger = plant.AddRigidBody(
                f"finger_{side}", inst, SpatialInertia.SolidBoxWithMass(0.05, *FINGER_SIZE)
            )
            # Finger frame: at its inner (pad) face centre; joint q = half the opening.
            X_PF = RigidTransform(RotationMatrix.MakeZRotation(0.0 if sign > 0 else np.pi), [0, 0, 0])
            parent_frame = plant.AddFrame(_fixed_frame(f"finger_{side}_base", palm.body_frame(), X_PF))
            joints.append(
                plant.AddJoint(
                    PrismaticJoint(
                        f"joint_finger_{side}",
                        parent_frame,
                        finger.body_frame(),
                        [0, 1, 0],
                        0.0,
                        MAX_OPENING / 2,
                        0.0,
                    )
                )
            )
            box_center = [0, FINGER_SIZE[1] / 2, -PALM_SIZE[2] / 2 - FINGER_SIZE[2] / 2]
            plant.RegisterVisualGeometry(
                finger, RigidTransform(box_center), Box(*FINGER_SIZE), f"finger_{side}", [0.2, 0.2, 0.25, 1.0]
            )
            plant.RegisterCollisionGeometry(
                finger,
                RigidTransform(box_center),
                Box(*FINGER_SIZE),
                f"finger_{side}",
                _proximity(_FINGER_FRICTION),
            )
            # 2x3 pad spheres protruding 1 mm from the inner face: a stable multi-point grasp.
            z_tip = -PALM_SIZE[2] / 2 - FINGER_SIZE[2]
            for ix, x in enumerate((-0.006, 0.006)):
                for iz, dz in enumerate((0.005, PAD_HEIGHT, 2 * PAD_HEIGHT - 0.005)):
                    plant.RegisterCollisionGeometry(
                        finger,
                        RigidTransform([x, _SPHERE_R - 0.001, z_tip + dz]),
                        Sphere(_SPHERE_R),
                        f"finger_{side}_pad_{ix}{iz}",
                        _proximity(_FINGER_FRICTION),
                    )
        gains = {
            "joint_x": (4000.0, 200.0, 200.0),
            "joint_y": (4000.0, 200.0, 200.0),
            "joint_z": (4000.0, 200.0, 200.0),
            "joint_yaw": (20.0, 0.6, 5.0),
            "joint_finger_left": (400.0, 5.0, 12.0),
            "joint_finger_right": (400.0, 5.0, 12.0),
        }
        self._joints = {}
        for joint in joints:
            kp, kd, limit = gains[joint.name()]
            actuator = plant.AddJointActuator(joint.name(), joint, limit)
            actuator.set_controller_gains(PdControllerGains(p=kp, d=kd))
            self._joints[joint.name()] = joint
        plant.set_gravity_enabled(inst, False)

    def _add_object(self, spec: ObjectSpec) -> None:
        plant = self.plant
        inst = plant.AddModelInstance(spec.name)
        props = _proximity(_OBJECT_FRICTION)
        if spec.kind == "box":
            lx, ly, lz = spec.size
            body = plant.AddRigidBody(spec.name, inst, SpatialInertia.SolidBoxWithMass(spec.mass, lx, ly, lz))
            plant.RegisterVisualGeometry(body, RigidTransform(), Box(lx, ly, lz), spec.name, list(spec.color))
            plant.RegisterCollisionGeometry(body, RigidTransform(), Box(lx, ly, lz), spec.name, props)
            _add_corner_spheres(plant, body, spec.name, (lx, ly, lz), props)
        elif spec.kind == "cylinder":
            r, h = spec.size
            body = plant.AddRigidBody(
                spec.name, inst, SpatialInertia.SolidCylinderWithMass(spec.mass, r, h, [0, 0, 1])
            )
            plant.RegisterVisualGeometry(body, RigidTransform(), Cylinder(r, h), spec.name, list(spec.color))
            plant.RegisterCollisionGeometry(body, RigidTransform(), Cylinder(r, h), spec.name, props)
            _add_rim_spheres(plant, body, spec.name, r, h, props)
        elif spec.kind == "plate":
            r, t = spec.size
            body = plant.AddRigidBody(
                spec.name, inst, SpatialInertia.SolidCylinderWithMass(spec.mass, r, t, [0, 0, 1])
            )
            plant.RegisterVisualGeometry(body, RigidTransform(), Cylinder(r, t), spec.name, list(spec.color))
            plant.RegisterCollisionGeometry(body, RigidTransform(), Cylinder(r, t), spec.name, props)
            _add_rim_spheres(plant, body, spec.name, r * 0.9, t, props, top=False)
        elif spec.kind == "bin":
            lx, ly, h, w = spec.size
            body = plant.AddRigidBody(spec.name, inst, SpatialInertia.SolidBoxWithMass(spec.mass, lx, ly, h))
            parts = [
                ("floor", (lx, ly, w), (0, 0, -h / 2 + w / 2)),
                ("wall_px", (w, ly, h), (lx / 2 - w / 2, 0, 0)),
                ("wall_nx", (w, ly, h), (-lx / 2 + w / 2, 0, 0)),
                ("wall_py", (lx, w, h), (0, ly / 2 - w / 2, 0)),
                ("wall_ny", (lx, w, h), (0, -ly / 2 + w / 2, 0)),
            ]
            for part, size, pos in parts:
                X = RigidTransform(list(pos))
                plant.RegisterVisualGeometry(body, X, Box(*size), f"{spec.name}_{part}", list(spec.color))
                plant.RegisterCollisionGeometry(body, X, Box(*size), f"{spec.name}_{part}", props)
            _add_corner_spheres(plant, body, spec.name, (lx, ly, h), props, bottom_only=True)
        elif spec.kind == "marker":
            (r,) = spec.size
            body = plant.AddRigidBody(
                spec.name, inst, SpatialInertia.SolidCylinderWithMass(0.01, r, 0.002, [0, 0, 1])
            )
            plant.RegisterVisualGeometry(
                body, RigidTransform(), Cylinder(r, 0.002), spec.name, list(spec.color)
            )
            plant.set_gravity_enabled(inst, False)
        else:
            raise ValueError(f"object {spec.name!r}: unknown kind {spec.kind!r}")
        self._bodies[spec.name] = body

    def _filter_gripper_self_collisions(self, scene_graph: object) -> None:
        plant = self.plant
        geoms = []
        for body in plant.GetBodyIndices(self._gripper):
            geoms += plant.GetCollisionGeometriesForBody(plant.get_body(body))
        scene_graph.collision_filter_manager().Apply(
            CollisionFilterDeclaration().ExcludeWithin(GeometrySet(geoms))
        )

    # ------------------------------------------------------------------ running
    def reset(
        self, gripper_xyz: np.ndarray, gripper_yaw: float, opening: float, poses: dict[str, RigidTransform]
    ) -> None:
        """Put the scene in a new initial state at time 0 (all velocities zero).

        Only the plant has state in this diagram, so only its state is reset. ``SetDefaultContext``
        would also reset the parameters, SceneGraph's geometry state among them, and the next render
        would rebuild its render engine: 80 ms per reset + first frame at 64 px instead of 5 ms
        (2,400 caption images and every episode pay it). Nothing here changes a parameter.
        """
        self.context.SetTime(0.0)
        self.plant.SetDefaultState(self.plant_context, self.plant_context.get_mutable_state())
        q = self._gripper_q(gripper_xyz, gripper_yaw, opening)
        self.plant.SetPositions(self.plant_context, self._gripper, q)
        for name, X in poses.items():
            self.plant.SetFreeBodyPose(self.plant_context, self._bodies[name], X)
        self.command(gripper_xyz, gripper_yaw, opening)
        self.simulator.Initialize()

    def clip_xyz(self, xyz: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(xyz, dtype=float), WORKSPACE_LOW, WORKSPACE_HIGH)

    def _gripper_q(self, xyz: np.ndarray, yaw: float, opening: float) -> np.ndarray:
        half = float(np.clip(opening, 0.0, MAX_OPENING)) / 2
        xyz = np.clip(np.asarray(xyz, dtype=float), WORKSPACE_LOW, WORKSPACE_HIGH)
        return np.array([xyz[0], xyz[1], xyz[2], yaw, half, half])

    def command(
        self, xyz: np.ndarray, yaw: float, opening: float, v_xyz: np.ndarray | None = None, v_yaw: float = 0.0
    ) -> None:
        """Set the PD targets of the gripper joints (positions clipped to the joint limits)."""
        q = self._gripper_q(xyz, yaw, opening)
        v = np.zeros(6)
        if v_xyz is not None:
            v[:3] = v_xyz
        v[3] = v_yaw
        self._desired_port.FixValue(self.plant_context, np.concatenate([q, v]))

    def advance_to(self, t: float) -> None:
        """Simulate up to time ``t`` (seconds since reset)."""
        self.simulator.AdvanceTo(t)

    @property
    def time(self) -> float:
        return self.context.get_time()

    def gripper_state(self) -> GripperState:
        q = self.plant.GetPositions(self.plant_context, self._gripper)
        return GripperState(xyz=q[:3].copy(), yaw=float(q[3]), opening=float(q[4] + q[5]))

    def pose(self, name: str) -> RigidTransform:
        return self.plant.EvalBodyPoseInWorld(self.plant_context, self._bodies[name])

    def speed(self, name: str) -> float:
        """Linear speed of an object's body origin (m/s)."""
        V = self.plant.EvalBodySpatialVelocityInWorld(self.plant_context, self._bodies[name])
        return float(np.linalg.norm(V.translational()))

    def render(self) -> dict[str, np.ndarray]:
        """RGB uint8 [H, W, 3] per camera (rendered now, on the CPU)."""
        images = {}
        for name, sensor in self._sensors.items():
            rgba = sensor.color_image_output_port().Eval(self._sensor_contexts[name]).data
            images[name] = np.array(rgba[:, :, :3], dtype=np.uint8)
        return images


def _fixed_frame(name: str, parent: object, X: RigidTransform) -> FixedOffsetFrame:
    return FixedOffsetFrame(name, parent, X)


def _add_corner_spheres(
    plant: object,
    body: object,
    name: str,
    size: tuple[float, float, float],
    props: ProximityProperties,
    bottom_only: bool = False,
) -> None:
    """Spheres protruding 0.5 mm beyond the bottom (and top) faces at the corners, edge midpoints and
    centre: the body rests on several points, also on a smaller or rotated support (a block on a block)."""
    lx, ly, lz = size
    inset = _SPHERE_R - 0.0005
    grid = (-1, 1) if bottom_only else (-1, 0, 1)
    for sx in grid:
        for sy in grid:
            for sz in (-1,) if bottom_only else (-1, 1):
                p = [sx * (lx / 2 - inset), sy * (ly / 2 - inset), sz * (lz / 2 - inset)]
                plant.RegisterCollisionGeometry(
                    body, RigidTransform(p), Sphere(_SPHERE_R), f"{name}_c{sx}{sy}{sz}", props
                )


def _add_rim_spheres(
    plant: object, body: object, name: str, r: float, h: float, props: ProximityProperties, top: bool = True
) -> None:
    """Six spheres on the bottom (and top) rim of a cylinder so it stands on several points."""
    inset = _SPHERE_R - 0.0005
    for k in range(6):
        a = 2 * np.pi * k / 6
        for sz in (-1, 1) if top else (-1,):
            p = [(r - inset) * np.cos(a), (r - inset) * np.sin(a), sz * (h / 2 - inset)]
            plant.RegisterCollisionGeometry(
                body, RigidTransform(p), Sphere(_SPHERE_R), f"{name}_r{k}{sz}", props
            )


def table_pose(x: float, y: float, z: float, yaw: float = 0.0) -> RigidTransform:
    """Pose of an object with its centre at (x, y, z), rotated by ``yaw`` about world z."""
    return RigidTransform(RollPitchYaw(0.0, 0.0, yaw), [x, y, z])
