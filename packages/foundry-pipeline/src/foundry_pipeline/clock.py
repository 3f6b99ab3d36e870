"""Where a stage's wall time went: CPU time of this process and its children, and the hypervisor's steal.

Why: on a shared virtual machine the same stage's wall time drifts by half or more from hour to hour
(measured here: one VLM step 0.10 s, then 0.15 s, then 0.4-0.9 s while ``top`` showed 67% ``st``).
Wall time alone then cannot say whether a run fits its budget, so every stage's marker also records
the CPU seconds it used and the share of its CPUs' busy time that the hypervisor stole (Linux
``/proc/stat``, the ``steal`` column; ``None`` elsewhere). The report and the final line show both.
Test: ``uv run pytest packages/foundry-pipeline/tests/test_clock.py``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Reading:
    wall: float
    cpu: float  #: user + system seconds of this process and of its children that have been waited for
    busy_ticks: int | None  #: machine-wide ticks of every state but idle/iowait (steal included)
    steal_ticks: int | None


def cpu_ticks(stat: Path = PROC_STAT) -> tuple[int, int] | None:
    """(busy, steal) ticks summed over all CPUs since boot, from the ``cpu`` line of ``/proc/stat``;
    None where there is no such file (not Linux) or it has no steal column (very old kernels)."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if len(first) < 9 or first[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return user + nice + system + irq + softirq + steal, steal


def read(stat: Path = PROC_STAT) -> Reading:
    t = os.times()
    ticks = cpu_ticks(stat)
    return Reading(
        wall=time.perf_counter(),
        cpu=t.user + t.system + t.children_user + t.children_system,
        busy_ticks=ticks[0] if ticks else None,
        steal_ticks=ticks[1] if ticks else None,
    )


def since(start: Reading, end: Reading | None = None) -> dict[str, Any]:
    """``seconds`` (wall), ``cpu_seconds`` and ``steal_share`` (0..1 or None) between two readings."""
    end = end or read()
    out: dict[str, Any] = {"seconds": round(end.wall - start.wall, 1), "cpu_seconds": round(end.cpu - start.cpu, 1)}
    share = None
    if start.busy_ticks is not None and end.busy_ticks is not None:
        busy = end.busy_ticks - start.busy_ticks
        share = round((end.steal_ticks - start.steal_ticks) / busy, 3) if busy > 0 else 0.0
    out["steal_share"] = share
    return out


def totals(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Wall seconds of the finished stages (a side-by-side group counts once, its longest member), their
    summed CPU seconds and their steal share weighted by CPU seconds."""
    wall, groups = 0.0, set()
    for name, info in stages.items():
        group = frozenset([name, *info.get("side_by_side_with", [])])
        if group not in groups:
            groups.add(group)
            wall += max(float(stages[s].get("seconds", 0.0)) for s in group if s in stages)
    cpu = sum(float(i.get("cpu_seconds", 0.0)) for i in stages.values())
    known = [(float(i["steal_share"]), float(i.get("cpu_seconds", 0.0))) for i in stages.values() if i.get("steal_share") is not None]
    weight = sum(w for _, w in known)
    share = round(sum(s * w for s, w in known) / weight, 3) if weight > 0 else None
    return {"seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "steal_share": share}


def describe(timing: dict[str, Any]) -> str:
    """`` (CPU 212 s, the hypervisor stole 31% of the busy CPU time)``: what to add after a wall time; empty without data."""
    parts = []
    if timing.get("cpu_seconds") is not None:
        parts.append(f"CPU {float(timing['cpu_seconds']):.0f} s")
    share = timing.get("steal_share")
    if share is not None and share >= 0.05:
        parts.append(f"the hypervisor stole {share:.0%} of the busy CPU time")
    return f" ({', '.join(parts)})" if parts else ""
