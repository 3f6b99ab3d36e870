"""gRPC policy client: the :class:`~foundry_eval.serving.session.PolicyClient` interface over the network.

The rollout runner uses it with ``--server HOST:PORT`` exactly as it uses the in-process adapter,
so served and in-process evaluation share one code path. Tested by ``tests/test_eval_serving.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from foundry_core.errors import FoundryError
from foundry_eval.serving import policy_pb2 as pb
from foundry_eval.serving import policy_pb2_grpc as pb_grpc
from foundry_eval.serving.codec import PolicyOutputError, decode_action, decode_metadata, encode_observation
from foundry_eval.serving.server import GRPC_OPTIONS


class PolicyServerError(RuntimeError):
    """An RPC failed; ``code`` is the gRPC status code, the message names the RPC and the server's reason."""

    def __init__(self, rpc: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{rpc} failed with {code.name}: {details}")
        self.code = code
        self.details = details


def normalize_address(address: str) -> str:
    """``grpc://host:port`` or ``host:port`` -> ``host:port``."""
    address = address.removeprefix("grpc://")
    if ":" not in address:
        raise FoundryError(f"policy server address {address!r}: expected HOST:PORT")
    return address


class GrpcPolicyClient:
    """Talks to a :class:`~foundry_eval.serving.server.PolicyServer` (or any server of this protocol)."""

    def __init__(self, address: str, *, timeout_s: float = 120.0, connect_timeout_s: float = 30.0) -> None:
        self.address = normalize_address(address)
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(self.address, options=GRPC_OPTIONS)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise FoundryError(
                f"no policy server answered at {self.address} within {connect_timeout_s:.0f} s "
                "(start one with `foundry serve EXPORT_DIR --port PORT`)"
            ) from None
        self._stub = pb_grpc.PolicyServiceStub(self._channel)

    def _call(self, rpc: str, request: Any) -> Any:
        try:
            return getattr(self._stub, rpc)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise PolicyServerError(rpc, exc.code(), exc.details() or "") from None

    def reset(self, client_id: str, seed: int) -> None:
        response = self._call("Reset", pb.ResetRequest(client_id=client_id, seed=seed))
        if not response.success:
            raise RuntimeError(f"policy server could not reset client {client_id!r}: {response.message}")

    def step(self, client_id: str, observation: Mapping[str, Any], time_s: float = 0.0) -> np.ndarray:
        request = pb.StepRequest(client_id=client_id, observation=encode_observation(observation, time_s))
        response = self._call("Step", request)
        if not response.success:
            raise PolicyOutputError(response.message)
        return decode_action(response.action)

    def end(self, client_id: str) -> None:
        self._call("EndEpisode", pb.EndRequest(client_id=client_id))

    def metadata(self) -> dict[str, Any]:
        return decode_metadata(self._call("GetPolicyMetadata", pb.MetadataRequest(client_id="metadata")))

    def healthy(self) -> bool:
        return bool(self._call("Health", pb.HealthRequest()).serving)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
