"""Metrics: sinks (metrics.jsonl always, TensorBoard, W&B offline), MFU peak FLOPs, loss-curve PNG.

Peak FLOP/s: a table of dense bf16 tensor-core peaks for known GPUs (``known=False`` flags an
unknown one); on CPU a matmul probe measured once and cached in ``~/.cache/foundry``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("foundry")

#: Dense (no sparsity) bf16 peak FLOP/s per GPU; matched by substring of the device name, first hit wins.
GPU_PEAK_BF16: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foundry"


def measure_cpu_matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    """fp32 matmul FLOP/s measured now: the best of ``repeats`` n×n products into a preallocated output.

    The output is preallocated because a fresh 16 MB result is a new mmap on every call, and its page
    faults halved the measured peak (which once put a benchmark's MFU above 1).
    """
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def cpu_peak_flops() -> float:
    """fp32 matmul FLOP/s of this CPU with the current thread count, measured once and cached."""
    key = f"mm2048-{platform.processor() or platform.machine()}-{os.cpu_count()}cpu-{torch.get_num_threads()}threads"
    path = cache_dir() / "cpu_peak_flops.json"
    table: dict[str, float] = {}
    if path.is_file():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
    if key not in table:
        table[key] = measure_cpu_matmul_flops()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table, indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.warning("could not cache the CPU peak FLOP/s at %s: %s", path, exc)
    return float(table[key])


def peak_flops(device: torch.device) -> tuple[float, bool, str]:
    """(peak FLOP/s of one device, known?, device name)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_BF16:
            if key in name:
                return value, True, name
        return 0.0, False, name
    return cpu_peak_flops(), True, f"cpu ({torch.get_num_threads()} threads, measured)"


class MetricsWriter:
    """Rank 0's metric sinks. ``log(step, values)`` writes one JSON line and forwards to the others."""

    def __init__(
        self, run_dir: Path, sinks: list[str], *, enabled: bool, run_name: str, config: dict[str, Any]
    ):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self._file = self.path.open("a")
        if "tensorboard" in sinks:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in sinks:
            try:
                import wandb
            except ImportError:
                log.warning(
                    "train.metrics has 'wandb' but wandb is not installed (pip install foundry-core[wandb]); skipping it"
                )
            else:
                os.environ.setdefault("WANDB_MODE", "offline")
                self._wandb = wandb.init(project="foundry", name=run_name, dir=str(run_dir), config=config)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in numbers.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(metrics_path: Path, out_png: Path) -> None:
    """Loss (and validation loss) against step, from every line of ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted({k for r in rows for k in r if k == "loss" or k.startswith(("loss/", "val/"))}):
        if key.startswith("val/") and not key.endswith("/loss"):
            continue
        pts = sorted({r["step"]: r[key] for r in rows if key in r}.items())
        if pts:
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], label=key, marker="." if len(pts) < 50 else None
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
