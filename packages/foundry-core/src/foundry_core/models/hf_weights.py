"""Loading a local Hugging Face folder's weights without ever falling back to random weights silently.

Shared by ``hf_causal_lm``, ``hf_vlm`` and ``hf_vision_encoder``. A folder whose weights are not in a
file Hugging Face loads (``model.safetensors``, its sharded index, ``pytorch_model.bin``) used to be built
with random weights and no warning. The rule now (:func:`wants_pretrained_weights`):

* ``init: random`` -> random weights of the folder's architecture, on purpose;
* a loadable weight file -> loaded; a truncated/corrupt file is one error naming it, and tensors the
  file lacks (left random by Hugging Face) are listed in a warning (:func:`load_pretrained_checked`);
* no weight file -> an error naming the folder, the files it has and ``init: random`` as the way out;
  except inside a Foundry export (``pretrained_dir`` set), whose weights are the export's own
  ``model.safetensors``, loaded strictly afterwards by ``load_pretrained``.

Tested by ``tests/test_llm_hf_weights.py`` (and the vision package's loader tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from foundry_core.errors import ConfigError

log = logging.getLogger("foundry")

#: Weight files ``from_pretrained`` reads from a local folder.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: ``init:`` of the HF loaders: the folder's weights, or random weights of its architecture on purpose.
Init = Literal["pretrained", "random"]


def wants_pretrained_weights(folder: Path, init: Init, where: str, *, in_export: bool = False) -> bool:
    """True when the weights of ``folder`` must be loaded; an error when they should be but cannot."""
    if init == "random":
        return False
    if any((folder / name).is_file() for name in HF_WEIGHT_FILES):
        return True
    if in_export:
        return False
    others = sorted(
        p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
    )
    found = f"; weight-like files there: {', '.join(others)} (rename or convert one)" if others else ""
    raise ConfigError(
        f"{where}.path: {folder} has no loadable weights (none of {', '.join(HF_WEIGHT_FILES)}){found}. "
        f"Set {where}.init: random to start from random weights on purpose"
    )


def load_pretrained_checked(load: Callable[..., Any], folder: Path, where: str, **kwargs: Any) -> Any:
    """``load(str(folder), local_files_only=True, output_loading_info=True, **kwargs)`` with clear errors.

    A truncated or corrupt weight file is a :class:`ConfigError` naming the folder; tensors the file lacks
    (Hugging Face leaves them random) are listed in a warning.
    """
    from safetensors import SafetensorError

    try:
        model, info = load(str(folder), local_files_only=True, output_loading_info=True, **kwargs)
    except (SafetensorError, OSError, ValueError, RuntimeError, EOFError) as exc:
        raise ConfigError(
            f"{where}.path: cannot load the weights in {folder} ({type(exc).__name__}: {exc}); the file may be "
            "truncated or corrupt: copy it again"
        ) from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        log.warning(
            "%s.path: the weights in %s lack %d tensor(s), left randomly initialized: %s",
            where,
            folder,
            len(missing),
            shown,
        )
    return model
