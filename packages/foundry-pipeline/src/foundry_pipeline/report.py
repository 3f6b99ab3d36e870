"""``runs/pipeline/report.html``: one self-contained page (images inlined) about the whole pipeline.

Sections: stage timings, the toy world, per-stage loss curves, VLM sample captions, the closed-loop
success table (90% Clopper–Pearson intervals, compact letters from pairwise STEP tests), posterior
violins, STEP decisions in words, rollout GIFs. Numbers are reported as measured; the verdict
sentences are derived from the tests, never tuned.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foundry_pipeline.recipe import EvalStage

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}.imgs img{margin:4px;border:1px solid #ddd}
figure{display:inline-block;margin:6px;text-align:center;font-size:12px;max-width:260px}
.note{background:#fff8e0;padding:8px 12px;border-left:4px solid #e0b000}"""


def _data_uri(path: Path) -> str:
    mime = {"png": "image/png", "gif": "image/gif", "jpg": "image/jpeg"}[path.suffix.lstrip(".").lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _img(path: Path, alt: str, width: int | None = None) -> str:
    w = f" width='{width}'" if width else ""
    return f"<img src='{_data_uri(path)}' alt='{html.escape(alt)}'{w}>"


def _png_bytes_uri(data: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


def sample_captions(out: Path, n: int = 4) -> list[dict[str, Any]]:
    """Caption ``n`` world images of the pipeline folder ``out`` with its trained VLM (greedy)."""
    import torch

    from foundry_core.data.shards import iter_shard_samples, read_manifest
    from foundry_core.export import load_pretrained

    export = out / "vlm" / "export"
    model = load_pretrained(export).eval()
    captions = []
    shards = read_manifest(str(out / "world" / "captions"))
    picked: list[tuple[str, dict[str, bytes]]] = []
    for shard in shards:  # one image per task: spread over the shards' keys
        for key, members in iter_shard_samples(shard.url):
            if key.endswith("_000000") or key.endswith("_000001"):
                picked.append((key, members))
    for key, members in picked[:n]:
        import io

        import numpy as np
        from PIL import Image

        img = np.array(Image.open(io.BytesIO(members["png"])).convert("RGB"))  # writable copy
        images = torch.from_numpy(img).permute(2, 0, 1)[None, None].contiguous()  # (1, 1, 3, H, W)
        with torch.no_grad():
            caption = model.generate(images, [""], max_new_tokens=24)[0]
        captions.append({"key": key, "png": members["png"], "reference": members["txt"].decode(), "generated": caption})
    return captions


def _decision_sentence(pair: Any) -> str:
    from foundry_eval.stats.step import P0_GREATER, P0_LESS, UNDECIDED

    a, b = pair.model_a, pair.model_b
    if pair.decision == P0_LESS:
        return f"{b} is better than {a}"
    if pair.decision == P0_GREATER:
        return f"{a} is better than {b}"
    if pair.decision == UNDECIDED:
        return f"{a} vs {b}: not separated at this budget"
    return f"{a} vs {b}: test error ({pair.error})"


def write_pipeline_report(
    out: Path, ev: EvalStage, stages: Mapping[str, Mapping[str, Any]], d: Path
) -> tuple[Path, list[str]]:
    """Write ``d/report.html`` (+ ``d/violins/*.png``); returns the path and the STEP decisions in words.

    Plain data in: the pipeline folder ``out``, the eval section of the recipe and the finished stages'
    summaries (their ``DONE.json``), so the report can be rewritten from a finished run's folder alone.
    """
    from foundry_eval.report.violins import violin_plot
    from foundry_eval.results import load_results
    from foundry_eval.stats.compare import compare

    parts = [f"<html><head><meta charset='utf-8'><title>Foundry pipeline report</title><style>{CSS}</style></head><body>"]
    parts.append("<h1>Foundry pipeline: toy world → LLM → VLM → VLA → closed-loop evaluation</h1>")

    # stage timings
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>summary</th></tr>")
    for stage in ("world", "tokenizer", "llm", "vlm", "vla", "baseline", "eval"):
        info = stages.get(stage) or {}
        brief = {k: v for k, v in info.items() if k in ("first_loss", "final_loss", "vocab_size", "steps")}
        text = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in brief.items())
        parts.append(f"<tr><td>{stage}</td><td>{info.get('seconds', '-')}</td><td>{html.escape(text)}</td></tr>")
    parts.append("</table>")

    world = stages.get("world") or {}
    if world:
        parts.append("<h2>Toy world</h2>")
        t, c = world.get("text", {}), world.get("captions", {})
        parts.append(
            f"<p>{t.get('documents')} scene descriptions ({t.get('words')} words), {c.get('images')} rendered images "
            "with captions, expert demonstrations: "
            + ", ".join(f"{k}: {v['stored']} stored ({100 * v['success_rate']:.0f}% expert success)" for k, v in world.get("demos", {}).items())
            + "</p>"
        )

    # loss curves
    parts.append("<h2>Training loss</h2><div class='imgs'>")
    for stage in ("llm", "vlm", "vla", "baseline"):
        png = out / stage / "loss.png"
        if png.is_file():
            parts.append(f"<figure>{_img(png, f'{stage} loss', 250)}<figcaption>{stage}</figcaption></figure>")
    parts.append("</div>")

    # sample captions
    captions = sample_captions(out)
    parts.append("<h2>VLM sample captions</h2><div>")
    for cap in captions:
        parts.append(
            f"<figure><img src='{_png_bytes_uri(cap['png'])}' width='128'><figcaption><b>generated:</b> "
            f"{html.escape(cap['generated'])}<br><b>reference:</b> {html.escape(cap['reference'])}</figcaption></figure>"
        )
    parts.append("</div>")

    # closed-loop results
    results_root = out / "eval" / "results"
    cmp = compare(load_results(results_root), test=ev.test, alpha=ev.alpha)
    task_rows = [r for r in cmp.rows if r.kind == "task"]
    parts.append(
        "<h2>Closed-loop success</h2><p>Pre-committed budget: "
        f"{ev.episodes} episodes per (policy, task). 90% Clopper–Pearson intervals; letters from pairwise "
        f"{html.escape(ev.test.upper())} tests at family-wise α = {ev.alpha} (Bonferroni): policies that share no letter differ.</p>"
    )
    parts.append("<table><tr><th>task</th><th>policy</th><th>success %</th><th>N</th><th>90% CI</th><th>crashed</th><th>letters</th></tr>")
    for r in sorted(cmp.rows, key=lambda r: (r.kind != "task", r.task, -r.success_rate)):
        parts.append(
            f"<tr><td>{html.escape(r.task)}</td><td>{html.escape(r.model)}</td><td>{100 * r.success_rate:.1f}</td>"
            f"<td>{r.n}</td><td>[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]</td><td>{r.crashed}</td><td>{html.escape(r.letters)}</td></tr>"
        )
    parts.append("</table>")
    violins = d / "violins"
    violins.mkdir(exist_ok=True)
    parts.append("<div class='imgs'>")
    for task in sorted({r.task for r in cmp.rows}):
        png = violin_plot([r for r in cmp.rows if r.task == task], task, violins / f"{task.replace(' ', '_')}.png")
        parts.append(_img(png, f"posterior violins {task}", 360))
    parts.append("</div>")
    decisions = [f"{p.task}: {_decision_sentence(p)} (after {p.n_pairs} pairs, {p.method})" for p in cmp.pairs]
    parts.append("<h3>Pairwise sequential tests</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in decisions) + "</ul>")
    verdict = _verdict(task_rows, cmp.pairs)
    parts.append(f"<p class='note'>{html.escape(verdict)}</p>")
    if cmp.warnings or cmp.errors:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in [*cmp.warnings, *cmp.errors]) + "</ul>")

    # rollout videos
    gifs = sorted(results_root.rglob("recording.gif"))
    if gifs:
        parts.append("<h2>Rollouts</h2><div class='imgs'>")
        per_model: dict[str, int] = {}
        for gif in gifs:
            model = gif.relative_to(results_root).parts[0]
            if per_model.get(model, 0) >= ev.videos:
                continue
            per_model[model] = per_model.get(model, 0) + 1
            label = f"{model} / {gif.relative_to(results_root).parts[1]} / {gif.parent.name}"
            parts.append(f"<figure>{_img(gif, label, 160)}<figcaption>{html.escape(label)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    path = d / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    (d / "summary.json").write_text(json.dumps({"decisions": decisions, "verdict": verdict}, indent=2))
    return path, decisions


def _verdict(rows: list[Any], pairs: list[Any]) -> str:
    """Plain-language outcome: does the pretrained-chain VLA beat random and the baseline, per the tests."""
    from foundry_eval.stats.step import P0_GREATER, P0_LESS

    lines = []
    for other in ("random", "baseline"):
        won = [p.task for p in pairs if {p.model_a, p.model_b} == {"vla", other} and
               ((p.decision == P0_LESS and p.model_b == "vla") or (p.decision == P0_GREATER and p.model_a == "vla"))]
        lost = [p.task for p in pairs if {p.model_a, p.model_b} == {"vla", other} and
                ((p.decision == P0_LESS and p.model_a == "vla") or (p.decision == P0_GREATER and p.model_b == "vla"))]
        if won:
            lines.append(f"The VLA (LLM→VLM→VLA chain) is significantly better than {other} on: {', '.join(won)}.")
        else:
            lines.append(f"The VLA is not significantly better than {other} on any task at this budget.")
        if lost:
            lines.append(f"It is significantly worse than {other} on: {', '.join(lost)}.")
    return " ".join(lines)
