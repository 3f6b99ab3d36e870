"""Self-contained model export and ``load_pretrained``.

``export/`` holds ``config.yaml`` (``model:`` node, with the paths the model's ``export_artifacts``
returned, relative to the folder), ``model.safetensors`` (EMA weights when enabled; tied weights
deduplicated by safetensors' ``save_model``), ``foundry_export.json`` (format version, plugin
versions, step, creation time) and whatever the model wrote (tokenizer, processor, stats).
``load_pretrained(path)`` rebuilds the model from that folder alone. Tested by ``tests/test_train_export.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from foundry_core.config import Node, dump_yaml, to_dict
from foundry_core.errors import ConfigError, FoundryError

if TYPE_CHECKING:
    from torch import nn

    from foundry_core.registry import Registry

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def export_model(
    model: nn.Module,
    model_node: Node | Mapping[str, Any],
    out_dir: str | Path,
    *,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (with the weights it holds now) to ``out_dir`` atomically (temp dir + rename)."""
    from safetensors.torch import save_model

    out = Path(out_dir)
    tmp = out.with_name(f".tmp_{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_model_files(model, model_node, tmp)
    save_model(model, str(tmp / WEIGHTS))
    meta = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **code_version(),
        **(extra_meta or {}),
    }
    (tmp / "foundry_export.json").write_text(json.dumps(meta, indent=2, default=str))
    if out.exists():
        old = out.with_name(f".old_{out.name}")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def write_model_files(
    model: nn.Module, raw_model_node: Node | Mapping[str, Any], folder: Path
) -> dict[str, Any]:
    """An export without its weights: whatever ``model.export_artifacts(folder)`` writes (tokenizer,
    normalization statistics, policy metadata) and ``config.yaml``, the node updated with the paths it
    returned. Checkpoints carry the same files (``model/``). Returns the node."""
    node = to_dict(raw_model_node)
    artifacts = getattr(model, "export_artifacts", None)
    if artifacts is not None:
        node.update(artifacts(str(folder)) or {})
    (folder / "config.yaml").write_text(dump_yaml({"model": node}))
    return node


def rebuild_model(
    registry: Registry,
    model_node: Node | Mapping[str, Any],
    *,
    pretrained_dir: str | Path | None = None,
    data_sources: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The model of ``model_node`` built on the CPU, leaving the global RNG as it was (training goes on);
    ``data_sources``: the run's, already built (see ``BuildContext.data_sources``)."""
    import torch

    from foundry_core.registry import BuildContext

    ctx = BuildContext(
        registry,
        device="cpu",
        pretrained_dir=str(pretrained_dir) if pretrained_dir else None,
        data_sources=dict(data_sources or {}),
    )
    with torch.random.fork_rng(devices=[]):
        return registry.build("model", model_node, ctx, where="model")


def export_weights(
    model: nn.Module,
    model_node: Node | Mapping[str, Any],
    weights: Mapping[str, Any],
    out_dir: str | Path,
    *,
    ema: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Load full ``weights`` into ``model`` strictly (floats as fp32), put the ``ema`` shadow in place of
    the parameters it names, and write the export. Training's end, closed-loop evaluation and
    ``foundry export`` (from a checkpoint) all export this way."""
    import torch

    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True
    )
    with torch.no_grad():  # EMA by parameter name: tied weights are one parameter
        for name, p in model.named_parameters():
            if ema and name in ema:
                p.copy_(ema[name])
    return export_model(model, model_node, out_dir, extra_meta=extra_meta)


def code_version() -> dict[str, Any]:
    """The git commit (and remote, credentials stripped) of the Foundry code writing an export, so a
    policy server can report which code trained it; ``{}`` outside a git checkout (an installed wheel)."""
    import re
    import subprocess

    here = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if not sha:
        return {}
    out: dict[str, Any] = {"git_sha": sha}
    remote = git("remote", "get-url", "origin")
    if remote:
        out["git_repo"] = re.sub(r"://[^/@]+@", "://", remote)
    status = git("status", "--porcelain", "--untracked-files=no")
    if status:
        out["git_dirty"] = True
    return out


def _local_copy(url: str) -> Path:
    """Download an export folder at an fsspec URL into ``~/.cache/foundry/exports`` (once)."""
    import fsspec

    from foundry_core.train.metrics import cache_dir

    dest = cache_dir() / "exports" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (dest / WEIGHTS).is_file():
        return dest
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/config.yaml"):
        raise FoundryError(f"{url} is not an export folder (no config.yaml)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in fs.find(root):
        rel = path[len(root) :].lstrip("/")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(tmp / rel))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def export_folder(path: str | Path) -> Path:
    """The local folder of an export at ``path`` (a local path, ``file://`` or an fsspec URL, fetched once)."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return _local_copy(text)
    folder = Path(text.removeprefix("file://"))
    if not (folder / "config.yaml").is_file():
        raise FoundryError(f"{folder} is not an export folder (no config.yaml)")
    return folder


def build_exported_architecture(
    path: str | Path, *, device: str = "cpu", registry: Registry | None = None
) -> tuple[nn.Module, Path]:
    """The model of an export folder with freshly initialized weights (its tokenizer and files kept):
    the from-scratch twin of ``load_pretrained``. Returns the model and the local folder."""
    from foundry_core.plugins import get_registry
    from foundry_core.registry import BuildContext

    folder = export_folder(path)
    cfg_path = folder / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if "model" not in cfg:
        raise ConfigError(f"{cfg_path}: missing the 'model' node")
    registry = registry or get_registry()
    node = registry.node("model", cfg["model"], where=f"{cfg_path}: model", upgrade=True)  # old key names too
    return registry.build("model", node, BuildContext(registry, device=device, pretrained_dir=str(folder))), folder


def load_pretrained(path: str | Path, *, device: str = "cpu", registry: Registry | None = None) -> nn.Module:
    """Rebuild the model of an export folder (local path or fsspec URL) and load its weights strictly."""
    from safetensors.torch import load_model

    model, folder = build_exported_architecture(path, device=device, registry=registry)
    cfg_path = folder / "config.yaml"
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FoundryError(
            f"{weights}: missing; {folder} is an incomplete export (copy the whole folder again)"
        )
    from safetensors import SafetensorError

    try:
        load_model(model, str(weights), strict=True, device=device)
    except SafetensorError as exc:
        raise FoundryError(
            f"{weights}: unreadable ({exc}); the file is truncated or corrupt: copy it again"
        ) from None
    except RuntimeError as exc:
        raise FoundryError(f"{weights} does not match the model of {cfg_path}: {exc}") from None
    return model.to(device).eval()


# --------------------------------------------------------------------------- from a checkpoint


def find_checkpoint(path: str | Path) -> Path:
    """``path`` when it is a checkpoint (``step_XXXXXXXX`` with ``meta.json``), else the newest complete
    checkpoint of the run folder (or ``checkpoints/`` folder) ``path``."""
    from foundry_core.train import checkpoint as ckpt

    folder = Path(path)
    if not folder.is_dir():
        raise FoundryError(f"{folder}: no such checkpoint or run folder")
    if (folder / ckpt.META).is_file():
        return folder
    for root in (folder / "checkpoints", folder):
        latest = ckpt.latest_checkpoint(root)
        if latest is not None:
            return latest
    raise FoundryError(
        f"{folder}: not a complete checkpoint (no {ckpt.META}) and no complete checkpoint under it; give "
        "<run>/checkpoints/step_XXXXXXXX or a run folder"
    )


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    *,
    registry: Registry | None = None,
    trust_checkpoint: bool = False,
) -> Path:
    """Turn a checkpoint into the export training writes at its end (EMA weights when the run exported
    them), from the checkpoint alone: its ``model/`` files (config, normalization statistics, policy
    metadata) and its weights. The manifest is verified first (the resume rule: ``trust_checkpoint``
    accepts a checkpoint without one). ``out_dir`` defaults to ``<run>/exports/step_XXXXXXXX``; an
    existing folder is replaced only when it is an export."""
    import logging

    from foundry_core.plugins import get_registry
    from foundry_core.train import checkpoint as ckpt
    from foundry_core.train.checkpoint_integrity import verify_checkpoint

    path = find_checkpoint(checkpoint)
    out = Path(out_dir) if out_dir is not None else _default_export_dir(path)
    _check_replaceable(out)
    if not verify_checkpoint(path, trust_unverified=trust_checkpoint):
        logging.getLogger("foundry").warning(
            "%s has no checksum manifest; exporting it (--trust-checkpoint)", path
        )
    meta = ckpt.read_meta(path)
    run_cfg = meta.get("config") or {}
    raw_node, files = _checkpoint_model_node(path, run_cfg)
    registry = registry or get_registry()
    node = registry.node("model", raw_node, where=f"{path}: model", upgrade=True)  # old key names too
    model = rebuild_model(registry, node, pretrained_dir=files)
    ema_cfg = (run_cfg.get("train") or {}).get("ema") or {}
    use_ema = bool(meta.get("ema")) and bool(ema_cfg.get("use_for_export", True))
    weights, ema = _checkpoint_weights(path, model, use_ema)
    extra = {k: meta.get(k) for k in ("step", "samples", "tokens", "plugins")}
    return export_weights(
        model, node, weights, out, ema=ema, extra_meta={**extra, "ema": use_ema, "checkpoint": str(path)}
    )


def _default_export_dir(checkpoint: Path) -> Path:
    if checkpoint.parent.name != "checkpoints":
        raise FoundryError(f"{checkpoint} is not in a run's checkpoints/ folder: give --out")
    return checkpoint.parent.parent / "exports" / checkpoint.name


def _check_replaceable(out: Path) -> None:
    """An existing ``out`` is replaced only when it is an export (never a folder we cannot prove is one)."""
    if out.exists() and not (out / "foundry_export.json").is_file():
        if out.is_file() or any(out.iterdir()):
            raise FoundryError(
                f"{out} exists and is not an export (no foundry_export.json); choose another --out"
            )


def _checkpoint_model_node(path: Path, run_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """The model node to rebuild (and the folder its paths are relative to): the checkpoint's ``model/``
    files, or, in a checkpoint written before they existed, the run config's node (it then needs what the
    run needed, e.g. its data)."""
    from foundry_core.train import checkpoint as ckpt

    files = path / ckpt.MODEL_FILES
    if (files / "config.yaml").is_file():
        node = (yaml.safe_load((files / "config.yaml").read_text()) or {}).get("model")
        if not isinstance(node, dict):
            raise ConfigError(f"{files / 'config.yaml'}: missing the 'model' node")
        return node, files
    if isinstance(run_cfg.get("model"), dict):
        import logging

        logging.getLogger("foundry").warning(
            "%s has no %s/ files (an older checkpoint): rebuilding the model from its run config",
            path,
            files.name,
        )
        return dict(run_cfg["model"]), None
    raise FoundryError(f"{path}: carries neither {files.name}/ nor a run config; it cannot be exported")


def _checkpoint_weights(
    path: Path, model: nn.Module, with_ema: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The model's full weights (fp32) and, when asked, the EMA shadow, read from the checkpoint's shards."""
    import torch

    from foundry_core.train import checkpoint as ckpt
    from foundry_core.train.checkpoint_integrity import stored_shapes

    weights = {
        k: v.detach().clone().float() if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }
    state: dict[str, Any] = {"model": {f"model.{k}": v for k, v in weights.items()}}  # LossModule's prefix
    if with_ema:
        shapes = stored_shapes(path)
        state["ema"] = {
            k.removeprefix("ema."): torch.zeros(shape, dtype=torch.float32)
            for k, shape in shapes.items()
            if k.startswith("ema.") and shape is not None
        }
    ckpt.load_shards(path, state)
    return weights, state.get("ema")
