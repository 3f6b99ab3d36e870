"""Per-episode policy state, shared by the gRPC server and the in-process adapter.

A *session* is one simulated episode (one client id): a policy instance plus foundry-action's
``ChunkExecutor`` (run ``execute_steps`` actions of each predicted chunk, then ask the policy again),
the same executor the policy runtime uses, with the server's checks of every chunk and action.
:class:`PolicySessions` maps client ids to sessions and recycles policy instances: the factory is
called only when no idle instance exists, so a runner worker loads its policy once, and a server
facing N parallel simulations holds N instances. Sessions are released by ``end(client_id)`` or,
for clients that never call it (LBM Eval), evicted least-recently-used beyond ``max_sessions``.

:class:`InProcessClient` and :class:`foundry_eval.serving.client.GrpcPolicyClient` expose the same
:class:`PolicyClient` interface, so the rollout runner has one code path for both.
Tested by ``tests/test_eval_serving.py``.
"""

from __future__ import annotations

import functools
import random
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from foundry_core.interfaces import Policy
from foundry_eval.serving.codec import ARM_DIM, PolicyOutputError, canonical_action, normalize_metadata

PolicyFactory = Callable[[], Policy]
DEFAULT_EXECUTE_STEPS = 8


class PolicyClient(Protocol):
    """What the rollout runner talks to: in-process or over gRPC."""

    def reset(self, client_id: str, seed: int) -> None: ...

    def step(self, client_id: str, observation: Mapping[str, Any], time_s: float = 0.0) -> np.ndarray:
        """One float32 [A] action; raises PolicyOutputError when the policy's output is unusable."""
        ...

    def end(self, client_id: str) -> None: ...

    def metadata(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def validate_chunk(chunk: Any, pose_actions: bool = True) -> np.ndarray:
    """A policy's output -> float32 [H, A]; raises PolicyOutputError for wrong shapes, dtypes or NaN.

    ``pose_actions``: A must be 10 per arm (xyz, rot6d, gripper); off for tasks with their own action
    vectors (e.g. Meta-World's 4-D displacement commands)."""
    if hasattr(chunk, "detach"):  # a torch tensor, possibly on an accelerator
        chunk = chunk.detach().float().cpu().numpy()
    try:
        arr = np.asarray(chunk)
    except (TypeError, ValueError) as exc:
        raise PolicyOutputError(f"policy returned {type(chunk).__name__}, not an array: {exc}") from None
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise PolicyOutputError(f"policy returned an action chunk of dtype {arr.dtype}; expected float32")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0 or (pose_actions and arr.shape[1] % ARM_DIM):
        raise PolicyOutputError(
            f"policy returned an action chunk of shape {list(arr.shape)}; expected [H, A] with H >= 1 and "
            f"A a multiple of {ARM_DIM} (xyz, rot6d, gripper per arm)"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = sorted({int(r) for r in np.nonzero(bad)[0]})
        raise PolicyOutputError(f"policy returned non-finite values (NaN/inf) in chunk rows {rows}")
    return arr.astype(np.float32)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a policy may draw from (python, numpy, torch if loaded) for reproducibility."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


class Session:
    """One episode of one client: the policy, foundry-action's chunk executor with the server's output
    checks (every chunk validated, every action canonical), and the episode seed spread to every RNG."""

    def __init__(
        self, policy: Policy, execute_steps: int = DEFAULT_EXECUTE_STEPS, pose_actions: bool = True
    ) -> None:
        from foundry_action.executor import ChunkExecutor

        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        future = getattr(policy, "future", None)
        if future is not None:  # a chunk length the executor checks: ask for at most that many steps
            execute_steps = min(execute_steps, int(future) + 1)
        self.policy = policy
        self.pose_actions = pose_actions
        check = functools.partial(validate_chunk, pose_actions=pose_actions)
        self.executor = ChunkExecutor(policy, execute_steps=execute_steps, check_chunk=check)

    def reset(self, seed: int) -> None:
        seed_everything(seed)
        self.executor.reset(seed)

    def step(self, observation: Mapping[str, Any]) -> np.ndarray:
        action = self.executor.step(observation)
        return canonical_action(action) if self.pose_actions else action


class PolicySessions:
    """Client id -> session, with policy instances recycled through an idle pool (thread-safe)."""

    def __init__(
        self,
        policy_factory: PolicyFactory,
        *,
        execute_steps: int = DEFAULT_EXECUTE_STEPS,
        max_sessions: int = 64,
        allow_extra_cameras: bool = False,
        pose_actions: bool = True,
    ) -> None:
        self.policy_factory = policy_factory
        self.pose_actions = pose_actions
        self.allow_extra_cameras = allow_extra_cameras
        self.execute_steps = execute_steps
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._idle: list[Policy] = []
        self._metadata: dict[str, Any] | None = None

    def _take_policy(self) -> Policy:
        """Called with the lock held."""
        if self._idle:
            return self._idle.pop()
        if len(self._sessions) >= self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            return oldest.policy
        return self.policy_factory()

    def reset(self, client_id: str, seed: int) -> None:
        with self._lock:
            session = self._sessions.get(client_id)
            if session is None:
                session = Session(self._take_policy(), self.execute_steps, self.pose_actions)
                self._sessions[client_id] = session
            self._sessions.move_to_end(client_id)
        session.reset(seed)

    def step(self, client_id: str, observation: Mapping[str, Any]) -> np.ndarray:
        with self._lock:
            session = self._sessions.get(client_id)
            if session is None:
                raise KeyError(client_id)
            self._sessions.move_to_end(client_id)
        return session.step(observation)

    def end(self, client_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(client_id, None)
            if session is not None:
                self._idle.append(session.policy)

    def metadata(self) -> dict[str, Any]:
        """The policy's raw ``metadata()`` (cached; loads one idle instance if none exists yet)."""
        with self._lock:
            if self._metadata is None:
                if self._sessions:
                    policy = next(iter(self._sessions.values())).policy
                else:
                    policy = self._take_policy()
                    self._idle.append(policy)
                self._metadata = dict(policy.metadata())
            return self._metadata

    def __len__(self) -> int:
        return len(self._sessions)


class InProcessClient:
    """The :class:`PolicyClient` interface over local :class:`PolicySessions` (no network)."""

    def __init__(self, sessions: PolicySessions) -> None:
        self.sessions = sessions

    def reset(self, client_id: str, seed: int) -> None:
        self.sessions.reset(client_id, seed)

    def step(self, client_id: str, observation: Mapping[str, Any], time_s: float = 0.0) -> np.ndarray:
        try:
            return self.sessions.step(client_id, observation)
        except KeyError:
            raise RuntimeError(f"client_id {client_id!r}: step before reset") from None

    def end(self, client_id: str) -> None:
        self.sessions.end(client_id)

    def metadata(self) -> dict[str, Any]:
        return normalize_metadata(self.sessions.metadata())

    def close(self) -> None:
        return None
