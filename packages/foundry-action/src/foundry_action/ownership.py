"""What Foundry may delete or replace: only episode stores it wrote, never a source, never unasked.

A folder is ours when its ``zarr.json`` carries the store marker (``format: "foundry-episodes"``,
written in the store's very first file). Writers that replace a store build the new one in a
temporary sibling (``<dst>.partial``) and swap it in with one rename (an atomic exchange where the OS
offers it), so an interrupted run leaves the previous store intact. Used by ``foundry data convert``
and ``foundry eval demos``. Test: ``uv run pytest packages/foundry-action/tests/test_action_convert_safety.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from foundry_action.store import FORMAT, is_store
from foundry_core.errors import DataError

RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically
AT_FDCWD = -100


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def remove_store(path: str | Path) -> None:
    """Delete one of our stores with its marker (``zarr.json``) last.

    A kill halfway through leaves a folder that still carries the marker, so the next run recognises
    it as ours and finishes the job instead of refusing a half-deleted, unmarked folder.
    """
    path = Path(path)
    for child in path.iterdir():
        if child.name == "zarr.json":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (path / "zarr.json").unlink(missing_ok=True)
    path.rmdir()


def check_destination(
    dst: str | Path, *, sources: Iterable[str | Path] = (), overwrite: bool = False
) -> bool:
    """Raise unless ``dst`` may be written; return True when it holds a store that will be replaced.

    Refused: ``dst`` equal to or containing a source (symlinks resolved); an existing path that is not
    an empty folder or one of our stores; a read-only folder (the swap would not need its permission,
    but it says "do not write here"); an existing store without ``overwrite``.
    """
    dst = Path(dst)
    resolved = dst.resolve()
    for src in sources:
        src_resolved = Path(src).resolve()
        if resolved == src_resolved or src_resolved.is_relative_to(resolved):
            raise DataError(
                f"{dst}: the destination is (or contains) the source {src}; write the store to another path"
            )
    if not dst.exists() and not dst.is_symlink():
        return False
    if dst.is_dir() and not os.access(dst, os.W_OK):  # the swap would replace it all the same: respect it
        raise DataError(f"{dst}: folder is read-only; make it writable or choose another destination")
    if _is_empty_dir(dst):
        return False
    if not is_store(dst):
        raise DataError(
            f"{dst} exists and is not an episode store (no zarr.json with format {FORMAT!r}); Foundry only "
            "replaces stores it wrote: choose another path, or move it away yourself"
        )
    if not overwrite:
        raise DataError(f"{dst} already exists (an episode store); use --overwrite to replace it")
    return True


def prepare_partial(dst: str | Path) -> Path:
    """A fresh ``<dst>.partial`` beside the real destination (a leftover one is removed only if it is ours)."""
    target = Path(dst).resolve()
    partial = target.with_name(target.name + ".partial")
    blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise DataError(f"{dst}: {blocking} is a file, not a folder; choose another destination")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists() or partial.is_symlink():
            if is_store(partial) and not partial.is_symlink():
                remove_store(partial)  # an interrupted earlier run of ours
            elif not _is_empty_dir(partial):
                raise DataError(
                    f"{partial} exists and is not an unfinished episode store; move it away (Foundry writes "
                    f"{target.name} there first)"
                )
        if not os.access(target.parent, os.W_OK):
            raise DataError(f"{target.parent}: folder is not writable; choose another destination")
    except OSError as exc:
        raise DataError(
            f"cannot write beside {dst}: {exc.strerror or exc} ({exc.filename or target.parent})"
        ) from exc
    return partial


def install(partial: str | Path, dst: str | Path) -> None:
    """Move the finished ``partial`` to ``dst``; a store already at ``dst`` is swapped out atomically and removed."""
    partial, target = Path(partial), Path(dst).resolve()
    if not target.exists():
        partial.rename(target)
        return
    if _is_empty_dir(target):
        target.rmdir()
        partial.rename(target)
        return
    if not is_store(target):  # checked before writing; re-checked so a race never costs foreign data
        raise DataError(
            f"{target} changed while writing and is no longer an episode store; left both in place"
        )
    if _exchange(partial, target):
        remove_store(partial)  # now holds the previous store
        return
    old = target.with_name(target.name + ".replaced")
    if old.exists():
        if not is_store(old):
            raise DataError(f"{old} exists and is not an episode store; move it away")
        remove_store(old)
    target.rename(old)
    partial.rename(target)
    remove_store(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths with renameat2(RENAME_EXCHANGE); False where the OS or filesystem cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or os.name != "posix":
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return rc == 0
