"""pytest fixtures of foundry-vision (loaded through the ``pytest11`` entry point): a plugin manager with
this plugin, its registry, tiny random Hugging Face VLM folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests build tiny models locally; nothing is downloaded


@pytest.fixture
def vision_pm(foundry_pm):
    import foundry_vision.plugin

    foundry_pm.register(foundry_vision.plugin, name="foundry-vision")
    return foundry_pm


@pytest.fixture
def vision_registry(vision_pm):
    from foundry_core.registry import collect

    return collect(vision_pm)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """``tiny_hf_dir(family)`` -> a saved tiny random HF VLM folder (built once per session)."""
    from foundry_vision.tiny_hf import build_tiny_hf_vlm

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny_hf_vlm(family, tmp_path_factory.mktemp(family))
        return cache[family]

    return get
