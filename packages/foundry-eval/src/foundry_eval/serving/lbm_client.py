"""LBM Eval protocol client: Foundry's rollout runner evaluating any LBM-compatible policy server.

``foundry eval run --server HOST:PORT --protocol lbm`` uses it as its
:class:`~foundry_eval.serving.session.PolicyClient`: it waits for ``grpc.health.v1`` to answer
``SERVING`` (as LBM Eval's client does), sends each observation as a ``MultiarmObservation`` (the
flat 10-per-arm proprio as both the actual and the desired pose of each arm, cameras by name as
serials, raw RGB bytes) and turns the answered ``PosesAndGrippers`` back into Foundry's flat action.
LBM has no end-of-episode call: the server evicts idle episodes itself. Tested by
``tests/test_eval_serving_lbm.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foundry_core.errors import FoundryError
from foundry_eval.serving import lbm_policy_pb2 as lbm
from foundry_eval.serving import lbm_policy_pb2_grpc as lbm_grpc
from foundry_eval.serving.client import PolicyServerError, normalize_address
from foundry_eval.serving.codec import ARM_DIM, PolicyOutputError, RequestError, rot6d_to_matrix
from foundry_eval.serving.lbm_codec import SCHEMA_VERSION, RobotState, default_arms, gripper_of
from foundry_eval.serving.server import GRPC_OPTIONS


def decode_action(msg: lbm.PosesAndGrippers, arms: Sequence[str]) -> np.ndarray:
    """``PosesAndGrippers`` -> Foundry's flat action float32 [10 * arms] (xyz, first two rows, opening)."""
    robot = RobotState(msg, "action")
    parts = []
    for arm in arms:
        t, r = robot.pose(arm)
        parts.append(
            np.concatenate(
                [
                    t,
                    rot6d_to_matrix(np.concatenate([r[0], r[1]]))[:2].reshape(-1),
                    [robot.gripper(gripper_of(arm))],
                ]
            )
        )
    return np.concatenate(parts).astype(np.float32)


def encode_observation(observation: Mapping[str, Any], arms: Sequence[str]) -> lbm.MultiarmObservation:
    """Foundry observation (flat 10-per-arm proprio) -> ``MultiarmObservation`` (our runner as an LBM client).

    The proprio pose is both the actual and the desired state (our tasks do not report the command);
    cameras are sent under their names as serials.
    """
    proprio = np.asarray(observation["proprio"], dtype=np.float64).reshape(-1)
    if proprio.shape[0] != ARM_DIM * len(arms):
        raise ValueError(
            f"proprio has {proprio.shape[0]} values; {ARM_DIM} per arm expected for arms {list(arms)}"
        )
    msg = lbm.MultiarmObservation(version=SCHEMA_VERSION)
    msg.robot.version = SCHEMA_VERSION
    for state in (msg.robot.actual, msg.robot.desired):
        for i, arm in enumerate(arms):
            block = proprio[i * ARM_DIM : (i + 1) * ARM_DIM]
            status = state.pose_status.add(robot_name=arm)
            status.pose.translation.extend(block[:3].tolist())
            status.pose.rotation.extend(rot6d_to_matrix(block[3:9]).reshape(-1).tolist())
            state.gripper_status.add(gripper_name=gripper_of(arm), gripper_position=float(block[9]))
    for name, image in observation.get("images", {}).items():
        image = np.ascontiguousarray(image, dtype=np.uint8)
        cam = msg.visuo.add(camera_serial=str(name), has_rgb=True)
        h, w = image.shape[:2]
        cam.camera_rgb.image.CopyFrom(lbm.Image(height=h, width=w, channels=3, data=image.tobytes()))
        cam.camera_rgb.info.height, cam.camera_rgb.info.width = h, w
    instruction = str(observation.get("instruction") or "")
    msg.use_language_instruction = bool(instruction)
    msg.language_instruction = instruction
    return msg


class LbmPolicyClient:
    """The runner's ``PolicyClient`` over LBM Eval's wire protocol."""

    def __init__(
        self,
        address: str,
        *,
        arms: Sequence[str] | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.address = normalize_address(address)
        self.arms = list(arms) if arms is not None else None
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(self.address, options=GRPC_OPTIONS)
        health = health_pb2_grpc.HealthStub(self._channel)
        try:
            status = health.Check(
                health_pb2.HealthCheckRequest(), timeout=connect_timeout_s, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            self._channel.close()
            raise FoundryError(
                f"no LBM policy server answered the health check at {self.address} within "
                f"{connect_timeout_s:.0f} s ({exc.code().name}: {exc.details()}); start one with "
                "`foundry serve --protocol lbm EXPORT_DIR --port PORT`"
            ) from None
        if status.status != health_pb2.HealthCheckResponse.SERVING:
            self._channel.close()
            raise FoundryError(
                f"the policy server at {self.address} is not serving (health: {status.status})"
            )
        self._step = lbm_grpc.PolicyStepServiceStub(self._channel)
        self._reset = lbm_grpc.PolicyResetServiceStub(self._channel)
        self._metadata = lbm_grpc.GetPolicyMetadataServiceStub(self._channel)

    def _call(self, rpc: str, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s, wait_for_ready=True)
        except grpc.RpcError as exc:
            raise PolicyServerError(rpc, exc.code(), exc.details() or "") from None

    def _arms(self, proprio: Any) -> list[str]:
        if self.arms is not None:
            return self.arms
        return default_arms(max(1, int(np.asarray(proprio).size) // ARM_DIM))

    def reset(self, client_id: str, seed: int) -> None:
        request = lbm.PolicyResetRequest(client_identifier=client_id, seed=int(seed) % 2**32)
        if not self._call("PolicyReset", self._reset.PolicyReset, request).success:
            raise RuntimeError(f"the LBM policy server rejected the reset of client {client_id!r}")

    def step(self, client_id: str, observation: Mapping[str, Any], time_s: float = 0.0) -> np.ndarray:
        arms = self._arms(observation["proprio"])
        msg = encode_observation(observation, arms)
        sec = int(time_s)
        for state in (msg.robot.actual, msg.robot.desired):
            state.timestamp_data.sec, state.timestamp_data.nanosec = sec, int(round((time_s - sec) * 1e9))
        response = self._call(
            "PolicyStep",
            self._step.PolicyStep,
            lbm.PolicyStepRequest(client_identifier=client_id, observation=msg),
        )
        if not response.success:
            raise PolicyOutputError(
                "the policy server answered success=false for this step (its log says why)"
            )
        try:
            return decode_action(response.action, arms)
        except RequestError as exc:  # the server's answer, not our request, is malformed: the episode fails
            raise PolicyOutputError(f"the policy server's action is malformed: {exc}") from None

    def end(self, client_id: str) -> None:
        return None  # LBM has no end-of-episode call

    def metadata(self) -> dict[str, Any]:
        """In the form of Foundry's own client (``normalize_metadata``), so the runner reads both alike."""
        request = lbm.GetPolicyMetadataRequest(client_identifier="metadata")
        response = self._call("GetPolicyMetadata", self._metadata.GetPolicyMetadata, request)
        if not response.success:
            raise FoundryError(f"the policy server at {self.address} refused GetPolicyMetadata")
        md = response.policy_metadata
        return {
            "name": md.name,
            "skill_type": md.skill_type,
            "checkpoint_path": md.checkpoint_path,
            "git_repo": md.git_repo,
            "git_sha": md.git_sha,
            "config_yaml": md.raw_policy_config,
            "is_language_conditioned": md.is_language_conditioned,
            "runtime_info": dict(sorted(md.runtime_information.items())),
        }

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LbmPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
