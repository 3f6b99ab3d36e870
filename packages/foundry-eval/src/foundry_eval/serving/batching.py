"""Cross-client batching: the plan requests of concurrent episodes become one forward pass.

Each gRPC handler thread calls :meth:`PlanBatcher.plan` for its episode's policy (a clone sharing
the served model) and blocks. One worker thread takes the first waiting request, collects more for
up to ``timeout_s`` or until ``max_size`` are waiting (or as many as ``live()``, the recently active
episodes: no point waiting for clients that are gone), runs foundry-action's ``plan_batch`` once and
hands every thread its own chunk. Seeded episodes draw noise from their own generators, so a
client's actions do not depend on which other clients shared its batch. ``max_size = 1`` runs each
request as soon as it arrives (no waiting). The single worker also serializes model calls, so the
model is never run from two threads at once. Tested by ``tests/test_eval_serving_lbm.py``;
measured by ``benchmarks/serve_latency.py``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class PlanBatcher:
    """Collects ``plan`` requests from many threads into ``plan_batch`` calls (see module docstring)."""

    def __init__(
        self, max_size: int = 1, timeout_s: float = 0.5, live: Callable[[], int] | None = None
    ) -> None:
        if max_size < 1:
            raise ValueError(f"batch max size must be >= 1, got {max_size}")
        if timeout_s < 0:
            raise ValueError(f"batch timeout must be >= 0 s, got {timeout_s}")
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.live = live  # recently active episodes: a batch holding all of them need not wait
        self._queue: queue.Queue[tuple[Any, Future] | None] = queue.Queue()
        self.batches = 0
        self.planned = 0
        self._thread = threading.Thread(target=self._run, name="plan-batcher", daemon=True)
        self._thread.start()

    def plan(self, policy: Any) -> np.ndarray:
        """The absolute chunk of ``policy`` (after its ``observe``), computed in a shared batch."""
        done: Future = Future()
        self._queue.put((policy, done))
        return done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    @property
    def mean_batch_size(self) -> float:
        return self.planned / self.batches if self.batches else 0.0

    def _collect(self, first: tuple[Any, Future]) -> tuple[list[tuple[Any, Future]], bool]:
        items, deadline = [first], time.monotonic() + self.timeout_s
        while len(items) < self.max_size:
            if self.live is not None and len(items) >= self.live() and self._queue.empty():
                break
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(left, 0.0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        return items, False

    def _run(self) -> None:
        from foundry_action.policy import plan_batch

        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            items, stop = self._collect(first)
            # several steps of one episode cannot share a batch (the server runs one Step per client at a time)
            try:
                chunks = plan_batch([policy for policy, _ in items])
            except BaseException as exc:  # every waiting client gets the error; the worker keeps serving
                for _, done in items:
                    done.set_exception(exc)
                continue
            self.batches += 1
            self.planned += len(items)
            for (_, done), chunk in zip(items, chunks):
                done.set_result(chunk)
