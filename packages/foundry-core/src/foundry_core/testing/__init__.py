"""Test support for Foundry and its plugins; the fixtures are in :mod:`foundry_core.testing.pytest_plugin`
(loaded through the ``pytest11`` entry point).

``run_config(out_dir, ...)`` is THE small run config of the tests: a toy regression model on synthetic
data by default; each test states only what it changes, so a schema change is made here once.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: The default model and data of :func:`run_config`: trains in well under a second on one CPU thread.
TOY_MODEL: dict[str, Any] = {"name": "toy_regression", "width": 32}
TOY_SOURCE: dict[str, Any] = {"name": "synthetic_regression", "num_samples": 128}


def run_config(
    out_dir: str | Path,
    *,
    model: Mapping[str, Any] | None = None,
    mix: Sequence[Mapping[str, Any]] | None = None,
    source: Mapping[str, Any] | None = None,
    steps: int = 6,
    batch: int = 8,
    per_device: int | None = None,
    run: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    distributed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid run config (a plain dict, as read from YAML) writing into ``out_dir``.

    ``model`` replaces :data:`TOY_MODEL`; ``mix`` (or one ``source``) replaces the one :data:`TOY_SOURCE`;
    ``steps``/``batch``/``per_device`` (default ``batch``) set the budget and batch; ``run``, ``train``
    and ``distributed`` replace the named keys of their section (``train={"optim": {...}}``).
    """
    if mix is not None and source is not None:
        raise ValueError("give mix or source, not both")
    entries = [{"source": dict(source or TOY_SOURCE)}] if mix is None else [dict(m) for m in mix]
    cfg: dict[str, Any] = {
        "run": {"name": Path(out_dir).name, "out_dir": str(out_dir), "seed": 0, **(run or {})},
        "model": dict(model or TOY_MODEL),
        "data": {"mix": entries},
        "train": {
            "budget": {"steps": steps},
            "batch": {"global": batch, "per_device": batch if per_device is None else per_device},
            "optim": {"name": "adamw", "lr": 1.0e-2},
            "schedule": {"name": "constant"},
            "log_every": 1,
            "progress": False,
            **(train or {}),
        },
    }
    if distributed is not None:
        cfg["distributed"] = dict(distributed)
    return cfg


def modules_imported_by(code: str, timeout: float = 120) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``code`` in a fresh interpreter; return the modules it left in ``sys.modules`` and the process.

    Why a subprocess: this process has imported everything already; start-up cost (torch in ``--help``)
    and import cycles (config -> registry) show only in a fresh one. ``SystemExit`` (click) is caught.
    """
    probe = (
        "import sys\ntry:\n" + "".join(f"    {line}\n" for line in code.splitlines())
        + "except SystemExit:\n    pass\nsys.stderr.write('\\nMODULES=' + ','.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or "\nMODULES=" not in out.stderr:
        raise AssertionError(f"probe failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return set(out.stderr.rsplit("\nMODULES=", 1)[1].strip().split(",")), out


def registered_names(plugin: ModuleType, name: str, kind: str) -> list[str]:
    """Names that ``plugin`` (registered as ``name``) provides under ``kind``: tests parametrize over
    them, so a new component is tested without anyone editing a list."""
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import collect

    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(plugin, name=name)
    names = [s.name for s in collect(pm).specs(kind) if s.provider == name]
    if not names:  # an empty parametrization would pass without testing anything
        raise LookupError(f"{name} registers no {kind}")
    return names
