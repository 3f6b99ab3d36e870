"""What is written about the components is generated from the registry and cannot drift.

The docs tables and the first-party name list hold cog blocks (``foundry_core/catalog.py``); this test
reruns cog in check mode against the full workspace's registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = [
    "docs/architecture.md",
    "docs/plugin-hooks.md",
    "packages/foundry-core/src/foundry_core/first_party.py",
]


@pytest.mark.parametrize("path", GENERATED)
def test_generated_text_is_current(path, monkeypatch, capsys):
    from cogapp import Cog

    monkeypatch.delenv("FOUNDRY_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("FOUNDRY_PLUGINS", raising=False)
    rc = Cog().main(["cog", "--check", "--diff", str(ROOT / path)])
    assert rc == 0, f"{path} is stale: run `uv run cog -r {path}`\n{capsys.readouterr().out}"


def test_every_cog_file_is_checked():
    """A new generated block anywhere in the docs or the sources is checked here too."""
    found = {
        str(p.relative_to(ROOT))
        for pattern in ("docs/**/*.md", "packages/*/src/**/*.py", "packages/*/README.md", "README.md")
        for p in ROOT.glob(pattern)
        if "[[[cog" in p.read_text(encoding="utf-8")
    }
    assert found == set(GENERATED)
