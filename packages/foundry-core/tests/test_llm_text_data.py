"""Shards reader and text sources: manifests, bad input, packing, determinism, resume, ranks, s3://."""

from __future__ import annotations

import gzip
import io
import json
import logging
import socket
import tarfile

import pytest
import torch

from foundry_core.data.shards import iter_shard_samples, read_manifest, split_member_name
from foundry_core.data.text import RawTextShards, TokenizedTextShards
from foundry_core.errors import DataError
from foundry_core.registry import BuildContext
from foundry_core.tokenizers import byte_tokenizer


def write_shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, parts in samples.items():
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def gz_ids(ids: list[int]) -> bytes:
    return gzip.compress(json.dumps(ids).encode())


def make_tokenized(tmp_path, n_shards=3, per_shard=4, doc_len=10, manifest_name_suffix=""):
    lines = []
    for s in range(n_shards):
        samples = {f"{s:02d}{i:03d}": {"json.gz": gz_ids([100 * s + i] * doc_len)} for i in range(per_shard)}
        write_shard(tmp_path / f"shard_{s:04d}.tar", samples)
        lines.append(json.dumps({"shard": f"shard_{s:04d}{manifest_name_suffix}", "num_sequences": per_shard}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.jsonl"


def build(cls, **fields):
    return cls.from_config(cls.Config(**fields), BuildContext(registry=None))  # type: ignore[arg-type]


def take(source, n, batch_size=2, rank=0, world_size=1, seed=0):
    it = source.batches(batch_size, rank=rank, world_size=world_size, seed=seed)
    return [next(it) for _ in range(n)]


# ------------------------------------------------------------------ shards.py


def test_manifest_accepts_names_with_and_without_tar(tmp_path):
    make_tokenized(tmp_path, manifest_name_suffix=".tar")
    shards = read_manifest(str(tmp_path))
    assert [s.url for s in shards] == [str(tmp_path / f"shard_{i:04d}.tar") for i in range(3)]


def test_manifest_errors_name_file_and_line(tmp_path):
    make_tokenized(tmp_path)
    m = tmp_path / "manifest.jsonl"
    m.write_text('{"shard": "shard_0000", "num_sequences": 4}\n{"shard": "shard_0001"}\n')
    with pytest.raises(DataError, match=r"manifest.jsonl:2: missing field\(s\) num_sequences"):
        read_manifest(str(m))
    m.write_text('{"shard": "shard_0000", "num_sequences": 4}\n{"shard": "nope", "num_sequences": 4}\n')
    with pytest.raises(DataError, match=r"manifest.jsonl:2: shard 'nope' not found"):
        read_manifest(str(m))
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(str(tmp_path / "missing"))


def test_member_names_and_corrupt_tar(tmp_path):
    assert split_member_name("a/0001.lowdim.npz") == ("a/0001", "lowdim.npz")
    assert split_member_name("k.scene_left_0_t-1.jpg") == ("k", "scene_left_0_t-1.jpg")
    write_shard(tmp_path / "s.tar", {"x": {"json.gz": gz_ids([1, 2]), "txt": b"hi"}, "y": {"txt": b"yo"}})
    assert [(k, sorted(p)) for k, p in iter_shard_samples(str(tmp_path / "s.tar"))] == [
        ("x", ["json.gz", "txt"]), ("y", ["txt"])
    ]
    data = (tmp_path / "s.tar").read_bytes()
    (tmp_path / "bad.tar").write_bytes(data[:700])
    with pytest.raises(DataError, match="bad.tar: corrupt or truncated"):
        list(iter_shard_samples(str(tmp_path / "bad.tar")))


# ------------------------------------------------------------------ shared reference data


def test_shared_text_shards_count_mismatch_and_packing(shared_data, caplog):
    root = shared_data / "vla_foundry/tiny_dataset/text/text_dataset_1"
    src = build(TokenizedTextShards, manifest=str(root), seq_len=2048, vocab_size=50304, shuffle=False)
    with caplog.at_level(logging.WARNING):
        (batch,) = take(src, 1, batch_size=2)
    assert "claims num_sequences=512 but holds 32" in caplog.text
    assert src.count_mismatches["shard-0000"] == (512, 32)
    assert batch["input_ids"].shape == (2, 2048) and int(batch["input_ids"].max()) < 50304
    # one 2049-id member per window: the labels are the inputs shifted by one
    assert torch.equal(batch["labels"][0, :-1], batch["input_ids"][0, 1:])
    split = build(TokenizedTextShards, manifest=str(root), seq_len=256, eos_token_id=0)
    (b,) = take(split, 1, batch_size=8)
    assert int(b["document_ids"].max()) >= 1  # the reference windows hold several eos-separated documents
    assert bool((b["labels"] == -100).any())


def test_shared_untokenized_shards(shared_data):
    root = shared_data / "vla_foundry/tiny_dataset/text_untokenized"
    src = build(RawTextShards, manifest=str(root), tokenizer="byte", seq_len=64)
    (batch,) = take(src, 1, batch_size=3)
    assert batch["input_ids"].shape == (3, 64) and int(batch["input_ids"].max()) < 261


# ------------------------------------------------------------------ bad input


def test_corrupt_member_is_logged_counted_and_limited(tmp_path, caplog):
    write_shard(tmp_path / "s.tar", {"a": {"json.gz": gz_ids([1] * 9)}, "b": {"json.gz": b"not gzip"},
                                      "c": {"json.gz": gz_ids([2] * 9)}})
    (tmp_path / "manifest.jsonl").write_text('{"shard": "s", "num_sequences": 3}\n')
    src = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=8, shuffle=False, epochs=1)
    with caplog.at_level(logging.WARNING):
        batches = list(src.batches(1, rank=0, world_size=1, seed=0))
    assert len(batches) == 2 and src.bad.count == 1
    assert "skipping sample 'b'" in caplog.text and "corrupt .json.gz" in caplog.text
    strict = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=8, shuffle=False, max_bad_samples=0)
    with pytest.raises(DataError, match=r"'b' in .*s.tar: corrupt"):
        take(strict, 2, batch_size=1)


def test_empty_document_and_out_of_vocab_id(tmp_path):
    write_shard(tmp_path / "s.tar", {"a": {"json": b"hello world"}, "b": {"json": b"  "}, "c": {"txt": b"more text"}})
    (tmp_path / "manifest.jsonl").write_text('{"shard": "s", "num_sequences": 3}\n')
    strict = build(RawTextShards, manifest=str(tmp_path), tokenizer="byte", seq_len=4, max_bad_samples=0, shuffle=False)
    with pytest.raises(DataError, match="'b' in .*s.tar: empty document"):
        take(strict, 5, batch_size=1)
    write_shard(tmp_path / "t.tar", {"k1": {"json.gz": gz_ids([1, 2, 999])}})
    (tmp_path / "manifest.jsonl").write_text('{"shard": "t", "num_sequences": 1}\n')
    src = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=2, vocab_size=500)
    with pytest.raises(DataError, match="t.tar: sample 'k1' has token id 999"):
        take(src, 1, batch_size=1)


# ------------------------------------------------------------------ order, resume, ranks


def test_deterministic_order_from_seed(tmp_path):
    make_tokenized(tmp_path)
    a = take(build(TokenizedTextShards, manifest=str(tmp_path), seq_len=9), 5, seed=1)
    b = take(build(TokenizedTextShards, manifest=str(tmp_path), seq_len=9), 5, seed=1)
    c = take(build(TokenizedTextShards, manifest=str(tmp_path), seq_len=9), 5, seed=2)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c))


def test_packing_marks_document_boundaries(tmp_path):
    make_tokenized(tmp_path, doc_len=5)
    (b,) = take(build(TokenizedTextShards, manifest=str(tmp_path), seq_len=11, shuffle=False), 1, batch_size=1)
    # documents of 5 ids: [d0 x5, d1 x5, d2 x2] -> inputs 11, boundary labels at 4 and 9 ignored
    assert b["document_ids"][0].tolist() == [0] * 5 + [1] * 5 + [2]
    assert (b["labels"][0] == -100).nonzero().flatten().tolist() == [4, 9]


def test_resume_is_exact_per_rank_and_another_world_size_is_a_clear_error(tmp_path):
    make_tokenized(tmp_path, n_shards=4, doc_len=7)
    for rank in (0, 1):
        ref = take(build(TokenizedTextShards, manifest=str(tmp_path), seq_len=5), 12, rank=rank, world_size=2, seed=3)
        src = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=5)
        take(src, 5, rank=rank, world_size=2, seed=3)
        state = json.loads(json.dumps(src.state_dict()))  # must survive JSON
        again = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=5)
        again.load_state_dict(state)
        for x, y in zip(take(again, 7, rank=rank, world_size=2, seed=3), ref[5:]):
            assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    other = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=5)
    other.load_state_dict(state)
    with pytest.raises(DataError, match="wds_text: the data cursor was saved on 2 ranks but this run has 1"):
        take(other, 1)


def test_each_rank_decodes_only_its_shards(tmp_path, monkeypatch):
    from foundry_core.data import text

    make_tokenized(tmp_path, n_shards=4, per_shard=3, doc_len=9)
    read: dict[int, list[str]] = {0: [], 1: []}
    real = text.iter_shard_samples
    for rank in (0, 1):
        monkeypatch.setattr(text, "iter_shard_samples", lambda url, r=rank: read[r].append(url) or real(url))
        src = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=8, epochs=1)
        n = sum(b["input_ids"].shape[0] for b in src.batches(1, rank=rank, world_size=2, seed=0))
        assert n == 6  # its 2 shards x 3 one-window documents
    assert len(read[0]) == len(read[1]) == 2 and not set(read[0]) & set(read[1])
    with pytest.raises(DataError, match="5 ranks but only 4 shard"):
        take(build(TokenizedTextShards, manifest=str(tmp_path), seq_len=8), 1, rank=0, world_size=5)


def test_ranks_are_disjoint(tmp_path):
    make_tokenized(tmp_path, n_shards=4, per_shard=6, doc_len=9)
    rows = []
    for rank in range(2):
        src = build(TokenizedTextShards, manifest=str(tmp_path), seq_len=8, epochs=1)
        rows.append([tuple(r.tolist()) for b in src.batches(2, rank=rank, world_size=2, seed=0) for r in b["input_ids"]])
    assert rows[0] and not set(rows[0]) & set(rows[1])
    assert len(rows[0]) + len(rows[1]) == 24


def test_pydoc_corpus_splits_are_disjoint():
    tok = byte_tokenizer()
    train = RawTextShards(RawTextShards.Config(corpus="pydoc_topics", seq_len=64, split="train"), tok)
    val = RawTextShards(RawTextShards.Config(corpus="pydoc_topics", seq_len=64, split="val"), tok)
    tk = {k for i in range(len(train.shards)) for k, _ in train._load_shard(i)}
    vk = {k for i in range(len(val.shards)) for k, _ in val._load_shard(i)}
    assert tk and vk and not tk & vk and 0.05 < len(vk) / (len(tk) + len(vk)) < 0.15
    (b,) = take(train, 1, batch_size=2)
    assert b["input_ids"].shape == (2, 64)


# ------------------------------------------------------------------ s3://


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory):
    """A local S3-compatible server (moto) holding a small tokenized dataset; one per module."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    local = tmp_path_factory.mktemp("s3data")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        import fsspec
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        fs.mkdir("data-bucket")
        make_tokenized(local, doc_len=7)
        fs.put(str(local) + "/", "data-bucket/text/", recursive=True)
        yield "s3://data-bucket/text", local
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_reads_shards_from_s3(s3_url):
    url, local = s3_url
    shards = read_manifest(url)
    assert shards[0].url == "s3://data-bucket/text/shard_0000.tar"
    remote = take(build(TokenizedTextShards, manifest=url, seq_len=6), 3, seed=4)
    here = take(build(TokenizedTextShards, manifest=str(local), seq_len=6), 3, seed=4)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(remote, here))


def test_tokenize_writes_shards_to_s3(s3_url):
    from foundry_core.data.shards import count_samples
    from foundry_core.data.tokenize_cli import tokenize_to_shards

    texts = iter([(f"d{i}", f"document {i} " * 5) for i in range(20)])
    summary = tokenize_to_shards(texts, byte_tokenizer(), "s3://data-bucket/tok", seq_len=15, shard_size=4,
                                 progress=False)
    shards = read_manifest("s3://data-bucket/tok")
    assert len(shards) == summary["shards"] and [s.num_sequences for s in shards] == [count_samples(s.url) for s in shards]
    src = build(TokenizedTextShards, manifest="s3://data-bucket/tok", seq_len=15, epochs=1, vocab_size=261)
    assert sum(b["input_ids"].shape[0] for b in src.batches(1, rank=0, world_size=1, seed=0)) == summary["sequences"]
