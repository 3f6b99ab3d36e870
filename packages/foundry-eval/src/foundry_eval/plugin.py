"""foundry-eval plugin entry module. Import-light: register strings, never import torch here."""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl  # noqa: F401
