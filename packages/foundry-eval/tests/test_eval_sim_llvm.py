"""A process that renders Drake scenes can afterwards use torch's compiler stack (triton) safely."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
from foundry_core.plugins import get_registry
env = get_registry().build("task", {"name": "push_to_target", "cameras": ["scene"], "image_size": 32})
env.reset(0)
import torch
torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())  # imports torch._dynamo -> triton
print("ok")
"""


def test_render_then_torch_optimizer_does_not_crash():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.strip().endswith("ok")
