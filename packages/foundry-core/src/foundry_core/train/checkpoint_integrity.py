"""The checkpoint trust boundary: a checksum manifest, and a DCP reader that cannot run code.

Two independent guards (``docs/formats.md`` § "What is safe to load" states the model):

* **Nothing in a checkpoint is unpickled freely.** torch's ``FileSystemReader`` reads ``.metadata`` with
  ``pickle.load`` and its default planner reads non-tensor items with ``torch.load(weights_only=False)``:
  a crafted checkpoint ran code on ``--resume``. :class:`SafeFileSystemReader` unpickles ``.metadata``
  with an allow-list of DCP's own metadata classes, and :class:`SafeLoadPlanner` reads every item with
  ``weights_only=True``. Our own files are JSON (``meta.json``, the manifest) or ``weights_only`` ``.pt``.
* **Integrity.** ``manifest.json`` (sha256 and size of every other file) is written atomically, last,
  with every checkpoint; :func:`verify_checkpoint` checks it before anything of the checkpoint is read.
  It catches torn or partial copies, bit rot, files swapped between checkpoints and files added to the
  folder. It does not prove who wrote the checkpoint: whoever can write the folder can write a matching
  manifest.

Tested by ``tests/test_train_checkpoint_trust.py`` and ``tests/faults/test_faults_checkpoint.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from foundry_core.errors import FoundryError

MANIFEST = "manifest.json"
#: Files a manifest cannot cover: itself, and the marker a remote copy gets after the upload (remote.MARKER).
_UNCOVERED = (MANIFEST, "_COMPLETE")
MANIFEST_FORMAT = "foundry-checkpoint-manifest"
_CHUNK = 1 << 20


class UntrustedCheckpointError(FoundryError):
    """A checkpoint has no manifest, or does not match it: nothing of it was loaded."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in _UNCOVERED
    )


def write_manifest(folder: Path) -> Path:
    """Hash every file of ``folder`` into ``folder/manifest.json`` (temp file, fsync, rename)."""
    files = {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _files(folder)
    }
    body = json.dumps({"format": MANIFEST_FORMAT, "version": 1, "files": files}, indent=1, sort_keys=True)
    tmp = folder / f".{MANIFEST}.tmp"
    with tmp.open("w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(folder / MANIFEST)
    return folder / MANIFEST


def verify_checkpoint(folder: Path, *, trust_unverified: bool = False) -> bool:
    """Check ``folder`` against its manifest before anything in it is read; return True when verified.

    Raises :class:`UntrustedCheckpointError` naming the file at fault. A folder without a manifest
    (written before manifests existed, or copied by hand) is refused unless ``trust_unverified``
    (``foundry train --trust-checkpoint``) says its location is trusted; then False is returned.
    """
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if trust_unverified:
            return False
        raise UntrustedCheckpointError(
            f"{folder} has no checksum manifest ({MANIFEST}), so its integrity cannot be checked and it is "
            "not loaded. Checkpoints written by this Foundry version always have one. If you wrote this "
            "checkpoint and its folder is yours alone, pass --trust-checkpoint (API: trust_checkpoint=True)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        listed: dict[str, dict[str, Any]] = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(listed, dict):
            raise ValueError(f"not a {MANIFEST_FORMAT}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UntrustedCheckpointError(
            f"{manifest_path}: unreadable manifest ({exc}); the checkpoint is not loaded"
        ) from None
    present = {p.relative_to(folder).as_posix() for p in _files(folder)}
    extra = sorted(present - set(listed))
    if extra:
        raise UntrustedCheckpointError(
            f"{folder}: files not in its manifest: {', '.join(extra[:5])}; the checkpoint was modified after it "
            "was saved and is not loaded (remove those files if you put them there)"
        )
    for rel, entry in sorted(listed.items()):
        path = folder / rel
        if ".." in Path(rel).parts or not path.is_file():
            raise UntrustedCheckpointError(
                f"{path}: listed in {MANIFEST} but missing; the checkpoint is incomplete"
            )
        if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            raise UntrustedCheckpointError(
                f"{path}: checksum mismatch with {MANIFEST} (corrupt, truncated or replaced); the checkpoint is "
                "not loaded. Resume from another checkpoint (--resume <run>/checkpoints/step_XXXXXXXX)"
            )
    return True


# --------------------------------------------------------------------------- loading without arbitrary pickle


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import pathlib

    import torch.distributed.checkpoint.filesystem as dcp_fs
    import torch.distributed.checkpoint.metadata as dcp_meta
    import torch.serialization

    allowed: dict[tuple[str, str], Any] = {
        ("torch", "Size"): torch.Size,
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): dcp_fs._StorageInfo,
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    }
    for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"):
        allowed[("pathlib", name)] = getattr(pathlib, name)
    for name, value in vars(dcp_meta).items():  # dataclasses and enums describing shards
        if isinstance(value, type) and value.__module__ == dcp_meta.__name__:
            allowed[(dcp_meta.__name__, name)] = value
    for name, value in vars(torch).items():
        if isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
            allowed[("torch", name)] = value
    return allowed


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only DCP metadata objects; any other global (``os.system``, ``builtins.eval``) is refused."""

    allowed: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if not self.allowed:
            type(self).allowed = _allowed_globals()
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name} from a checkpoint's .metadata"
            ) from None


def load_dcp_metadata(stream: io.BufferedIOBase, where: str) -> Any:
    try:
        return _MetadataUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise UntrustedCheckpointError(
            f"{where}: not a valid DCP .metadata ({exc}); the checkpoint is not loaded"
        ) from None


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose ``.metadata`` is read with the allow-listed unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.metadata import StorageMeta

        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = load_dcp_metadata(f, str(path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor items (optimizer hyper-parameters, counters) read with ``weights_only=True``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        from torch.distributed.checkpoint._traverse import set_element  # what the parent class uses

        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def stored_shapes(folder: Path) -> dict[str, tuple[int, ...] | None]:
    """Every key in a (verified) DCP checkpoint: its global tensor shape, or None for a non-tensor item."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    with (folder / ".metadata").open("rb") as f:
        meta = load_dcp_metadata(f, str(folder / ".metadata"))
    return {
        key: tuple(md.size) if isinstance(md, TensorStorageMetadata) else None
        for key, md in meta.state_dict_metadata.items()
    }
