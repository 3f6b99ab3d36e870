"""The episode store's commit record: what is committed, and proof that the index was not damaged.

After every episode the writer replaces the root attribute ``committed`` (zarr.json is written to a
temporary file and renamed, so it is atomic): episode count, step count, metadata byte count and
CRC-32s of ``meta/episode_ends``, ``meta/episode_info_ends`` and ``meta/episode_info``. Whatever lies
beyond those counts is the uncommitted tail of an interrupted write; a committed part that does not
match is damage, reported and never "repaired" by truncation. Stores written before the record existed
are accepted when their only irregularity is trailing never-written (-1) entries. Spec:
``packages/foundry-action/docs/episode_store.md`` ("Crash safety"). Test: ``test_action_store.py``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from foundry_core.errors import DataError

COMMIT_ATTR = "committed"


def committed_count(ends: np.ndarray, data_len: int | None = None) -> int:
    """Length of the longest strictly increasing, positive prefix of ``ends`` (not beyond ``data_len``)."""
    n = 0
    prev = 0
    for value in ends.tolist():
        if value <= prev or (data_len is not None and value > data_len):
            break
        prev = value
        n += 1
    return n


def crc32_int64(values: Iterable[int] | np.ndarray, crc: int = 0) -> int:
    """CRC-32 of int64 values (little-endian), continuable: ``crc32_int64(b, crc32_int64(a)) == crc32_int64(a + b)``."""
    return zlib.crc32(np.asarray(values, dtype="<i8").tobytes(), crc)


def verify_commit(path: Path, commit: Mapping[str, Any], ends: np.ndarray, info_ends: np.ndarray) -> int:
    """Check the committed part of the metadata against the commit record; return the episode count."""
    try:
        n, steps, info_bytes = int(commit["episodes"]), int(commit["steps"]), int(commit["info_bytes"])
        ends_crc, info_ends_crc = int(commit["episode_ends_crc32"]), int(commit["episode_info_ends_crc32"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: zarr.json attribute {COMMIT_ATTR!r} is malformed ({exc}); the store is damaged"
        ) from exc
    fix = "the store is damaged: restore it from a copy or re-create it (nothing was changed)"
    for name, arr in (("episode_ends", ends), ("episode_info_ends", info_ends)):
        if len(arr) < n:
            raise DataError(
                f"{path}: meta/{name} has {len(arr)} entries, the commit record says {n} episodes; {fix}"
            )
    bad = committed_count(ends[:n])
    if bad < n:
        raise DataError(
            f"{path}: meta/episode_ends[{bad}] = {int(ends[bad])} does not increase (previous "
            f"{int(ends[bad - 1]) if bad else 0}); {n} episodes are committed; {fix}"
        )
    if (int(ends[n - 1]) if n else 0) != steps or crc32_int64(ends[:n]) != ends_crc:
        raise DataError(
            f"{path}: meta/episode_ends does not match the commit record (checksum or step count); {fix}"
        )
    if (
        committed_count(info_ends[:n]) < n
        or (int(info_ends[n - 1]) if n else 0) != info_bytes
        or (crc32_int64(info_ends[:n]) != info_ends_crc)
    ):
        raise DataError(f"{path}: meta/episode_info_ends does not match the commit record; {fix}")
    return n


def legacy_committed(path: Path, ends: np.ndarray, data_len: int) -> int:
    """Stores written before the commit record: a crash leaves only never-written (-1) entries at the end."""
    n = committed_count(ends, data_len)
    rest = ends[n:]
    if len(rest) and (rest != -1).any():
        bad = n + int(np.argmax(rest != -1))
        raise DataError(
            f"{path}: meta/episode_ends[{bad}] = {int(ends[bad])} is not a valid end (entry {n} breaks the "
            f"increasing run; data arrays hold {data_len} steps) and not an unwritten slot (-1): the episode "
            "index is corrupt, not an unfinished write; restore the store from a copy or re-create it "
            "(nothing was changed)"
        )
    return n
