"""Subprocess worker of test_faults_checkpoint.py: train, and SIGKILL this process at one named point.

Usage: python faults_checkpoint_worker.py CONFIG_JSON POINT KILL_STEP [RESUME]
POINT names where the kill lands while checkpoint KILL_STEP is saved or uploaded (see ``arm``); ``none``
trains without a kill. Under torchrun (``--dist``), rank 1 kills itself after step KILL_STEP on the first
attempt only, and every attempt resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

from foundry_core.plugins import make_plugin_manager
from foundry_core.train import checkpoint as ckpt_mod
from foundry_core.train import checkpoint_integrity as integrity
from foundry_core.train import remote as remote_mod
from foundry_core.train.run import train_from_config

ARMED = {"on": False}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: finally blocks and atexit never run


def kill_on_call(owner, name: str, after: int = 0) -> None:
    """Replace ``owner.name`` so that its ``after + 1``-th call while armed kills the process."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        if ARMED["on"]:
            calls["n"] += 1
            if calls["n"] > after:
                die()
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def arm(point: str, kill_step: int) -> None:
    real_save = ckpt_mod.save_checkpoint

    def save(root, step, *args, **kwargs):
        ARMED["on"] = step == kill_step
        try:
            return real_save(root, step, *args, **kwargs)
        finally:
            ARMED["on"] = ARMED["on"] and point == "during_prune"  # prune runs right after the save

    ckpt_mod.save_checkpoint = save
    if point == "mid_shard":  # DCP writes each tensor with torch.save: die inside the shard file
        kill_on_call(torch, "save", after=3)
    elif point == "rank_state":
        kill_on_call(ckpt_mod, "_write_rank_state")
    elif point == "before_manifest":
        kill_on_call(ckpt_mod, "write_manifest")
    elif point == "mid_manifest":  # the temp manifest is written, not yet moved into place
        kill_on_call(Path, "replace")
    elif point == "before_rename":  # complete with its manifest, not yet renamed from .tmp_step_*
        real_manifest = integrity.write_manifest

        def manifest_then_arm_rename(folder):
            out = real_manifest(folder)
            kill_on_call(Path, "rename")  # DCP renames .metadata earlier: arm only now
            return out

        ckpt_mod.write_manifest = manifest_then_arm_rename
    elif point == "during_prune":  # the new checkpoint is in place; an old one is half deleted
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            if ARMED["on"] and "step_" in Path(path).name and Path(path).is_dir():
                next(p for p in Path(path).iterdir() if p.suffix == ".distcp").unlink()
                die()
            return real_rmtree(path, *args, **kwargs)

        ckpt_mod.shutil.rmtree = rmtree
    elif point == "mid_upload":  # the background upload of checkpoint kill_step dies after one file
        real_upload = remote_mod.upload_dir

        def upload(fs, local, remote):
            if Path(local).name == ckpt_mod.step_dir_name(kill_step):
                real_put, calls = fs.put_file, {"n": 0}

                def put(*a, **kw):
                    calls["n"] += 1
                    if calls["n"] > 1:
                        die()
                    return real_put(*a, **kw)

                fs.put_file = put
            return real_upload(fs, local, remote)

        remote_mod.upload_dir = upload
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")


class KillRankAfterStep:
    """torchrun: on the first attempt, rank 1 dies right after step ``kill_step`` (no save, no cleanup)."""

    def __init__(self, kill_step: int) -> None:
        self.kill_step = kill_step

    def on_step_end(self, trainer, out) -> None:
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first_attempt and trainer.info.rank == 1 and trainer.state.step == self.kill_step:
            die()


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--dist"]
    cfg, point, kill_step = json.loads(Path(args[0]).read_text()), args[1], int(args[2])
    resume = args[3] if len(args) > 3 else None
    torch.set_num_threads(1)
    pm = make_plugin_manager(entry_points_enabled=False)
    if "--dist" in sys.argv:
        import types
        from dataclasses import dataclass

        from foundry_core.hookspecs import hookimpl

        class Killer(KillRankAfterStep):
            @dataclass
            class Config:
                pass

            @classmethod
            def from_config(cls, cfg, ctx):
                return cls(kill_step)

        @hookimpl
        def register_callbacks(register):
            register("kill_rank_after_step", Killer)

        pm.register(types.SimpleNamespace(register_callbacks=register_callbacks), name="faults")
        cfg["train"]["callbacks"] = [{"name": "kill_rank_after_step"}]
    else:
        arm(point, kill_step)
    train_from_config(cfg, resume=resume, pm=pm)


if __name__ == "__main__":
    main()
