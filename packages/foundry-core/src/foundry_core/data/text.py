"""Text data sources: ``wds_text`` (pre-tokenized ``.json.gz`` id lists) and ``wds_text_untokenized``
(raw text tokenized on the fly), both WebDataset shards + ``manifest.jsonl`` read unchanged.

Documents are packed into windows of ``seq_len + 1`` tokens: ``input_ids = w[:-1]``, ``labels = w[1:]``
and ``document_ids`` (renumbered from 0 per row) so the model's attention never crosses documents; the
label of a position whose next token starts another document is -100. Raw text gets the tokenizer's
eos appended to every document; pre-tokenized members are documents themselves, or are split at
``eos_token_id`` when it is set (the reference shards are already packed with eos separators).

Each :meth:`batches` call starts from the beginning (so validation sees the same held-out batches
every time) unless :meth:`load_state_dict` was called before it. Order and resume: the seed gives each
epoch a shard order (and each shard a sample order); rank r of W reads only the shards at positions
r, r+W, ... of it and packs its own windows, so ranks see disjoint samples and each decodes only its
share of the stream (every rank used to decode all of it and keep 1/W). Each rank's cursor (epoch,
shard, sample, packing carry) is its own and records the world size: a run resumes exactly on the same
number of ranks, and resuming on another number is a clear error (the shards would be dealt differently).
A rank with no shard at all (more ranks than shards) is an error naming both counts. Manifest counts are verified against the members actually read (a mismatch
is logged and the real count is used); bad samples (corrupt gzip/JSON/UTF-8, empty document) are
logged with shard and key, counted, and fail the run past ``max_bad_samples``; a token id >=
``vocab_size`` is an immediate error.

``corpus: pydoc_topics`` (raw source) reads the paragraphs of Python's ``pydoc_data.topics`` (≈0.5 MB
of real English in the standard library) instead of shards, so recipes and tests run from a fresh clone.
``split: train|val`` keeps a stable hash-based share of the keys (``val_fraction``) for held-out data.

Test: ``uv run pytest packages/foundry-core/tests/test_llm_text_data.py``.
"""

from __future__ import annotations

import abc
import gzip
import json
import logging
import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from foundry_core.data.shards import BadSampleCounter, ShardInfo, iter_shard_samples, read_manifest
from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import eos_id, load_tokenizer

log = logging.getLogger(__name__)
Doc = tuple[str, list[int]]


def _in_split(key: str, split: str, val_fraction: float) -> bool:
    if split == "all":
        return True
    is_val = zlib.crc32(key.encode()) % 10_000 < val_fraction * 10_000
    return is_val if split == "val" else not is_val


class _TextSource(abc.ABC):
    """Packing, global order, rank slicing and the resumable cursor, shared by both text sources."""

    modality = "text"

    def __init__(self, *, shards: list[ShardInfo], seq_len: int, split: str, val_fraction: float, shuffle: bool,
                 epochs: int | None, max_bad_samples: int, name: str) -> None:
        if seq_len < 1:
            raise ConfigError(f"{name}: seq_len must be >= 1, got {seq_len}")
        self.shards = shards
        self.seq_len = seq_len
        self.split = split
        self.val_fraction = val_fraction
        self.shuffle = shuffle
        self.epochs = epochs
        self.name = name
        self.bad = BadSampleCounter(max_bad_samples, name)
        self.count_mismatches: dict[str, tuple[int, int]] = {}
        self._cursor: dict[str, Any] = self._fresh_cursor()
        self._resume: dict[str, Any] | None = None

    # ----------------------------------------------------------------- per-source decoding

    @abc.abstractmethod
    def _decode(self, shard: ShardInfo, key: str, parts: dict[str, bytes]) -> list[list[int]] | None:
        """Token-id documents of one sample, or None after reporting it as bad."""

    def _load_shard(self, index: int) -> list[Doc]:
        shard = self.shards[index]
        docs: list[Doc] = []
        n = 0
        for key, parts in iter_shard_samples(shard.url):
            n += 1
            if not _in_split(key, self.split, self.val_fraction):
                continue
            for j, ids in enumerate(self._decode(shard, key, parts) or []):
                docs.append((f"{key}#{j}" if j else key, ids))
        if n != shard.num_sequences and shard.name not in self.count_mismatches:
            self.count_mismatches[shard.name] = (shard.num_sequences, n)
            log.warning("%s:%d: shard %r claims num_sequences=%d but holds %d samples; using %d",
                        shard.manifest, shard.line, shard.name, shard.num_sequences, n, n)
        return docs

    # ----------------------------------------------------------------- the global stream

    @staticmethod
    def _fresh_cursor() -> dict[str, Any]:
        return {"epoch": 0, "shard_pos": 0, "sample_pos": 0, "carry": [], "carry_docs": [], "windows": 0,
                "world_size": None}

    def _shard_order(self, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's shards of the epoch: every ``world_size``-th of the seeded order, from ``rank``."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(f"{seed}/{epoch}").shuffle(order)
        return order[rank::world_size]

    def _windows(
        self, start: dict[str, Any], seed: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[list[int], list[int], dict[str, Any]]]:
        """Yield this rank's (tokens, doc ids, cursor after this window) from the cursor ``start`` on."""
        cur = dict(start)
        carry, carry_docs = list(cur["carry"]), list(cur["carry_docs"])
        need = self.seq_len + 1
        doc_counter = (carry_docs[-1] + 1) if carry_docs else 0
        while self.epochs is None or cur["epoch"] < self.epochs:
            order = self._shard_order(seed, cur["epoch"], rank, world_size)
            while cur["shard_pos"] < len(order):
                docs = self._load_shard(order[cur["shard_pos"]])
                if self.shuffle:
                    random.Random(f"{seed}/{cur['epoch']}/{order[cur['shard_pos']]}").shuffle(docs)
                while cur["sample_pos"] < len(docs):
                    carry.extend(docs[cur["sample_pos"]][1])
                    carry_docs.extend([doc_counter] * len(docs[cur["sample_pos"]][1]))
                    doc_counter += 1
                    cur["sample_pos"] += 1
                    while len(carry) >= need:
                        window, wdocs = carry[:need], carry_docs[:need]
                        carry, carry_docs = carry[need:], carry_docs[need:]
                        cur["windows"] += 1
                        yield window, wdocs, {**cur, "carry": list(carry), "carry_docs": list(carry_docs)}
                cur["shard_pos"] += 1
                cur["sample_pos"] = 0
            cur["epoch"] += 1
            cur["shard_pos"] = 0
            if cur["windows"] == 0:
                raise DataError(f"{self.name}: no sample of the {len(order)} shard(s) of rank {rank} "
                                f"(of {len(self.shards)}) yields {need} tokens (split={self.split})")

    def _row(self, window: list[int], wdocs: list[int]) -> dict[str, torch.Tensor]:
        t = torch.tensor(window, dtype=torch.long)
        d = torch.tensor(wdocs, dtype=torch.long)
        labels = t[1:].clone()
        labels[d[1:] != d[:-1]] = -100
        docs = d[:-1] - d[0]
        return {"input_ids": t[:-1], "labels": labels, "document_ids": docs}

    def batches(self, batch_size: int, *, rank: int, world_size: int, seed: int) -> Iterator[dict[str, Any]]:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if world_size > len(self.shards):
            raise DataError(f"{self.name}: {world_size} ranks but only {len(self.shards)} shard(s); every rank "
                            "reads its own shards: use at most as many ranks as shards, or split the shards")
        # a new iteration starts at the beginning unless a checkpoint's cursor was loaded (exact resume)
        start, self._resume = (self._resume or self._fresh_cursor()), None
        saved = start.get("world_size")
        if saved is not None and saved != world_size:
            raise DataError(f"{self.name}: the data cursor was saved on {saved} ranks but this run has {world_size}; "
                            f"each rank reads its own shards, so the stream continues exactly only on {saved} ranks")
        start = {**start, "world_size": world_size}
        self._cursor = start
        stream = self._windows(start, seed, rank, world_size)
        while True:
            rows = []
            for _ in range(batch_size):
                try:
                    window, wdocs, cursor = next(stream)
                except StopIteration:
                    return
                rows.append(self._row(window, wdocs))
            self._cursor = cursor
            batch: dict[str, Any] = {"modality": "text"}
            for k in ("input_ids", "labels", "document_ids"):
                batch[k] = torch.stack([r[k] for r in rows])
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {**self._cursor, "carry": list(self._cursor["carry"]), "carry_docs": list(self._cursor["carry_docs"]),
                "bad_samples": self.bad.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The next :meth:`batches` call continues from this cursor."""
        self._cursor = {k: state.get(k) if k == "world_size" else state[k] for k in self._fresh_cursor()}
        self._resume = dict(self._cursor)
        self.bad.count = int(state.get("bad_samples", 0))


def _shards_from(manifest: str | list[str], name: str) -> list[ShardInfo]:
    manifests = [manifest] if isinstance(manifest, str) else list(manifest)
    if not manifests:
        raise ConfigError(f"{name}.manifest: give at least one manifest path or URL")
    return [s for m in manifests for s in read_manifest(m)]


class TokenizedTextShards(_TextSource):
    """``wds_text``: members ``<key>.json.gz`` holding a JSON list of token ids."""

    @dataclass(kw_only=True)
    class Config:
        #: ``manifest.jsonl`` path/URL (or its folder), or a list of them.
        manifest: str | list[str]
        seq_len: int = 2048
        #: Token ids must be < vocab_size (checked per sample); set it to the model's vocab_size.
        vocab_size: int | None = None
        #: Split members into documents after each occurrence of this id (GPT-NeoX: 0).
        eos_token_id: int | None = None
        split: Literal["all", "train", "val"] = "all"
        val_fraction: float = 0.1
        shuffle: bool = True
        #: Passes over the data; ``null`` = forever (training). Validation sources usually set 1.
        epochs: int | None = None
        max_bad_samples: int = 100

    def __init__(self, cfg: TokenizedTextShards.Config) -> None:
        self.cfg = cfg
        super().__init__(shards=_shards_from(cfg.manifest, "wds_text"), seq_len=cfg.seq_len, split=cfg.split,
                         val_fraction=cfg.val_fraction, shuffle=cfg.shuffle, epochs=cfg.epochs,
                         max_bad_samples=cfg.max_bad_samples, name="wds_text")

    @classmethod
    def from_config(cls, cfg: TokenizedTextShards.Config, ctx: BuildContext) -> TokenizedTextShards:
        return cls(cfg)

    def _decode(self, shard: ShardInfo, key: str, parts: dict[str, bytes]) -> list[list[int]] | None:
        if "json.gz" not in parts:
            self.bad.skip(shard.url, key, f"no .json.gz member (has: {', '.join(sorted(parts)) or 'nothing'})")
            return None
        try:
            ids = json.loads(gzip.decompress(parts["json.gz"]))
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            self.bad.skip(shard.url, key, f"corrupt .json.gz ({exc})")
            return None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            self.bad.skip(shard.url, key, "the .json.gz member is not a list of integers")
            return None
        if not ids:
            self.bad.skip(shard.url, key, "empty document")
            return None
        vocab = self.cfg.vocab_size
        if vocab is not None and (max(ids) >= vocab or min(ids) < 0):
            bad = max(ids) if max(ids) >= vocab else min(ids)
            raise DataError(f"{shard.url}: sample {key!r} has token id {bad} outside the vocabulary [0, {vocab})")
        eos = self.cfg.eos_token_id
        if eos is None:
            return [ids]
        docs, start = [], 0
        for i, tok in enumerate(ids):
            if tok == eos:
                docs.append(ids[start : i + 1])
                start = i + 1
        if start < len(ids):
            docs.append(ids[start:])
        return docs


class RawTextShards(_TextSource):
    """``wds_text_untokenized``: members ``<key>.json`` / ``<key>.txt`` holding UTF-8 text (or JSON with ``text``)."""

    @dataclass(kw_only=True)
    class Config:
        manifest: str | list[str] | None = None
        #: A built-in corpus instead of shards (``pydoc_topics``: Python's stdlib docs, real English).
        corpus: Literal["pydoc_topics"] | None = None
        #: Local HF tokenizer folder or ``byte``; default: the run's tokenizer.
        tokenizer: str | None = None
        seq_len: int = 2048
        split: Literal["all", "train", "val"] = "all"
        val_fraction: float = 0.1
        shuffle: bool = True
        epochs: int | None = None
        max_bad_samples: int = 100

    def __init__(self, cfg: RawTextShards.Config, tokenizer: Any) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.eos = eos_id(tokenizer)
        self._corpus: list[list[tuple[str, str]]] | None = None
        if (cfg.manifest is None) == (cfg.corpus is None):
            raise ConfigError("wds_text_untokenized: give exactly one of manifest and corpus")
        if cfg.corpus is not None:
            self._corpus = _pydoc_corpus()
            shards = [ShardInfo(f"pydoc_data.topics[{i}]", f"pydoc-{i:02d}", len(s), "pydoc_data.topics", i + 1)
                      for i, s in enumerate(self._corpus)]
        else:
            shards = _shards_from(cfg.manifest, "wds_text_untokenized")
        self._tokenized: dict[int, list[Doc]] = {}
        super().__init__(shards=shards, seq_len=cfg.seq_len, split=cfg.split, val_fraction=cfg.val_fraction,
                         shuffle=cfg.shuffle, epochs=cfg.epochs, max_bad_samples=cfg.max_bad_samples,
                         name="wds_text_untokenized")

    @classmethod
    def from_config(cls, cfg: RawTextShards.Config, ctx: BuildContext) -> RawTextShards:
        if cfg.tokenizer is not None:
            tokenizer = load_tokenizer(cfg.tokenizer)
        elif ctx.tokenizer is not None:
            tokenizer = ctx.tokenizer
        else:
            raise ConfigError("wds_text_untokenized.tokenizer: give a tokenizer folder or 'byte' (the run has none)")
        return cls(cfg, tokenizer)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(x) + [self.eos] for x in ids]

    def _load_shard(self, index: int) -> list[Doc]:
        if self._corpus is None:
            return super()._load_shard(index)
        if index not in self._tokenized:  # the built-in corpus is small: tokenize once, keep in memory
            items = [(k, t) for k, t in self._corpus[index] if _in_split(k, self.split, self.val_fraction)]
            self._tokenized[index] = list(zip([k for k, _ in items], self._encode([t for _, t in items])))
        return list(self._tokenized[index])

    def _decode(self, shard: ShardInfo, key: str, parts: dict[str, bytes]) -> list[list[int]] | None:
        text, problem = member_text(parts)
        if text is None:
            self.bad.skip(shard.url, key, problem)
            return None
        return self._encode([text])


def member_text(parts: dict[str, bytes]) -> tuple[str | None, str]:
    """The document text of a raw-text sample (``.json``: raw UTF-8 or JSON with ``text``; ``.txt``), or (None, why)."""
    ext = "json" if "json" in parts else "txt" if "txt" in parts else None
    if ext is None:
        return None, f"no .json/.txt member (has: {', '.join(sorted(parts)) or 'nothing'})"
    try:
        text = parts[ext].decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 ({exc})"
    if text.lstrip().startswith("{"):  # JSON with a text field (raw text despite .json is the common case)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if not isinstance(obj.get("text"), str):
                return None, "JSON member without a string 'text' field"
            text = obj["text"]
    if not text.strip():
        return None, "empty document"
    return text, ""


def pydoc_documents() -> list[tuple[str, str]]:
    """All (key, paragraph) pairs of ``pydoc_data.topics``."""
    return [d for shard in _pydoc_corpus() for d in shard]


def _pydoc_corpus(n_shards: int = 16) -> list[list[tuple[str, str]]]:
    """Paragraphs of ``pydoc_data.topics`` as (key, text), dealt round-robin into pseudo-shards."""
    from pydoc_data.topics import topics

    paragraphs = [
        (f"{name}/{i}", p.strip())
        for name in sorted(topics)
        for i, p in enumerate(topics[name].split("\n\n"))
        if p.strip()
    ]
    return [paragraphs[i::n_shards] for i in range(n_shards)]
