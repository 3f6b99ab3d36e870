"""Error types. A ``FoundryError`` is a user-facing problem: the CLI prints its message and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FoundryError(Exception):
    """Base for errors caused by user input (config, data, plugins); shown without a traceback."""


class ConfigError(FoundryError):
    """A config file or override is malformed or does not validate."""


class ComponentError(FoundryError):
    """An unknown component kind/name, or a component registered twice."""


class DataError(FoundryError):
    """Bad input data: a corrupt shard, a missing field, a NaN, a wrong shape."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``"; did you mean 'x' or 'y'?"`` (or ``""``) for an unknown ``word``."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=n, cutoff=0.5)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
