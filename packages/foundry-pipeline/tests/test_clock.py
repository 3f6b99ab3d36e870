"""Stage timing: CPU seconds and the hypervisor's steal share beside the wall time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from foundry_pipeline import clock


def _stat(tmp_path: Path, user: int, idle: int, steal: int) -> Path:
    path = tmp_path / "stat"
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {user} 0 10 {idle} 5 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    return path


def test_steal_share_is_steal_over_busy_ticks(tmp_path: Path) -> None:
    start = clock.read(_stat(tmp_path, user=100, idle=1000, steal=0))
    end = clock.read(_stat(tmp_path, user=400, idle=1500, steal=100))
    # busy went from 110 to 510 (user + system + steal): 100 of its 400 new ticks were stolen
    assert clock.since(start, end)["steal_share"] == 0.25


def test_no_proc_stat_gives_no_share(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    assert clock.cpu_ticks(missing) is None
    assert clock.since(clock.read(missing), clock.read(missing))["steal_share"] is None
    (tmp_path / "odd").write_text("intr 1 2 3\n")
    assert clock.cpu_ticks(tmp_path / "odd") is None


def test_cpu_seconds_count_a_reaped_child() -> None:
    """Accounting, not speed: the child burns until its own clock shows CPU time, reports it, and the
    parent's reading after reaping it holds at least that much (the child's, not this process's idle wait)."""
    child = (
        "import os\n"
        "while os.times().user + os.times().system < 0.05: pass\n"
        "t = os.times(); print(t.user + t.system)"
    )
    start = clock.read()
    out = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, text=True).stdout
    end = clock.read()
    child_cpu = float(out)
    assert child_cpu >= 0.05
    tick = 1.0 / os.sysconf("SC_CLK_TCK")  # os.times() counts whole clock ticks
    assert end.cpu - start.cpu >= child_cpu - tick
    assert clock.since(start, end)["cpu_seconds"] == round(end.cpu - start.cpu, 1)


def test_totals_count_a_side_by_side_group_once_in_wall_time() -> None:
    stages = {
        "llm": {"seconds": 100.0, "cpu_seconds": 190.0, "steal_share": 0.0},
        "vla": {"seconds": 300.0, "cpu_seconds": 290.0, "steal_share": 0.5, "side_by_side_with": ["scratch"]},
        "scratch": {"seconds": 320.0, "cpu_seconds": 300.0, "steal_share": 0.5, "side_by_side_with": ["vla"]},
        "report": {"seconds": 5.0},
    }
    total = clock.totals(stages)
    assert total["seconds"] == 425.0
    assert total["cpu_seconds"] == 780.0
    assert total["steal_share"] == round(0.5 * 590 / 780, 3)


def test_describe_mentions_steal_only_when_it_matters() -> None:
    assert "hypervisor stole 30%" in clock.describe({"cpu_seconds": 10.0, "steal_share": 0.3})
    assert "hypervisor" not in clock.describe({"cpu_seconds": 10.0, "steal_share": 0.01})
    assert clock.describe({}) == ""
