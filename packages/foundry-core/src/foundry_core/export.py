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

from foundry_core.config import dump_yaml
from foundry_core.errors import ConfigError, FoundryError

if TYPE_CHECKING:
    from torch import nn

    from foundry_core.registry import Registry

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def export_model(
    model: nn.Module,
    raw_model_node: Mapping[str, Any],
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
    node = dict(raw_model_node)
    artifacts = getattr(model, "export_artifacts", None)
    if artifacts is not None:
        updates = artifacts(str(tmp))
        if updates:
            node.update(updates)
    (tmp / "config.yaml").write_text(dump_yaml({"model": node}))
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


def export_weights(
    registry: Registry,
    model_node: Mapping[str, Any],
    weights: Mapping[str, Any],
    out_dir: str | Path,
    *,
    ema: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    pretrained_dir: str | Path | None = None,
) -> Path:
    """Rebuild the model of ``model_node`` on the CPU, load full ``weights`` strictly (floats as fp32),
    put the ``ema`` shadow in place of the parameters it names, and write the export.

    Training writes its export this way, and so does ``foundry export`` from a checkpoint (with
    ``pretrained_dir``, the checkpoint's copy of the model's artifacts). The global RNG is left as it was.
    """
    import torch

    from foundry_core.registry import BuildContext

    ctx = BuildContext(registry, device="cpu", pretrained_dir=str(pretrained_dir) if pretrained_dir else None)
    with torch.random.fork_rng(devices=[]):
        model = registry.build("model", dict(model_node), ctx, where="model")
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


def load_pretrained(path: str | Path, *, device: str = "cpu", registry: Registry | None = None) -> nn.Module:
    """Rebuild the model of an export folder (local path or fsspec URL) and load its weights strictly."""
    from safetensors.torch import load_model

    from foundry_core.plugins import get_registry
    from foundry_core.registry import BuildContext

    folder = export_folder(path)
    cfg_path = folder / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if "model" not in cfg:
        raise ConfigError(f"{cfg_path}: missing the 'model' node")
    registry = registry or get_registry()
    model = registry.build(
        "model",
        cfg["model"],
        BuildContext(registry, device=device, pretrained_dir=str(folder)),
        where="model",
    )
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
