"""The one freeze-by-glob helper shared by the VLMs, backbones and the VLA."""

from __future__ import annotations

import pytest
import torch

from foundry_core.errors import ConfigError
from foundry_core.freeze import freeze_by_patterns, set_trainable


def test_freeze_by_patterns():
    model = torch.nn.ModuleDict({"vision": torch.nn.Linear(2, 2), "llm": torch.nn.Linear(2, 2)})
    assert freeze_by_patterns(model, ["vision*"]) == 2
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["llm.weight", "llm.bias"]
    assert freeze_by_patterns(model, ["vision*"]) == 0  # already frozen: nothing changed
    with pytest.raises(ConfigError, match="matches no parameter.*llm, vision"):
        freeze_by_patterns(model, ["visoin*"])


def test_unfreeze_after_freeze_names_the_field():
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 2)})
    freeze_by_patterns(model, ["*"])
    assert set_trainable(model, ["a.bias"], True, "model.unfreeze") == 1
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["a.bias"]
    with pytest.raises(ConfigError, match=r"^model.unfreeze: pattern 'c\*'"):
        set_trainable(model, ["c*"], True, "model.unfreeze")
