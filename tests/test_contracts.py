"""Contract tests across the workspace: hook docs, import-light plugin modules, lockstep versions."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from foundry_core import hookspecs
from foundry_core.testing import modules_imported_by

ROOT = Path(__file__).resolve().parents[1]
PYPROJECTS = sorted([*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins-example/*/pyproject.toml")])
HOOKS = sorted(
    name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "foundry_spec")
)


def test_there_are_hooks():
    assert "register_models" in HOOKS and "register_commands" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    doc = (ROOT / "docs" / "plugin-hooks.md").read_text()
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert re.search(rf"^## {hook}\({re.escape(params)}\)$", doc, re.M), f"docs/plugin-hooks.md lacks '## {hook}({params})'"
    assert getattr(hookspecs, hook).__doc__, f"hookspec {hook} has no docstring"


def test_all_first_party_versions_are_equal():
    versions = {p.parent.name: tomllib.loads(p.read_text())["project"]["version"] for p in PYPROJECTS}
    assert len(set(versions.values())) == 1, versions


def test_plugin_entry_modules_import_no_torch():
    mods = []
    for p in PYPROJECTS:
        eps = tomllib.loads(p.read_text())["project"].get("entry-points", {}).get("foundry.plugins", {})
        mods.extend(eps.values())
    assert len(mods) >= 4
    probe = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n    importlib.import_module(m)\n"
        "heavy = [m for m in ('torch', 'transformers', 'zarr', 'pydrake', 'scipy') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"plugin modules imported heavy modules: {out.stdout}"


def test_full_cli_help_imports_no_torch_with_all_plugins():
    modules, _ = modules_imported_by("from foundry_core.cli.main import main\nmain(['--help'])")
    assert "torch" not in modules
