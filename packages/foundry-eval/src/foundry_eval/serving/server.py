"""gRPC policy server: serves any Foundry ``Policy`` with the LBM Eval interface shape.

The policy is the server; simulators are clients, one client id per episode, so parallel
simulations share one server. Requests are validated (shapes, dtypes, sizes, cameras) and bad ones
are answered ``INVALID_ARGUMENT`` with the field's path; a Step before Reset is
``FAILED_PRECONDITION``; an unusable policy output (NaN, wrong shape) is a normal response with
``success = false``, so the simulator records a failed (not crashed) episode. Binds to loopback
unless told otherwise. Protocol: ``docs/serving.md``. Tested by ``tests/test_eval_serving.py``.
"""

from __future__ import annotations

import logging
import traceback
from concurrent import futures
from typing import Any

import grpc

from foundry_eval.serving import policy_pb2 as pb
from foundry_eval.serving import policy_pb2_grpc as pb_grpc
from foundry_eval.serving.codec import (
    MAX_MESSAGE_BYTES,
    PolicyOutputError,
    RequestError,
    decode_observation,
    encode_action,
    encode_metadata,
    expected_inputs,
)
from foundry_eval.serving.session import PolicySessions

log = logging.getLogger(__name__)
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def _client_id(request: Any, context: grpc.ServicerContext) -> str:
    if not request.client_id:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "client_id: must not be empty (use one UUID per episode)"
        )
    return request.client_id


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    """Implements the RPCs on top of :class:`PolicySessions`."""

    def __init__(self, sessions: PolicySessions) -> None:
        self.sessions = sessions

    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.ResetResponse:  # noqa: N802
        client_id = _client_id(request, context)
        try:
            self.sessions.reset(client_id, int(request.seed))
        except Exception as exc:  # the policy's own reset failed: report, keep serving
            log.exception("Reset(%s) failed", client_id)
            return pb.ResetResponse(success=False, message=f"policy reset raised {type(exc).__name__}: {exc}")
        return pb.ResetResponse(success=True)

    def Step(self, request: pb.StepRequest, context: grpc.ServicerContext) -> pb.StepResponse:  # noqa: N802
        client_id = _client_id(request, context)
        if not request.HasField("observation"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "observation: missing")
        cameras, proprio_dim = expected_inputs(self.sessions.metadata())
        try:
            observation = decode_observation(
                request.observation,
                cameras=cameras,
                proprio_dim=proprio_dim,
                allow_extra_cameras=self.sessions.allow_extra_cameras,
            )
        except RequestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            action = self.sessions.step(client_id, observation)
            return pb.StepResponse(success=True, action=encode_action(action))
        except KeyError:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"client_id {client_id!r}: Step before Reset")
        except PolicyOutputError as exc:
            return pb.StepResponse(success=False, message=str(exc))
        except Exception as exc:
            log.exception("Step(%s) failed", client_id)
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"policy raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
            )

    def EndEpisode(self, request: pb.EndRequest, context: grpc.ServicerContext) -> pb.EndResponse:  # noqa: N802
        self.sessions.end(_client_id(request, context))
        return pb.EndResponse()

    def GetPolicyMetadata(  # noqa: N802
        self, request: pb.MetadataRequest, context: grpc.ServicerContext
    ) -> pb.MetadataResponse:
        return encode_metadata(self.sessions.metadata())

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:  # noqa: N802
        return pb.HealthResponse(serving=True)


class PolicyServer:
    """A running server. ``port=0`` picks a free port (see ``.port``). Use as a context manager."""

    def __init__(
        self, sessions: PolicySessions, *, host: str = "127.0.0.1", port: int = 50051, max_workers: int = 16
    ) -> None:
        self.sessions = sessions
        self.host = host
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=GRPC_OPTIONS)
        pb_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(sessions), self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind the policy server to {host}:{port}")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> PolicyServer:
        self._server.start()
        log.info("policy server listening on %s", self.address)
        return self

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace_s: float = 1.0) -> None:
        self._server.stop(grace_s).wait()

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
