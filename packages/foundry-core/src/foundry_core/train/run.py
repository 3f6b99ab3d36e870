"""Entry points: ``run`` (the ``foundry train`` command) and ``train_from_config`` (programmatic).

The run directory (``run.out_dir`` or ``runs/<run.name>``) receives ``config.resolved.yaml``,
``plugins.json``, ``metrics.jsonl``, ``checkpoints/``, ``export/``, ``loss.png`` and ``tensorboard/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundry_core.config import dump_yaml, parse_dataclass, resolve_config, to_dict
from foundry_core.registry import collect
from foundry_core.run_config import RunConfig

log = logging.getLogger("foundry")


def run(config_path: str, overrides: Sequence[str], resume: str | None = None, pm: Any = None) -> Path:
    """Resolve ``config_path`` + dotted overrides and train (used by ``foundry train``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return train_from_config(resolve_config(config_path, overrides), resume=resume, pm=pm)


def train_from_config(raw_cfg: dict[str, Any], *, resume: str | None = None, pm: Any = None) -> Path:
    """Validate ``raw_cfg`` against the run schema, train, and return the run directory."""
    from foundry_core.plugins import plugin_infos, plugin_manager
    from foundry_core.train.trainer import Trainer

    pm = pm if pm is not None else plugin_manager()
    registry = collect(pm)
    cfg = parse_dataclass(RunConfig, raw_cfg, where="", registry=registry)
    run_dir = Path(cfg.run.out_dir or f"runs/{cfg.run.name}")
    trainer = Trainer(cfg, raw_cfg, registry, run_dir, pm=pm)
    try:
        trainer.build(resume=resume)
        if trainer.info.is_main:
            (run_dir / "config.resolved.yaml").write_text(dump_yaml(to_dict(cfg)))
            infos = [{**i.__dict__, "hooks": list(i.hooks)} for i in plugin_infos(pm)]
            (run_dir / "plugins.json").write_text(json.dumps(infos, indent=2))
        trainer.fit()
    finally:
        trainer.close()
    return run_dir
