"""Error types. A ``FoundryError`` is a user-facing problem: the CLI prints its message and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FoundryError(Exception):
    """Base for errors caused by user input (config, data, plugins); shown without a traceback."""

    #: The process exit status the CLI uses for this error.
    exit_code = 2


class ConfigError(FoundryError):
    """A config file or override is malformed or does not validate."""


class ComponentError(FoundryError):
    """An unknown component kind/name, or a component registered twice."""


class Interrupted(FoundryError):
    """The user stopped a command (Ctrl-C / SIGTERM); the message says what was saved."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class DataError(FoundryError):
    """Bad input data: a corrupt shard, a missing field, a NaN, a wrong shape."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``"; did you mean 'x' or 'y'?"`` (or ``""``) for an unknown ``word``."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=n, cutoff=0.5)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
