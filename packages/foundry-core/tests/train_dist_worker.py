"""torchrun worker for test_train_distributed.py: DDP, FSDP2 and a rank-divergent data run in one launch.

Usage: torchrun --nproc_per_node=2 train_dist_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from foundry_core.hookspecs import hookimpl
from foundry_core.plugins import make_plugin_manager
from foundry_core.testing import run_config
from foundry_core.train.run import train_from_config


class RankSkewedSource:
    """Rank r yields 3 + 2r batches, then ends: ranks disagree about when data runs out."""

    modality = "regression"

    @dataclass(kw_only=True)
    class Config:
        in_dim: int = 16

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.done = 0

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls(cfg)

    def batches(self, batch_size, *, rank, world_size, seed):
        g = torch.Generator().manual_seed(seed + rank)
        while self.done < 3 + 2 * rank:
            self.done += 1
            yield {
                "modality": "regression",
                "x": torch.randn(batch_size, self.cfg.in_dim, generator=g),
                "y": torch.randn(batch_size, 1, generator=g),
            }

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = int(state["done"])


class DtypeReport:
    """Callback: after step 1, write the dtypes of parameters, gradients' owners and optimizer state."""

    @dataclass(kw_only=True)
    class Config:
        path: str

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls(cfg)

    def on_step_end(self, trainer, metrics):
        if trainer.state.step != 1:
            return
        params = {str(p.dtype) for p in trainer.model.parameters()}
        optim = {str(v.dtype) for s in trainer.optimizer.state.values() for k, v in s.items() if k != "step"}
        Path(f"{self.cfg.path}.rank{os.environ['RANK']}.json").write_text(
            json.dumps({"params": sorted(params), "optim": sorted(optim)})
        )


@hookimpl
def register_data_sources(register):
    register("rank_skewed", RankSkewedSource)


@hookimpl
def register_callbacks(register):
    register("dtype_report", DtypeReport)


plugin = types.SimpleNamespace(
    register_data_sources=register_data_sources, register_callbacks=register_callbacks
)


def config(out: Path, strategy: str, source: dict, steps: int = 8) -> dict:
    return run_config(
        out, source=source, steps=steps, per_device=2, run={"name": strategy, "seed": 3},
        train={"schedule": {"name": "cosine", "warmup": 2}, "checkpoint": {"every_steps": 6, "keep_last": 3}},
        distributed={"strategy": strategy},
    )


def lm_config(out: Path, strategy: str, steps: int = 4) -> dict:
    """The tied debug transformer (fused head + loss, tied-embedding gradient hand-over) on real text."""
    text = {"name": "wds_text_untokenized", "corpus": "pydoc_topics", "tokenizer": "byte", "seq_len": 64,
            "split": "train"}
    cfg = config(out, strategy, text, steps=steps)
    cfg["run"]["name"] = f"lm_{strategy}"
    cfg["model"] = {"name": "transformer", "preset": "debug", "max_seq_len": 64, "tokenizer": "byte"}
    cfg["train"]["optim"]["lr"] = 3.0e-3
    return cfg


def main() -> None:
    out = Path(sys.argv[1])
    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(plugin, name="dist-test")
    synthetic = {"name": "synthetic_regression", "num_samples": 256}
    train_from_config(config(out / "ddp", "ddp", synthetic), pm=pm)
    train_from_config(config(out / "fsdp2", "fsdp2", synthetic), pm=pm)
    for strategy in ("ddp", "fsdp2"):  # bf16 means the same under both: fp32 masters, bf16 autocast
        bf16 = config(out / f"bf16_{strategy}", strategy, synthetic, steps=3)
        bf16["train"]["precision"] = "bf16"
        bf16["train"]["callbacks"] = [{"name": "dtype_report", "path": str(out / f"bf16_{strategy}_dtypes")}]
        train_from_config(bf16, pm=pm)
    for strategy in ("ddp", "fsdp2"):
        train_from_config(lm_config(out / f"lm_{strategy}", strategy), pm=pm)
    skewed = config(out / "skewed", "ddp", {"name": "rank_skewed"}, steps=100)
    skewed["train"]["batch"] = {"global": 4, "per_device": 2}
    run_dir = train_from_config(skewed, pm=pm)
    rank = int(os.environ["RANK"])
    steps = (
        [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        if rank == 0
        else []
    )
    (out / f"skewed_rank{rank}.json").write_text(json.dumps({"done": True, "logged_steps": steps}))


if __name__ == "__main__":
    main()
