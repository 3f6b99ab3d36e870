"""What a resume may change: the new run config against the checkpoint's, and the model against its tensors.

A resume whose model does not fit the checkpoint (``model.n_layers=3`` on a 4-layer checkpoint) used to
load what matched and drop the rest silently; a changed learning rate or seed gave no notice. Now:

* any tensor the new model or optimizer needs that the checkpoint lacks, any model tensor of the
  checkpoint the new model lacks, and any shape that differs is a :class:`ConfigError` naming the keys
  (and the model config keys that changed);
* every other changed setting (optimizer, schedule, data, seed, precision ...) is returned as a warning
  listing old -> new; run bookkeeping (names, folders, logging, the budget) is not reported.

Tested by ``tests/test_train_resume_check.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundry_core.errors import ConfigError

#: Settings a resume may change without notice: where and how the run is logged, and how long it runs.
BOOKKEEPING = (
    "run.name",
    "run.out_dir",
    "run.remote_dir",
    "run.remote_retries",
    "run.device",
    "train.budget",
    "train.progress",
    "train.log_every",
    "train.metrics",
    "train.checkpoint",
    "train.val_every",
    "train.val_batches",
)
_UNSET = "<unset>"
_SHOW = 8


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "l": [{"x": 2}]}`` -> ``{"a.b": 1, "l.0.x": 2}`` (lists of scalars stay whole)."""
    if isinstance(node, Mapping):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list) and any(isinstance(v, (Mapping, list)) for v in node):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    if not items and prefix:
        out[prefix] = node
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs, in key order."""
    a, b = flatten(old), flatten(new)
    return [
        (k, a.get(k, _UNSET), b.get(k, _UNSET))
        for k in sorted(set(a) | set(b))
        if a.get(k, _UNSET) != b.get(k, _UNSET)
    ]


def _format(changes: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changes)


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def check_resume(
    where: str,
    old_cfg: Mapping[str, Any] | None,
    new_cfg: Mapping[str, Any],
    stored: Mapping[str, tuple[int, ...] | None],
    wanted: Mapping[str, tuple[int, ...] | None],
) -> list[str]:
    """Raise when the checkpoint at ``where`` cannot be resumed as configured; else return the warnings.

    ``stored``/``wanted`` map DCP keys (``model.<param>``, ``optim.state...``) to tensor shapes (None for
    non-tensor items): what the checkpoint holds and what the new model + optimizer will load.
    """
    changes = config_changes(old_cfg, new_cfg) if old_cfg is not None else []
    model_changes = [c for c in changes if c[0] == "model" or c[0].startswith("model.")]
    missing = sorted(k for k in wanted if k not in stored)
    shape = sorted(
        f"{k} {list(stored[k])} -> {list(wanted[k])}"  # type: ignore[arg-type]
        for k in wanted
        if k in stored and stored[k] is not None and wanted[k] is not None and stored[k] != wanted[k]
    )
    dropped = sorted(k for k in stored if k.startswith("model.") and k not in wanted)
    model_missing = [k for k in missing if k.startswith("model.")]
    if model_missing or dropped or any(s.startswith("model.") for s in shape):
        parts = []
        if model_missing:
            parts.append(f"not in the checkpoint: {_listing(model_missing)}")
        if dropped:
            parts.append(f"in the checkpoint but not in the model: {_listing(dropped)}")
        model_shape = [s for s in shape if s.startswith("model.")]
        if model_shape:
            parts.append(f"different shape (checkpoint -> model): {_listing(model_shape)}")
        changed = f" Changed model settings: {_format(model_changes)}." if model_changes else ""
        raise ConfigError(
            f"--resume {where}: the model does not match the checkpoint's; "
            + "; ".join(parts)
            + f".{changed} Resume with the checkpoint's model settings, or start a new run (another run.out_dir)"
        )
    if missing or shape:
        optim = [c for c in changes if c[0].startswith("train.optim")]
        changed = f" Changed optimizer settings: {_format(optim)}." if optim else ""
        raise ConfigError(
            f"--resume {where}: the checkpoint's optimizer/EMA state does not fit the new configuration; "
            f"not in the checkpoint: {_listing(missing + shape)}.{changed} Resume with the checkpoint's "
            "optimizer, or start a new run (another run.out_dir)"
        )
    notable = [c for c in changes if not any(c[0] == b or c[0].startswith(b + ".") for b in BOOKKEEPING)]
    if not notable:
        return []
    return [f"--resume {where}: settings differ from the checkpoint's run config: {_format(notable)}"]
