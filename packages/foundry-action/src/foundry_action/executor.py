"""The chunk executor: one action per control step from a policy's action chunks.

Receding horizon (execute ``execute_steps`` of each chunk's steps, then re-plan) or temporal
ensembling (re-plan every step, average all predictions for the step with weights
``exp(-decay * age_rank)``, oldest first, as in ACT). The policy runtime and the policy server
(foundry-eval's sessions) use this one class. NumPy only, so a server of a non-torch policy stays light.
Test: ``uv run pytest packages/foundry-action/tests/test_action_policy.py`` and
``packages/foundry-eval/tests/test_eval_rollout.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np


class ChunkExecutor:
    """One action per control step from a policy's chunks (receding horizon or temporal ensembling).

    The one executor of the project: the policy runtime and the policy server both use it. A
    :class:`Policy` (``observe``/``plan``/``record_action``) observes every step and gets the executed
    actions pinned as context; any other ``interfaces.Policy`` is asked ``act(obs) -> chunk [chunk_size, A]``
    when a new chunk is needed. ``check_chunk`` (the server's output validation) sees every new chunk.
    """

    def __init__(
        self,
        policy: Any,
        *,
        execute_steps: int | None = None,
        ensemble: Literal["none", "temporal"] = "none",
        ensemble_decay: float = 0.01,
        record_actions: bool = True,
        check_chunk: Callable[[Any], np.ndarray] | None = None,
        planner: Callable[[Any], np.ndarray] | None = None,
    ) -> None:
        self.observes = all(hasattr(policy, n) for n in ("observe", "plan", "record_action", "future"))
        chunk_size = policy.future + 1 if self.observes else None
        if execute_steps is None and chunk_size is None:
            raise ValueError("execute_steps is required for a policy without a known chunk size")
        self.execute_steps = int(chunk_size if execute_steps is None else execute_steps)
        if self.execute_steps < 1 or (chunk_size is not None and self.execute_steps > chunk_size):
            raise ValueError(
                f"execute_steps must be in [1, {chunk_size or 'chunk_size'}] (the chunk size), got {execute_steps}"
            )
        if ensemble not in ("none", "temporal"):
            raise ValueError(f"ensemble must be 'none' or 'temporal', got {ensemble!r}")
        self.policy = policy
        self.ensemble = ensemble
        self.decay = float(ensemble_decay)
        self.record_actions = record_actions and self.observes
        self.check_chunk = check_chunk
        #: how an observing policy's chunk is computed: ``policy.plan()``, or a server's cross-client batcher
        self.planner = planner
        self.plans = 0
        self._queue: deque[np.ndarray] = deque()
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start step, chunk), oldest first
        self._t = -1

    def reset(self, seed: int | None = None) -> None:
        """New episode: forget queued actions; a seed reaches the policy (``reset(seed)`` or ``seed(seed)``)."""
        if self.observes:
            self.policy.reset(seed)
        else:
            self.policy.reset()
            seeder = getattr(self.policy, "seed", None)
            if seed is not None and callable(seeder):
                seeder(seed)
        self._queue = deque()
        self._chunks = []
        self._t = -1

    def _new_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        if self.observes:
            chunk = self.planner(self.policy) if self.planner is not None else self.policy.plan()
        else:
            chunk = self.policy.act(observation)
        self.plans += 1
        return self.check_chunk(chunk) if self.check_chunk is not None else np.asarray(chunk, dtype=np.float32)

    def step(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The absolute action float32 [A] to execute at this control step."""
        if self.observes:
            self.policy.observe(observation)  # first: a rejected observation leaves the episode as it was
        self._t += 1
        if self.ensemble == "temporal":
            self._chunks.append((self._t, self._new_chunk(observation)))
            self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > self._t]
            preds = np.stack([c[self._t - s] for s, c in self._chunks])
            w = np.exp(-self.decay * np.arange(len(preds)))
            action = (w[:, None] * preds).sum(0) / w.sum()
        else:
            if not self._queue:
                self._queue.extend(self._new_chunk(observation)[: self.execute_steps])
            action = self._queue.popleft()
        action = np.asarray(action, dtype=np.float32)
        if self.record_actions:
            self.policy.record_action(action)
        return action
