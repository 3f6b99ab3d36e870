"""WebDataset shards + ``manifest.jsonl`` (the reference system's layout), read from any fsspec URL.

A dataset is a folder (local path, ``s3://``, ``gs://``, ``file://`` ...) with ``manifest.jsonl``:
one ``{"shard": "<name>", "num_sequences": <int>}`` per line; the shard file is ``<name>.tar``
beside the manifest (a name that already ends in ``.tar`` is accepted). Inside a tar, members that
share a key prefix form one sample: ``<key>.<ext>`` where the extension starts at the first dot of
the file name (``0001.lowdim.npz`` → key ``0001``, ext ``lowdim.npz``).

Generic on purpose: text and image-caption sources (and any plugin) use :func:`read_manifest` and
:func:`iter_shard_samples`. Test: ``uv run pytest packages/foundry-core/tests/test_llm_shards.py``.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

from foundry_core.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardInfo:
    """One manifest line: the shard's URL, its name and the sample count the manifest claims."""

    url: str
    name: str
    num_sequences: int
    manifest: str
    line: int


def _join(base: str, name: str) -> str:
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return posixpath.join(base, name) if base else name


def read_manifest(path_or_url: str, *, check_exists: bool = True) -> list[ShardInfo]:
    """Parse ``manifest.jsonl`` (or the folder holding it); every problem names the file and line."""
    url = str(path_or_url)
    if not url.endswith(".jsonl"):
        url = _join(url, "manifest.jsonl")
    base = url.rsplit("/", 1)[0] if "/" in url else ""
    try:
        with fsspec.open(url, "rt") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"manifest not found: {url}") from None
    shards: list[ShardInfo] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{url}:{i}: not valid JSON ({exc.msg})") from None
        if not isinstance(entry, dict):
            raise DataError(f"{url}:{i}: expected a JSON object, got {line.strip()!r}")
        missing = [k for k in ("shard", "num_sequences") if k not in entry]
        if missing:
            raise DataError(f"{url}:{i}: missing field(s) {', '.join(missing)} in {line.strip()!r}")
        name = str(entry["shard"])
        if name.endswith(".tar"):  # the reference docs show names with .tar; its loader would make .tar.tar
            name = name[: -len(".tar")]
        count = entry["num_sequences"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise DataError(f"{url}:{i}: num_sequences must be a non-negative integer, got {count!r}")
        shards.append(ShardInfo(_join(base, name + ".tar"), name, count, url, i))
    if not shards:
        raise DataError(f"{url}: the manifest lists no shards")
    if check_exists:
        fs, _ = fsspec.core.url_to_fs(shards[0].url)
        for s in shards:
            if not fs.exists(s.url):
                raise DataError(f"{s.manifest}:{s.line}: shard {s.name!r} not found at {s.url}")
    return shards


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/0001.lowdim.npz`` -> (``dir/0001``, ``lowdim.npz``): the extension starts at the basename's first dot."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{head}/{stem}" if head else stem
    return key, ext if dot else ""


def iter_shard_samples(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` per sample, in tar order. A broken tar is a :class:`DataError` naming the shard.

    Members of one sample must be adjacent (the WebDataset convention); a key seen again later is an error.
    """
    seen: set[str] = set()
    current: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with fsspec.open(url, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_member_name(member.name)
                if key.startswith("__") or ext == "":
                    continue
                if key != current:
                    if current is not None:
                        yield current, parts
                    if key in seen:
                        raise DataError(f"{url}: members of sample {key!r} are not adjacent in the tar")
                    seen.add(key)
                    current, parts = key, {}
                data = tar.extractfile(member)
                parts[ext] = data.read() if data is not None else b""
    except FileNotFoundError:
        raise DataError(f"shard not found: {url}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{url}: corrupt or truncated tar ({exc})") from None
    if current is not None:
        yield current, parts


def count_samples(url: str) -> int:
    """Number of samples in a shard (reads the tar headers and member bytes once)."""
    return sum(1 for _ in iter_shard_samples(url))


class BadSampleCounter:
    """Counts skipped samples (logged with shard and key) and fails once more than ``limit`` were skipped."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.count = 0

    def skip(self, shard: str, key: str, reason: str) -> None:
        self.count += 1
        log.warning("%s: skipping sample %r of %s: %s (%d skipped so far, limit %d)",
                    self.what, key, shard, reason, self.count, self.limit)
        if self.count > self.limit:
            raise DataError(
                f"{self.what}: {self.count} bad samples (limit max_bad_samples={self.limit}); "
                f"last: {key!r} in {shard}: {reason}"
            )
