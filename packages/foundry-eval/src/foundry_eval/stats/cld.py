"""Compact letter display (Piepho 2004, insert-absorb): models that share no letter differ significantly.

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_cld.py``.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from foundry_core.errors import DataError


def compact_letters(models: Sequence[str], significant: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Letters per model. ``models`` must be sorted best first; ``significant``: differing pairs."""
    index = {m: i for i, m in enumerate(models)}
    if len(index) != len(models):
        raise DataError("compact_letters: duplicate model names")
    columns: list[frozenset[int]] = [frozenset(range(len(models)))]
    for a, b in significant:
        if a not in index or b not in index:
            raise DataError(f"compact_letters: unknown model in pair ({a!r}, {b!r})")
        i, j = index[a], index[b]
        new: list[frozenset[int]] = []
        for col in columns:  # insert: split every column holding both
            if i in col and j in col:
                new += [col - {i}, col - {j}]
            else:
                new.append(col)
        # absorb: drop duplicates and columns contained in another column
        uniq = list(dict.fromkeys(new))
        columns = [c for c in uniq if not any(c < other for other in uniq)]
    columns = [c for c in columns if c]
    columns.sort(key=lambda c: (min(c), sorted(c)))
    letters = _letter_names(len(columns))
    out = {m: "" for m in models}
    for letter, col in zip(letters, columns):
        for i in sorted(col):
            out[models[i]] += letter
    return out


def _letter_names(k: int) -> list[str]:
    base = string.ascii_lowercase
    names = list(base[:k])
    i = 0
    while len(names) < k:  # beyond 26 columns: aa, ab, …
        names.append(base[i // 26] + base[i % 26])
        i += 1
    return names
