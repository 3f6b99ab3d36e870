"""pytest fixtures for plugin authors: an isolated plugin manager (no entry points), its registry, a CLI runner.

Register a test plugin in-process::

    def test_my_encoder(foundry_pm):
        foundry_pm.register(my_plugin_module, name="my-plugin")
        registry = collect(foundry_pm)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from click.testing import CliRunner

    from foundry_core.plugins import PluginManager
    from foundry_core.registry import Registry


@pytest.fixture
def foundry_pm() -> PluginManager:
    """A fresh plugin manager with only the core's built-ins (no entry-point autoload)."""
    from foundry_core.plugins import make_plugin_manager

    return make_plugin_manager(entry_points_enabled=False)


@pytest.fixture
def foundry_registry(foundry_pm: PluginManager) -> Registry:
    """The registry of ``foundry_pm`` (collect again after registering more plugins)."""
    from foundry_core.registry import collect

    return collect(foundry_pm)


@pytest.fixture
def cli_runner() -> CliRunner:
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: threads only contend on shared CI cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def shared_data():
    """Path to ``../shared/data`` (the reference system's small real data); skips when absent."""
    from foundry_core.testing.paths import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (real reference data for reader tests)")
    return path


from foundry_core.testing.s3 import s3_server  # noqa: E402,F401  (re-exported fixture: a real S3 API on 127.0.0.1)
