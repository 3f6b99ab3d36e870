"""``foundry data tokenize`` and ``foundry data train-tokenizer``: text in, shards / a tokenizer out.

Text inputs (any mix): ``.txt`` files (one document each), ``.jsonl`` files (one ``{"text": ...}``
per line), raw-text WebDataset datasets (a ``manifest.jsonl`` path or URL, or its folder), and
``pydoc_topics`` (Python's stdlib documentation). Tokenized output is the reference layout that
``wds_text`` reads: tar shards of ``<key>.json.gz`` lists of ``seq_len + 1`` ids (documents packed
with an eos after each one) plus ``manifest.jsonl`` whose ``num_sequences`` are exact (and
``num_tokens``). The output may be a local folder or any fsspec URL.

Test: ``uv run pytest packages/foundry-core/tests/test_llm_tokenize_cli.py``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fsspec

from foundry_core.data.shards import iter_shard_samples, read_manifest
from foundry_core.data.text import member_text, pydoc_documents
from foundry_core.errors import DataError
from foundry_core.tokenizers import eos_id

log = logging.getLogger(__name__)


def iter_texts(inputs: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Yield (source:key, text) for every non-empty document of ``inputs``; bad input names file and key."""
    for spec in inputs:
        if spec == "pydoc_topics":
            yield from ((f"pydoc:{k}", t) for k, t in pydoc_documents())
            continue
        path = Path(spec)
        if spec.endswith(".txt") and path.is_file():
            text = path.read_text(encoding="utf-8")
            if text.strip():
                yield str(path), text
            else:
                log.warning("skipping empty document %s", path)
        elif spec.endswith(".jsonl") and path.is_file() and path.name != "manifest.jsonl":
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise DataError(f"{path}:{i}: expected an object with a string 'text' field")
                if obj["text"].strip():
                    yield f"{path}:{i}", obj["text"]
                else:
                    log.warning("skipping empty document %s:%d", path, i)
        else:
            for shard in read_manifest(spec):
                for key, parts in iter_shard_samples(shard.url):
                    text, problem = member_text(parts)
                    if text is None:
                        log.warning("skipping sample %r of %s: %s", key, shard.url, problem)
                        continue
                    yield f"{shard.name}/{key}", text


def _write_shard(url: str, windows: list[list[int]], first_index: int) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for j, ids in enumerate(windows):
            data = gzip.compress(json.dumps(ids).encode())
            info = tarfile.TarInfo(f"{first_index + j:09d}.json.gz")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with fsspec.open(url, "wb") as f:
        f.write(buf.getvalue())


def tokenize_to_shards(
    texts: Iterator[tuple[str, str]], tokenizer: Any, out_dir: str, *, seq_len: int, shard_size: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Pack tokenized documents into ``seq_len + 1`` windows, ``shard_size`` per shard; returns a summary."""
    from rich.progress import Progress

    if seq_len < 1 or shard_size < 1:
        raise DataError(f"seq_len and shard_size must be >= 1, got {seq_len} and {shard_size}")
    fs, root = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    base = out_dir.rstrip("/")
    eos = eos_id(tokenizer)
    need = seq_len + 1
    carry: list[int] = []
    pending: list[list[int]] = []
    manifest: list[dict[str, Any]] = []
    docs = windows = 0

    def flush() -> None:
        name = f"shard_{len(manifest):06d}"
        _write_shard(f"{base}/{name}.tar", pending, windows - len(pending))
        manifest.append({"shard": name, "num_sequences": len(pending), "num_tokens": len(pending) * need})
        pending.clear()

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("tokenizing", total=None)
        for _, text in texts:
            carry.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            carry.append(eos)
            docs += 1
            while len(carry) >= need:
                pending.append(carry[:need])
                carry = carry[need:]
                windows += 1
                if len(pending) == shard_size:
                    flush()
            bar.update(task, advance=1, description=f"tokenizing: {docs} documents, {windows} sequences")
    if pending:
        flush()
    if not manifest:
        raise DataError(f"the inputs hold {len(carry)} tokens in {docs} documents: less than one sequence of {need}")
    with fsspec.open(f"{base}/manifest.jsonl", "w") as f:
        for entry in manifest:
            f.write(json.dumps(entry) + "\n")
    return {"documents": docs, "sequences": windows, "shards": len(manifest), "tokens": windows * need,
            "dropped_tail_tokens": len(carry), "out": out_dir}
