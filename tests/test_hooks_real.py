"""Every hook is real (datasette's check): each hookspec has a caller in the sources and a test.

A hookspec nothing calls, or a component kind nothing builds, is a promise the code does not keep.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from foundry_core import hookspecs
from foundry_core.registry import HOOK_KIND

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT}_spec"))


def _text(pattern: str) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in ROOT.glob(pattern))


SOURCES = _text("packages/*/src/**/*.py")
TESTS = _text("packages/*/tests/**/*.py") + _text("tests/*.py") + _text("plugins-example/*/tests/*.py")


def test_hookspecs_found():
    assert "register_models" in SPECS and "register_commands" in SPECS


@pytest.mark.parametrize("hook", SPECS)
def test_hook_has_a_caller(hook):
    if hook in HOOK_KIND:  # registry.collect calls every registration hook; the kind must be used
        kind = HOOK_KIND[hook]
        uses = re.findall(rf'(?:build|get|specs|names|component)\(\s*"{kind}"', SOURCES)
        assert uses, f"{hook}: nothing in the sources builds or looks up a {kind!r} component"
    else:
        called = f"hook.{hook}(" in SOURCES or f"hook.{hook}.get_hookimpls()" in SOURCES  # per-plugin calls
        assert called, f"{hook}: no pm.hook.{hook}(...) call in the sources"


@pytest.mark.parametrize("hook", SPECS)
def test_hook_has_a_test(hook):
    implemented = re.search(rf"def {hook}\(", TESTS) is not None  # a test plugin implements it
    kind = HOOK_KIND.get(hook)
    built = kind is not None and re.search(rf'(?:build|get|specs|names)\(\s*"{kind}"', TESTS) is not None
    assert implemented or built, f"{hook}: no test implements the hook or builds a {kind!r} component"


def test_every_hookspec_is_documented():
    doc = (ROOT / "docs" / "plugin-hooks.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^## (\w+)\(", doc, flags=re.MULTILINE))
    assert documented == set(SPECS)
