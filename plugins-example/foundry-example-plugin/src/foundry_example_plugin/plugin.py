"""Entry module of the example plugin. Import-light."""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl  # noqa: F401
