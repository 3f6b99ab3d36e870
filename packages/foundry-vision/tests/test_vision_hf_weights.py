"""``hf_vlm`` and ``hf_vision_encoder`` never build random weights silently (rule: core's test_llm_hf_weights.py).

Before: a folder whose weight file had another name was built with random weights and no warning.
"""

from __future__ import annotations

import pytest

from foundry_core.errors import ConfigError
from foundry_vision.tiny_hf import build_tiny_hf_encoder, build_tiny_hf_vlm


def _hide_weights(folder):
    (folder / "model.safetensors").rename(folder / "renamed.safetensors")
    return folder


@pytest.mark.parametrize("family", ["siglip", "dinov2"])
def test_encoder_without_weights_is_an_error_unless_init_random(vision_registry, tmp_path, family):
    folder = _hide_weights(build_tiny_hf_encoder(family, tmp_path / family))
    node = {"name": "hf_vision_encoder", "path": str(folder)}
    with pytest.raises(
        ConfigError, match=r"hf_vision_encoder\.path: .* has no loadable weights.*renamed\.safetensors"
    ):
        vision_registry.build("encoder", node)
    assert vision_registry.build("encoder", {**node, "init": "random"}).out_dim == 32


def test_encoder_truncated_weights_and_missing_tensors(vision_registry, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    folder = build_tiny_hf_encoder("dinov2", tmp_path / "enc")
    weights = folder / "model.safetensors"
    sd = load_file(str(weights))
    dropped = sorted(sd)[0]
    del sd[dropped]
    save_file(sd, str(weights), metadata={"format": "pt"})
    vision_registry.build("encoder", {"name": "hf_vision_encoder", "path": str(folder)})
    assert "left randomly initialized" in caplog.text and dropped in caplog.text
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        vision_registry.build("encoder", {"name": "hf_vision_encoder", "path": str(folder)})


def test_hf_vlm_without_weights_is_an_error_unless_init_random(vision_registry, tmp_path):
    folder = _hide_weights(build_tiny_hf_vlm("smolvlm", tmp_path / "vlm"))
    node = {"name": "hf_vlm", "path": str(folder)}
    with pytest.raises(ConfigError, match=r"hf_vlm\.path: .* has no loadable weights.*init: random"):
        vision_registry.build("model", node)
    assert vision_registry.build("model", {**node, "init": "random"}).hidden_size == 32
