"""``foundry serve --protocol lbm``: a Foundry policy behind LBM Eval's gRPC interface.

Wire-compatible with LBM Eval's ``evaluate`` client (package ``lbm_policy_interface``, see
``lbm_policy.proto``): ``PolicyResetService/PolicyReset`` creates one episode per
``client_identifier`` (seeded), ``PolicyStepService/PolicyStep`` maps the observation to the policy's
inputs (:mod:`~foundry_eval.serving.lbm_codec`) and answers absolute desired poses + gripper openings,
``GetPolicyMetadataService/GetPolicyMetadata`` describes the export, and the standard
``grpc.health.v1.Health`` answers ``SERVING`` (the client waits for it). Episodes of concurrent
clients plan in one forward pass (:class:`~foundry_eval.serving.batching.PlanBatcher`).

Errors: a malformed request is ``INVALID_ARGUMENT`` naming the field; a Step of an unknown or evicted
client is ``FAILED_PRECONDITION`` saying which; an unusable policy output (NaN) is ``success: false``
(LBM Eval then stops that client) with the reason in the server log; a policy exception is
``INTERNAL`` with its message (traceback in the log only). The server keeps serving after each.
Logs: the layout at start-up, every Reset, rejected requests, and a throughput line every
``LOG_EVERY`` steps. Docs: ``docs/lbm_eval.md``. Tested by ``tests/test_eval_serving_lbm.py``.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from foundry_core.errors import FoundryError
from foundry_eval.serving import lbm_policy_pb2 as lbm
from foundry_eval.serving import lbm_policy_pb2_grpc as lbm_grpc
from foundry_eval.serving.batching import PlanBatcher
from foundry_eval.serving.codec import PolicyOutputError, RequestError
from foundry_eval.serving.lbm_codec import LbmLayout, decode_observation, encode_action
from foundry_eval.serving.server import SERVER_OPTIONS, abort_for_exception, bind
from foundry_eval.serving.session import PolicySessions

log = logging.getLogger(__name__)
SERVICES = (
    "lbm_policy_interface.PolicyStepService",
    "lbm_policy_interface.PolicyResetService",
    "lbm_policy_interface.GetPolicyMetadataService",
)
LOG_EVERY = 500
#: a client that stepped this recently is expected to step again: a batch waits for it (up to the timeout)
ACTIVE_WITHIN_S = 10.0


def _client(request: Any, context: grpc.ServicerContext) -> str:
    if not request.client_identifier:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "client_identifier: must not be empty (one UUID per client)"
        )
    return str(request.client_identifier)


def runtime_information(device: str) -> dict[str, str]:
    """torch / CUDA / device facts for GetPolicyMetadata (torch imported only if a policy loaded it)."""
    import sys

    info = {"python": platform.python_version(), "host": platform.node(), "device": device}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["cuda_available"] = str(torch.cuda.is_available())
        info["cuda"] = str(torch.version.cuda or "none")
        if device.startswith("cuda") and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def policy_metadata(metadata: Mapping[str, Any], runtime: Mapping[str, str]) -> lbm.PolicyMetadata:
    """``PolicyMetadata`` from a policy's ``metadata()`` and, for an export, its folder's files (the git
    commit is the one recorded when the export was written; for a built-in policy, the serving code's)."""
    import yaml

    checkpoint = str(metadata.get("checkpoint") or metadata.get("checkpoint_path") or "")
    export = Path(checkpoint) if checkpoint and Path(checkpoint).is_dir() else None
    meta: dict[str, Any] = {}
    if export is not None and (export / "foundry_export.json").is_file():
        meta = json.loads((export / "foundry_export.json").read_text(encoding="utf-8"))
    elif export is None:  # a built-in policy: the serving code's own commit
        from foundry_core.export import code_version

        meta = code_version()
    if export is not None and (export / "config.yaml").is_file():
        config = (export / "config.yaml").read_text(encoding="utf-8")
    else:
        config = yaml.safe_dump(json.loads(json.dumps(dict(metadata), default=str)), sort_keys=True)
    info = dict(runtime)
    for key in ("step", "created", "format_version"):
        if key in meta:
            info[f"export_{key}"] = str(meta[key])
    for key in ("cameras", "image_size", "action_fields", "proprio_fields", "chunk_size", "fps", "expert"):
        if metadata.get(key) is not None:
            value = metadata[key]
            info[key] = value if isinstance(value, str) else json.dumps(value)
    return lbm.PolicyMetadata(
        name=str(metadata.get("name") or "policy"),
        skill_type=str(metadata.get("skill_type") or "Undefined"),
        checkpoint_path=str(export.resolve()) if export is not None else checkpoint,
        git_repo=str(meta.get("git_repo") or metadata.get("git_repo") or ""),
        git_sha=str(meta.get("git_sha") or metadata.get("git_sha") or ""),
        raw_policy_config=config,
        is_language_conditioned=bool(metadata.get("is_language_conditioned", False)),
        runtime_information=info,
    )


class _Stats:
    """Counts steps for the periodic throughput log line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.steps = 0
        self.clients: set[str] = set()
        self.latency_ms: list[float] = []
        self.since = time.monotonic()


class LbmServicer(
    lbm_grpc.PolicyStepServiceServicer,
    lbm_grpc.PolicyResetServiceServicer,
    lbm_grpc.GetPolicyMetadataServiceServicer,
):
    """The three LBM services over :class:`PolicySessions` and an :class:`LbmLayout`."""

    def __init__(
        self, sessions: PolicySessions, layout: LbmLayout, metadata: lbm.PolicyMetadata, batcher: Any = None
    ) -> None:
        self.sessions = sessions
        self.layout = layout
        self.metadata = metadata
        self.batcher = batcher
        self.stats = _Stats()

    def PolicyReset(
        self, request: lbm.PolicyResetRequest, context: grpc.ServicerContext
    ) -> lbm.PolicyResetResponse:  # noqa: N802
        client = _client(request, context)
        try:
            self.sessions.reset(client, int(request.seed))
        except Exception:  # the policy's own reset failed: the client is told, the server keeps serving
            log.exception("PolicyReset(%s) failed", client)
            return lbm.PolicyResetResponse(success=False)
        log.info("reset client %s (seed %d); %d episode(s) open", client, request.seed, len(self.sessions))
        return lbm.PolicyResetResponse(success=True)

    def PolicyStep(
        self, request: lbm.PolicyStepRequest, context: grpc.ServicerContext
    ) -> lbm.PolicyStepResponse:  # noqa: N802
        client = _client(request, context)
        start = time.perf_counter()
        if not request.HasField("observation"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "observation: missing")
        try:
            observation = decode_observation(request.observation, self.layout)
        except RequestError as exc:
            log.warning("PolicyStep(%s) rejected: %s", client, exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            action = self.sessions.step(client, observation)
            response = lbm.PolicyStepResponse(
                success=True, action=encode_action(action, self.layout, request.observation.robot.desired)
            )
        except PolicyOutputError as exc:
            log.warning("PolicyStep(%s): unusable policy output, answering success=false: %s", client, exc)
            return lbm.PolicyStepResponse(success=False)
        except Exception as exc:
            abort_for_exception(context, "PolicyStep", client, exc)
        self._count(client, (time.perf_counter() - start) * 1000.0)
        return response

    def GetPolicyMetadata(  # noqa: N802
        self, request: lbm.GetPolicyMetadataRequest, context: grpc.ServicerContext
    ) -> lbm.GetPolicyMetadataResponse:
        return lbm.GetPolicyMetadataResponse(success=True, policy_metadata=self.metadata)

    def _count(self, client: str, ms: float) -> None:
        with self.stats.lock:
            stats = self.stats
            stats.steps += 1
            stats.clients.add(client)
            stats.latency_ms.append(ms)
            if stats.steps % LOG_EVERY:
                return
            elapsed = time.monotonic() - stats.since
            lat = sorted(stats.latency_ms)
            batch = f", mean batch {self.batcher.mean_batch_size:.2f}" if self.batcher is not None else ""
            log.info(
                "%d steps from %d client(s) in %.1f s (%.1f steps/s), step latency p50 %.1f ms p99 %.1f ms%s",
                LOG_EVERY,
                len(stats.clients),
                elapsed,
                LOG_EVERY / max(elapsed, 1e-9),
                lat[len(lat) // 2],
                lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                batch,
            )
            stats.clients, stats.latency_ms, stats.since = set(), [], time.monotonic()


class LbmPolicyServer:
    """A running LBM-protocol server (``port=0`` picks a free port). Use as a context manager."""

    def __init__(
        self,
        sessions: PolicySessions,
        layout: LbmLayout,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        max_workers: int = 32,
        batcher: Any = None,
        device: str = "cpu",
    ) -> None:
        self.sessions = sessions
        self.layout = layout
        self.batcher = batcher
        self.host = host
        self.metadata = policy_metadata(
            sessions.metadata(),
            {
                **runtime_information(device),
                **layout.describe(),
                "batch_max_size": str(batcher.max_size if batcher is not None else 1),
                "batch_timeout_s": str(batcher.timeout_s if batcher is not None else 0.0),
                "execute_steps": str(sessions.execute_steps),
                "ensemble": sessions.ensemble,
                "max_sessions": str(sessions.max_sessions),
            },
        )
        self.servicer = LbmServicer(sessions, layout, self.metadata, batcher)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), options=SERVER_OPTIONS
        )
        lbm_grpc.add_PolicyStepServiceServicer_to_server(self.servicer, self._server)
        lbm_grpc.add_PolicyResetServiceServicer_to_server(self.servicer, self._server)
        lbm_grpc.add_GetPolicyMetadataServiceServicer_to_server(self.servicer, self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = bind(self._server, host, port)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> LbmPolicyServer:
        self._server.start()
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        md = self.metadata
        log.info(
            "LBM policy server for %s (%s) listening on %s",
            md.name,
            md.checkpoint_path or "built-in",
            self.address,
        )
        for key, value in sorted(md.runtime_information.items()):
            if key.startswith(
                ("lbm_", "batch_", "device", "torch", "cuda", "execute", "ensemble", "max_sessions")
            ):
                log.info("  %s: %s", key, value)
        return self

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace_s: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self._server.stop(grace_s).wait()
        if self.batcher is not None:
            self.batcher.close()

    def __enter__(self) -> LbmPolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lbm_sessions(
    policy_factory: Callable[[], Any],
    *,
    execute_steps: int,
    max_sessions: int,
    batch_max_size: int = 1,
    batch_timeout_s: float = 0.5,
    ensemble: str = "none",
) -> tuple[PolicySessions, PlanBatcher | None]:
    """Episode sessions for the LBM server; the policy is loaded once, now.

    A foundry-action policy is loaded once and every episode gets a clone sharing its model (no
    copy of the weights per client), planning through one :class:`PlanBatcher`; any other
    ``interfaces.Policy`` gets one instance per open episode and is not batched.
    """
    if ensemble not in ("none", "temporal"):
        raise FoundryError(f"ensemble: {ensemble!r} is not 'none' or 'temporal'")
    first = policy_factory()
    pool = [first]
    if callable(getattr(first, "clone", None)) and hasattr(first, "model"):
        factory: Callable[[], Any] = lambda: pool.pop() if pool else first.clone()  # noqa: E731
        sessions = PolicySessions(
            factory,
            execute_steps=execute_steps,
            max_sessions=max_sessions,
            pose_actions=False,
            ensemble=ensemble,
        )
        batcher = PlanBatcher(batch_max_size, batch_timeout_s, live=lambda: sessions.active(ACTIVE_WITHIN_S))
        sessions.planner = batcher.plan
        return sessions, batcher
    if batch_max_size > 1:
        log.warning("%s cannot be batched across clients (not a foundry-action policy)", type(first).__name__)
    factory = lambda: pool.pop() if pool else policy_factory()  # noqa: E731
    return PolicySessions(
        factory, execute_steps=execute_steps, max_sessions=max_sessions, pose_actions=False, ensemble=ensemble
    ), None


def start_lbm_server(
    policy: str,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    device: str = "cpu",
    camera_map: str | None = None,
    execute_steps: int = 8,
    max_sessions: int = 64,
    batch_max_size: int = 1,
    batch_timeout_s: float = 0.5,
    resize: str = "center_crop",
    ensemble: str = "none",
    instruction: str = "",
    policy_factory: Callable[[], Any] | None = None,
) -> LbmPolicyServer:
    """Load ``policy`` (an export folder, or ``random``), check its layout, bind and start serving.

    Everything that can be wrong (the export, the camera map, the port) fails here, before the first
    client connects. ``policy_factory`` replaces the loader (tests serve in-memory policies).
    """
    import functools

    from foundry_eval.rollout.policies import RandomPolicy, load_exported_policy
    from foundry_eval.serving.lbm_camera_map import load_camera_map
    from foundry_eval.serving.lbm_codec import default_arms

    cmap = load_camera_map(camera_map) if camera_map else None
    if policy_factory is None:
        if policy == "random":
            arms = cmap.arms if cmap and cmap.arms else default_arms(2)
            policy_factory = functools.partial(RandomPolicy, action_dim=10 * len(arms))
        else:
            policy_factory = functools.partial(load_exported_policy, policy, device)
    sessions, batcher = lbm_sessions(
        policy_factory,
        execute_steps=execute_steps,
        max_sessions=max_sessions,
        batch_max_size=batch_max_size,
        batch_timeout_s=batch_timeout_s,
        ensemble=ensemble,
    )
    try:
        layout = LbmLayout.from_metadata(sessions.metadata(), cmap, resize=resize)
        layout.default_instruction = instruction
        server = LbmPolicyServer(sessions, layout, host=host, port=port, batcher=batcher, device=device)
    except BaseException:
        if batcher is not None:
            batcher.close()
        raise
    return server.start()
