"""gRPC policy server: serves any Foundry ``Policy`` with the LBM Eval interface shape.

The policy is the server; simulators are clients, one client id per episode, so parallel
simulations share one server. Requests are validated (shapes, dtypes, sizes, cameras) and bad ones
are answered ``INVALID_ARGUMENT`` with the field's path (also when the policy's own validation
rejects them); frames of another size are resized to the policy's; a Step before Reset, or after
the episode was evicted, is ``FAILED_PRECONDITION`` saying which; an unusable policy output (NaN,
wrong shape) is a normal response with ``success = false``, so the simulator records a failed (not
crashed) episode; a policy that raises is ``INTERNAL`` with the exception's message (the traceback
goes to the server log, never to the client). The port is bound exclusively (no ``SO_REUSEPORT``):
a second server on a busy port refuses to start. Binds to loopback unless told otherwise.
``foundry serve --protocol lbm`` is :mod:`foundry_eval.serving.lbm_server`.
Protocol: ``docs/serving.md``. Tested by ``tests/test_eval_serving.py``.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any, NoReturn

import grpc

from foundry_core.errors import FoundryError
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
    resize_frame,
)
from foundry_eval.serving.session import PolicySessions, UnknownSession

log = logging.getLogger(__name__)
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
#: servers only: with SO_REUSEPORT two servers could share a port and split clients between policies
SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]


def abort_for_exception(context: grpc.ServicerContext, rpc: str, client_id: str, exc: Exception) -> NoReturn:
    """Answer a failed Step/Reset with a status naming the cause; tracebacks go to the log only."""
    if isinstance(exc, UnknownSession):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, RequestError | FoundryError):  # the policy's own validation of the observation
        log.warning("%s(%s) rejected: %s", rpc, client_id, exc)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    log.exception("%s(%s) failed", rpc, client_id)
    context.abort(
        grpc.StatusCode.INTERNAL,
        f"policy raised {type(exc).__name__}: {exc} (the traceback is in the server's log)",
    )


def bind(server: grpc.Server, host: str, port: int) -> int:
    """Bind ``host:port`` (0 = any free port); a busy port is a clear error, not a shared port."""
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise FoundryError(
            f"cannot listen on {host}:{port}: the port is in use (is another `foundry serve` running?) "
            "or the address is not available; pick another --port"
        )
    return bound


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
        size = self.sessions.metadata().get("image_size")
        if size is not None:  # a simulator rendering at another size: resize, never reject
            hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
            images = observation["images"]
            observation["images"] = {cam: resize_frame(img, hw) for cam, img in images.items()}
        try:
            action = self.sessions.step(client_id, observation)
            return pb.StepResponse(success=True, action=encode_action(action))
        except PolicyOutputError as exc:
            return pb.StepResponse(success=False, message=str(exc))
        except Exception as exc:
            abort_for_exception(context, "Step", client_id, exc)

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
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), options=SERVER_OPTIONS
        )
        pb_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(sessions), self._server)
        self.port = bind(self._server, host, port)

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
