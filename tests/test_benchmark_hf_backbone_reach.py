"""``benchmarks/hf_backbone_reach.py --quick``: the whole HF-backbone vs foundry_vlm closed-loop path (demos,
two trainings, two evaluations, intervals) runs and reports both backbones. Slow (about a minute)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pydrake")
pytest.importorskip("foundry_vision")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hf_backbone_reach.py"


@pytest.mark.slow
def test_quick_mode_trains_and_evaluates_both_backbones():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = dict(re.findall(r"^(foundry_vlm|hf_qwen3_vl)\s+\S+M\s+\S+\s+(\d/1)\s", res.stdout, flags=re.M))
    assert set(rows) == {"foundry_vlm", "hf_qwen3_vl"}, res.stdout
    assert re.search(
        r"ratio hf_qwen3_vl / foundry_vlm: .*with rates \(s\+1\)/\(n\+2\): \d+\.\d\d", res.stdout
    )
