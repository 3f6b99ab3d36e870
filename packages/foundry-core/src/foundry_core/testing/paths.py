"""Locate ``shared/data`` (beside the repository root) for tests that read real reference data."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """``$FOUNDRY_SHARED_DATA`` or the first ``../shared/data`` found walking up from the CWD/this file."""
    env = os.environ.get("FOUNDRY_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            cand = parent.parent / "shared" / "data"
            if (parent / "pyproject.toml").exists() and cand.is_dir():
                return cand
    return None
