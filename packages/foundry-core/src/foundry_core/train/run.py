"""Entry points: ``run`` (the ``foundry train`` command) and ``train_from_config`` (programmatic).

The run directory (``run.out_dir`` or ``runs/<run.name>``) receives ``config.resolved.yaml`` (the
latest invocation's config), ``configs/<UTC time>.yaml`` (every invocation's, never overwritten),
``plugins.json``, ``metrics.jsonl``, ``checkpoints/``, ``export/``, ``loss.png`` and ``tensorboard/``.
A stop signal ends the run with :class:`~foundry_core.errors.Interrupted` (exit 130 for Ctrl-C) whose
message says which checkpoint was written.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundry_core.config import dump_yaml, parse_dataclass, resolve_config, to_dict
from foundry_core.errors import FoundryError, Interrupted
from foundry_core.registry import collect
from foundry_core.run_config import RunConfig

log = logging.getLogger("foundry")


def run(
    config_path: str,
    overrides: Sequence[str],
    resume: str | None = None,
    pm: Any = None,
    *,
    trust_checkpoint: bool = False,
) -> Path:
    """Resolve ``config_path`` + dotted overrides and train (used by ``foundry train``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raw = resolve_config(config_path, overrides)
    return train_from_config(raw, resume=resume, pm=pm, trust_checkpoint=trust_checkpoint)


def train_from_config(
    raw_cfg: dict[str, Any], *, resume: str | None = None, pm: Any = None, trust_checkpoint: bool = False
) -> Path:
    """Validate ``raw_cfg`` against the run schema, train, and return the run directory.

    ``trust_checkpoint`` allows resuming from a checkpoint without a checksum manifest (its folder is
    known to be yours); one whose manifest does not match is refused regardless.
    """
    from foundry_core.plugins import plugin_infos, plugin_manager
    from foundry_core.train.trainer import Trainer, run_dir_of

    pm = pm if pm is not None else plugin_manager()
    registry = collect(pm)
    cfg = parse_dataclass(RunConfig, raw_cfg, where="", resolve=registry.config_class)
    run_dir = run_dir_of(cfg)
    trainer = Trainer(cfg, registry, pm=pm)
    started = time.gmtime()
    try:
        trainer.build(resume=resume, trust_checkpoint=trust_checkpoint)
        if trainer.info.is_main:
            text = dump_yaml(to_dict(cfg))
            (run_dir / "config.resolved.yaml").write_text(text)
            _keep_invocation_config(run_dir, text, started, trainer.last_checkpoint if resume else None)
            infos = [{**i.__dict__, "hooks": list(i.hooks)} for i in plugin_infos(pm)]
            (run_dir / "plugins.json").write_text(json.dumps(infos, indent=2))
        try:
            trainer.fit()
        except KeyboardInterrupt:  # a second Ctrl-C while the first one's checkpoint was being written
            last = trainer.last_checkpoint
            raise Interrupted(
                f"interrupted at step {trainer.state.step}: no checkpoint of this step was written and nothing "
                f"was exported; the last checkpoint is {last or 'none'}"
            ) from None
    finally:
        trainer.close()
    if trainer.stop_signal is not None:
        name = signal.Signals(trainer.stop_signal).name
        raise Interrupted(
            f"stopped by {name} at step {trainer.state.step}: checkpoint {trainer.last_checkpoint} written, "
            f"nothing exported; continue with --resume latest",
            trainer.stop_signal,
        )
    return run_dir


def _keep_invocation_config(
    run_dir: Path, text: str, started: time.struct_time, resumed: Path | None
) -> Path:
    """``configs/<UTC start time>[-resume-step_X].yaml``: each invocation's config, never overwritten."""
    folder = run_dir / "configs"
    folder.mkdir(exist_ok=True)
    stem = time.strftime("%Y%m%dT%H%M%SZ", started) + (f"-resume-{resumed.name}" if resumed else "")
    for n in range(1000):
        path = folder / (f"{stem}.yaml" if n == 0 else f"{stem}.{n}.yaml")
        try:
            with path.open("x") as f:  # exclusive create: an older invocation's file is never replaced
                f.write(text)
            return path
        except FileExistsError:
            continue
    raise FoundryError(f"{folder}: more than 1000 invocations started in the same second")
