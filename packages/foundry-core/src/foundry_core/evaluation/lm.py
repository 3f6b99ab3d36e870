"""LLM evaluation: held-out loss/perplexity and multiple-choice accuracy with a Wilson 95% interval.

Multiple choice: every choice is scored by the log-likelihood of its continuation given the context;
``acc`` picks the highest sum, ``acc_norm`` the highest sum divided by the continuation's UTF-8 byte
length (tokenizer-independent length normalization, as lm-evaluation-harness). Task files are local
JSONL; each line may be in any of these shapes (detected per line):

* generic: ``{"context": str, "choices": [str], "label": int}`` (``query``/``gold`` also accepted)
* HellaSwag: ``{"ctx": str, "endings": [str], "label": int|str}``
* ARC: ``{"question": str, "choices": {"text": [...], "label": [...]}, "answerKey": str}``
* BoolQ: ``{"question": str, "passage": str, "answer": bool}``
* Winogrande: ``{"sentence": "... _ ...", "option1": str, "option2": str, "answer": "1"|"2"}``
  (partial scoring: the context is the sentence up to the blank with the option filled in, the
  continuation is the rest, shared by both options)

Test: ``uv run pytest packages/foundry-core/tests/test_llm_eval.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import torch

from foundry_core.errors import DataError


@dataclass(frozen=True)
class MCItem:
    """One question: per choice a context and a continuation; ``label`` is the index of the right one."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    label: int


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible also at 0 or n successes)."""
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def _parse_item(obj: Any, where: str) -> MCItem:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object")
    try:
        if "choices" in obj and isinstance(obj["choices"], list):
            ctx = obj.get("context", obj.get("query"))
            label = obj.get("label", obj.get("gold"))
            choices = obj["choices"]
            if ctx is None or label is None:
                raise KeyError("context" if ctx is None else "label")
        elif "endings" in obj:
            ctx, choices, label = obj["ctx"], obj["endings"], obj["label"]
            choices = [" " + c.lstrip() for c in choices]
        elif "answerKey" in obj:
            texts, labels = obj["choices"]["text"], obj["choices"]["label"]
            ctx = f"Question: {obj['question']}\nAnswer:"
            choices = [" " + t for t in texts]
            label = labels.index(obj["answerKey"])
        elif "passage" in obj:
            ctx = f"{obj['passage']}\nQuestion: {obj['question']}?\nAnswer:"
            choices, label = [" no", " yes"], int(bool(obj["answer"]))
        elif "option1" in obj:
            sentence = obj["sentence"]
            if sentence.count("_") != 1:
                raise DataError(f"{where}: winogrande sentence must contain exactly one '_'")
            before, after = sentence.split("_")
            options = [obj["option1"], obj["option2"]]
            label = int(obj["answer"]) - 1
            return MCItem(tuple(before + o for o in options), (after,) * 2, label)
        else:
            raise DataError(f"{where}: unknown task format (keys: {', '.join(sorted(obj))})")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: malformed item ({type(exc).__name__}: {exc})") from None
    label = int(label)
    if not choices or not all(isinstance(c, str) for c in choices) or not 0 <= label < len(choices):
        raise DataError(f"{where}: need a non-empty list of string choices and 0 <= label < {len(choices)}")
    return MCItem((str(ctx),) * len(choices), tuple(choices), label)


def load_mc_tasks(path: str | Path) -> list[MCItem]:
    """Read a local JSONL task file; a bad line is an error naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"task file not found: {p}")
    items = []
    for i, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{i}: not valid JSON ({exc.msg})") from None
        items.append(_parse_item(obj, f"{p}:{i}"))
    if not items:
        raise DataError(f"{p}: no items")
    return items


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


@torch.no_grad()
def continuation_logprobs(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], *, batch_size: int = 16, max_len: int = 1024
) -> list[float]:
    """Sum of log p(continuation | context) per (context, continuation) pair."""
    device = next(model.parameters()).device
    start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    seqs = []
    for ctx, cont in pairs:
        c_ids, t_ids = [start, *_encode(tokenizer, ctx)], _encode(tokenizer, cont)
        if not t_ids:
            raise DataError(f"empty continuation for context {ctx[:60]!r}")
        ids = (c_ids + t_ids)[-max_len:]
        seqs.append((ids, min(len(t_ids), len(ids) - 1)))
    out: list[float] = []
    model.eval()
    for b in range(0, len(seqs), batch_size):
        chunk = seqs[b : b + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, (ids, _) in enumerate(chunk):
            x[j, : len(ids)] = torch.tensor(ids)
        logp = model(x.to(device)).logits.float().log_softmax(-1).cpu()  # right padding: causal, so harmless
        for j, (ids, n_cont) in enumerate(chunk):
            L = len(ids)
            targets = torch.tensor(ids[L - n_cont :])
            out.append(float(logp[j, L - n_cont - 1 : L - 1].gather(-1, targets[:, None]).sum()))
    return out


def score_mc(model: Any, tokenizer: Any, items: list[MCItem], *, batch_size: int = 16) -> dict[str, Any]:
    """Accuracy (raw and byte-length normalized) with Wilson 95% intervals."""
    pairs = [(c, t) for it in items for c, t in zip(it.contexts, it.continuations)]
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size=batch_size)
    correct = correct_norm = 0
    k = 0
    for it in items:
        s = scores[k : k + len(it.contexts)]
        k += len(it.contexts)
        norm = [v / max(1, len(t.encode("utf-8"))) for v, t in zip(s, it.continuations)]
        correct += int(max(range(len(s)), key=s.__getitem__) == it.label)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == it.label)
    n = len(items)
    return {
        "n": n,
        "acc": correct / n,
        "acc_ci95": list(wilson_interval(correct, n)),
        "acc_norm": correct_norm / n,
        "acc_norm_ci95": list(wilson_interval(correct_norm, n)),
        "chance": sum(1 / len(it.contexts) for it in items) / n,
    }


@torch.no_grad()
def evaluate_loss(model: Any, batches: Iterable[dict[str, Any]], max_batches: int | None = None) -> dict[str, float]:
    """Token-weighted mean next-token loss and its perplexity over ``batches``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    tokens = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            loss, metrics = model.compute_loss(batch)
            n = int(metrics["tokens"])
            total += float(loss) * n
            tokens += n
    finally:
        model.train(was_training)
    if tokens == 0:
        raise DataError("evaluate_loss: the validation data yielded no tokens")
    mean = total / tokens
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": float(tokens)}


def load_lm(path: str | Path) -> Any:
    """Load a model for evaluation: a Foundry export folder, or a plain Hugging Face causal-LM folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"model folder not found: {folder}")
    from foundry_core.plugins import get_registry
    from foundry_core.registry import BuildContext

    registry = get_registry()
    export_config = folder / "config.yaml"
    if export_config.is_file():
        from foundry_core.export import load_pretrained

        return load_pretrained(str(folder))
    if (folder / "config.json").is_file():
        return registry.build("model", {"name": "hf_causal_lm", "path": str(folder)}, BuildContext(registry=registry))
    raise DataError(f"{folder}: neither a Foundry export (config.yaml) nor a Hugging Face folder (config.json)")
