"""``foundry data train-tokenizer`` / ``foundry data tokenize``: shards with exact manifest counts, read back."""

from __future__ import annotations

import json

import torch

from foundry_core.cli.main import build_cli
from foundry_core.data.shards import count_samples, read_manifest
from foundry_core.data.text import TokenizedTextShards
from foundry_core.registry import BuildContext


def test_train_tokenizer_then_tokenize_and_read_back(tmp_path, foundry_pm, cli_runner):
    cli = build_cli(lambda: foundry_pm)
    (tmp_path / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": f"document number {i} " * 10}) for i in range(30)))
    res = cli_runner.invoke(cli, ["data", "train-tokenizer", str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"),
                                  "pydoc_topics", "--vocab-size", "400", "--out", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    res = cli_runner.invoke(cli, ["data", "tokenize", str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"),
                                  "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "shards"),
                                  "--seq-len", "15", "--shard-size", "7"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    shards = read_manifest(str(tmp_path / "shards"))
    assert len(shards) == summary["shards"] >= 2
    assert [s.num_sequences for s in shards] == [count_samples(s.url) for s in shards]  # exact counts
    assert sum(s.num_sequences for s in shards) == summary["sequences"]
    src = TokenizedTextShards.from_config(
        TokenizedTextShards.Config(manifest=str(tmp_path / "shards"), seq_len=15, vocab_size=400, shuffle=False,
                                   epochs=1),
        BuildContext(registry=None),  # type: ignore[arg-type]
    )
    batches = list(src.batches(1, rank=0, world_size=1, seed=0))
    assert len(batches) == summary["sequences"] and not src.count_mismatches
    first = torch.cat([b["input_ids"][0] for b in batches[:2]])
    from foundry_core.tokenizers import load_tokenizer

    assert load_tokenizer(tmp_path / "tok").decode(first[:20]).startswith("The quick brown fox")


def test_tokenize_bad_input_names_file_and_line(tmp_path, foundry_pm, cli_runner):
    cli = build_cli(lambda: foundry_pm)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "wrong key"}\n')
    res = cli_runner.invoke(cli, ["data", "tokenize", str(tmp_path / "bad.jsonl"), "--tokenizer", "byte",
                                  "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "bad.jsonl:2: expected an object with a string 'text' field" in res.output
