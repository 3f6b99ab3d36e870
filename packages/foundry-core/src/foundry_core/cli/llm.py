"""Built-in LLM commands: ``foundry data tokenize``, ``foundry data train-tokenizer``, ``foundry eval lm``.

Bodies import torch/transformers lazily so ``foundry --help`` stays fast.
Test: ``uv run pytest packages/foundry-core/tests/test_llm_tokenize_cli.py packages/foundry-core/tests/test_llm_eval.py``.
"""

from __future__ import annotations

import json

import click


def add_llm_commands(cli: click.Group) -> None:
    data = cli.commands["data"]
    evaluate = cli.commands["eval"]
    assert isinstance(data, click.Group) and isinstance(evaluate, click.Group)

    @data.command("train-tokenizer")
    @click.argument("inputs", nargs=-1, required=True)
    @click.option("--vocab-size", type=int, required=True, help="Total size: 256 bytes + special tokens + merges.")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output tokenizer folder.")
    def train_tokenizer(inputs: tuple[str, ...], vocab_size: int, out_dir: str) -> None:
        """Train a byte-level BPE on INPUTS (.txt, .jsonl with 'text', raw-text manifests, pydoc_topics)."""
        from foundry_core.data.tokenize_cli import iter_texts
        from foundry_core.tokenizers import train_bpe

        tok = train_bpe((t for _, t in iter_texts(inputs)), vocab_size, out_dir)
        click.echo(f"wrote {out_dir}: {len(tok)} tokens")

    @data.command("tokenize")
    @click.argument("inputs", nargs=-1, required=True)
    @click.option("--tokenizer", required=True, help="Local HF tokenizer folder or 'byte'.")
    @click.option("--out", "out_dir", required=True, help="Output folder or fsspec URL.")
    @click.option("--seq-len", type=int, default=2048, show_default=True, help="Each sequence holds seq_len + 1 ids.")
    @click.option("--shard-size", type=int, default=1024, show_default=True, help="Sequences per shard.")
    def tokenize(inputs: tuple[str, ...], tokenizer: str, out_dir: str, seq_len: int, shard_size: int) -> None:
        """Tokenize INPUTS into WebDataset shards + manifest.jsonl (the format wds_text reads)."""
        from foundry_core.data.tokenize_cli import iter_texts, tokenize_to_shards
        from foundry_core.tokenizers import load_tokenizer

        summary = tokenize_to_shards(iter_texts(inputs), load_tokenizer(tokenizer), out_dir,
                                     seq_len=seq_len, shard_size=shard_size)
        click.echo(json.dumps(summary))

    @evaluate.command("lm")
    @click.option("--model", "model_path", required=True, help="A Foundry export folder or a HF causal-LM folder.")
    @click.option("--tasks", multiple=True, help="Multiple-choice JSONL task file (repeatable).")
    @click.option("--val", "val_manifest", multiple=True, help="Held-out text: a tokenized manifest, or pydoc_topics.")
    @click.option("--seq-len", type=int, default=512, show_default=True)
    @click.option("--val-batches", type=int, default=16, show_default=True)
    @click.option("--batch-size", type=int, default=8, show_default=True)
    @click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Also write results here.")
    def eval_lm(model_path: str, tasks: tuple[str, ...], val_manifest: tuple[str, ...], seq_len: int,
                val_batches: int, batch_size: int, json_out: str | None) -> None:
        """Multiple-choice accuracy (Wilson 95% CI) on local task files and perplexity on held-out text."""
        from pathlib import Path

        from foundry_core.errors import ConfigError
        from foundry_core.evaluation.lm import evaluate_loss, load_lm, load_mc_tasks, score_mc

        if not tasks and not val_manifest:
            raise ConfigError("foundry eval lm: give --tasks FILE and/or --val MANIFEST")
        model = load_lm(model_path)
        results: dict[str, dict] = {}
        for task in tasks:
            if model.tokenizer is None:
                raise ConfigError(f"{model_path}: the model has no tokenizer; multiple-choice tasks need one")
            r = score_mc(model, model.tokenizer, load_mc_tasks(task), batch_size=batch_size)
            results[Path(task).stem] = r
            lo, hi = r["acc_norm_ci95"]
            click.echo(f"{Path(task).stem:<24} n={r['n']:<5} acc={r['acc']:.3f} acc_norm={r['acc_norm']:.3f} "
                       f"[{lo:.3f}, {hi:.3f}] (chance {r['chance']:.3f})")
        for spec in val_manifest:
            source = _val_source(spec, model, seq_len)
            r = evaluate_loss(model, source.batches(batch_size, rank=0, world_size=1, seed=0), val_batches)
            results[f"val:{spec}"] = r
            click.echo(f"val {spec}: loss={r['loss']:.4f} perplexity={r['perplexity']:.2f} tokens={int(r['tokens'])}")
        if json_out:
            Path(json_out).write_text(json.dumps(results, indent=2))


def _val_source(spec: str, model: object, seq_len: int) -> object:
    from foundry_core.data.text import RawTextShards, TokenizedTextShards

    if spec == "pydoc_topics":
        cfg = RawTextShards.Config(corpus="pydoc_topics", split="val", seq_len=seq_len, shuffle=False, epochs=1)
        return RawTextShards(cfg, model.tokenizer)  # type: ignore[attr-defined]
    return TokenizedTextShards(TokenizedTextShards.Config(
        manifest=spec, seq_len=seq_len, shuffle=False, epochs=1, vocab_size=model.vocab_size))  # type: ignore[attr-defined]
