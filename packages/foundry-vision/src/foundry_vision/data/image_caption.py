"""``wds_image_caption`` data source: image-caption WebDataset shards + ``manifest.jsonl``, read unchanged.

Layout (the reference system's, see REFERENCE.md §b.1-b.2): ``manifest.jsonl`` lines
``{"shard": "shard-0000", "num_sequences": 8}`` next to ``shard-0000.tar``; inside a tar, members
``<key>.webp|jpg|jpeg|png`` + ``<key>.txt`` (or ``<key>.json`` with a ``caption`` field) form one sample.

Why an index instead of streaming: a tar's headers, read once (cheap), give every sample's byte range,
and the order is a seeded permutation of *global* sample positions: rank ``r`` of ``W`` takes positions
``r, r+W, ...`` and the cursor counts global samples, so a resume is exact even on another world size.
Augmentation randomness is seeded per (seed, epoch, position) as well. The positions are planned from
the manifest's ``num_sequences`` alone, so start-up opens no tar (a corpus of thousands of remote shards
would otherwise read every header before the first step); a shard is indexed the first time one of its
samples is read, and a count that differs from the manifest's is then an error naming the manifest line.

Batch: ``{"modality": "image_caption", "images": uint8 [B, 1, 3, S, S], "captions": [...],
"prompts": [...], "keys": [...]}``.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_image_caption.py``.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import tarfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fsspec
import torch

from foundry_core.data.shards import read_manifest, split_member_name
from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext
from foundry_vision.preprocess import AugmentConfig, augment_resize

IMAGE_EXTS = ("webp", "jpg", "jpeg", "png")


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's members lie: the shard URL and (offset, size) per extension."""

    shard: str
    key: str
    members: tuple[tuple[str, int, int], ...]


def index_shard(url: str) -> list[SampleRef]:
    """Read a tar's headers and group members by key (the part before the first dot of the basename)."""
    groups: dict[str, list[tuple[str, int, int]]] = {}
    try:
        with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = split_member_name(m.name)
                groups.setdefault(key, []).append((ext.lower(), m.offset_data, m.size))
    except FileNotFoundError:
        raise DataError(f"shard not found: {url} (listed in the manifest)") from None
    except tarfile.TarError as exc:
        raise DataError(f"{url}: not a readable tar file: {exc}") from None
    return [SampleRef(url, key, tuple(members)) for key, members in groups.items()]


class ImageCaptionShards:
    """Image-caption pairs from WebDataset shards; see the module docstring."""

    modality = "image_caption"

    @dataclass(kw_only=True)
    class Config:
        #: Folder with ``manifest.jsonl`` (or the manifest file itself); local path or fsspec URL.
        path: str
        #: Images are resized (after augmentation) to ``image_size x image_size``.
        image_size: int = 224
        augment: AugmentConfig = field(default_factory=AugmentConfig)
        #: Prompt given with every image (the model puts the image placeholder before it).
        prompt: str = ""
        #: Threads decoding images (PIL releases the GIL while decoding).
        num_workers: int = 2
        shuffle: bool = True

    def __init__(self, cfg: Config) -> None:
        if cfg.image_size < 1:
            raise ConfigError(f"wds_image_caption.image_size must be >= 1, got {cfg.image_size}")
        self.cfg = cfg
        self.shards = [s for s in read_manifest(cfg.path) if s.num_sequences > 0]
        self._starts = list(itertools.accumulate((s.num_sequences for s in self.shards), initial=0))
        if self._starts[-1] == 0:
            raise DataError(f"wds_image_caption: no samples under {cfg.path}")
        self._indexed: dict[int, list[SampleRef]] = {}  # shard position -> its samples, filled on first read
        self._index_lock = threading.Lock()  # reader threads must not index one shard twice
        self._cursor = 0  # global samples consumed (all ranks)
        self._orders: dict[tuple[int, int], list[int]] = {}
        self._pool = ThreadPoolExecutor(max(1, cfg.num_workers)) if cfg.num_workers > 1 else None

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> ImageCaptionShards:
        return cls(cfg)

    def __len__(self) -> int:
        return self._starts[-1]

    def sample_ref(self, index: int) -> SampleRef:
        """The ``index``-th sample of the manifest order; its shard's headers are read on first use."""
        i = bisect.bisect_right(self._starts, index) - 1
        refs = self._indexed.get(i)
        if refs is None:
            with self._index_lock:
                refs = self._indexed.get(i)
                if refs is None:
                    shard = self.shards[i]
                    refs = index_shard(shard.url)
                    if len(refs) != shard.num_sequences:
                        raise DataError(
                            f"{shard.manifest}:{shard.line}: shard {shard.name!r} claims num_sequences="
                            f"{shard.num_sequences} but holds {len(refs)} samples; fix the manifest (the sample "
                            "order is planned from its counts)"
                        )
                    self._indexed[i] = refs
        return refs[index - self._starts[i]]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self._cursor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._cursor = int(state["cursor"])

    # ------------------------------------------------------------------ reading

    def _order(self, epoch: int, seed: int) -> list[int]:
        key = (epoch, seed)
        if key not in self._orders:
            if self.cfg.shuffle:
                g = torch.Generator().manual_seed(seed * 100_003 + epoch)
                order = torch.randperm(len(self), generator=g).tolist()
            else:
                order = list(range(len(self)))
            self._orders = {key: order, **dict(list(self._orders.items())[-1:])}
        return self._orders[key]

    def load_sample(self, index: int, aug_seed: int) -> dict[str, Any]:
        """Decode, augment and resize one sample; errors name the shard and the sample key."""
        from PIL import Image, UnidentifiedImageError

        ref = self.sample_ref(index)
        members = {ext: (off, size) for ext, off, size in ref.members}
        where = f"{ref.shard} sample {ref.key!r}"
        image_ext = next((e for e in IMAGE_EXTS if e in members), None)
        if image_ext is None:
            raise DataError(f"{where}: no image member (.{'/.'.join(IMAGE_EXTS)}); members: {sorted(members)}")
        with fsspec.open(ref.shard, "rb") as f:

            def read(ext: str) -> bytes:
                off, size = members[ext]
                f.seek(off)
                return f.read(size)

            raw_image = read(image_ext)
            caption = None
            if "txt" in members:
                caption = read("txt").decode("utf-8", errors="replace").strip()
            elif "json" in members:
                try:
                    caption = json.loads(read("json")).get("caption")
                except (ValueError, AttributeError):
                    caption = None
        if not caption:
            raise DataError(f"{where}: missing caption (no non-empty .txt and no 'caption' in .json)")
        try:
            img = Image.open(io.BytesIO(raw_image))
            img.draft("RGB", (self.cfg.image_size * 2, self.cfg.image_size * 2))
            img = img.convert("RGB")
            # shrink big images early: augmentation then works on ~2x the target size
            factor = min(img.size) // (2 * self.cfg.image_size)
            if factor > 1:
                img = img.reduce(factor)  # box-filter by an integer factor: much cheaper than a resize
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"{where}: undecodable .{image_ext} image: {exc}") from None
        arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
        g = torch.Generator().manual_seed(aug_seed)
        image = augment_resize(arr.permute(2, 0, 1), self.cfg.image_size, self.cfg.augment, g)
        return {"image": image, "caption": caption, "key": ref.key}

    def batches(self, batch_size: int, *, rank: int, world_size: int, seed: int) -> Iterator[dict[str, Any]]:
        """Yield batches forever; each epoch is a new seeded permutation of all samples."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        n = len(self)
        while True:
            positions = [self._cursor + i * world_size + rank for i in range(batch_size)]
            jobs = []
            for pos in positions:
                epoch, within = divmod(pos, n)
                jobs.append((self._order(epoch, seed)[within], seed * 1_000_003 + pos))
            if self._pool is not None:
                samples = list(self._pool.map(lambda j: self.load_sample(*j), jobs))
            else:
                samples = [self.load_sample(*j) for j in jobs]
            self._cursor += batch_size * world_size
            yield {
                "modality": self.modality,
                "images": torch.stack([s["image"] for s in samples])[:, None],
                "captions": [s["caption"] for s in samples],
                "prompts": [self.cfg.prompt] * batch_size,
                "keys": [s["key"] for s in samples],
            }
