"""``runs/pipeline/report.html``: one self-contained page (images inlined) about the whole pipeline.

Sections: stage timings, the toy world, per-stage loss curves, VLM sample captions, the closed-loop
success table (90% Clopper–Pearson intervals, compact letters from pairwise STEP tests), posterior
violins, STEP decisions in words, where the policies ended (the tasks' end-of-episode metrics: why an
episode failed, e.g. the right disk missed by 6 cm), rollout GIFs. Numbers are reported as measured; the verdict
sentences are derived from the tests, never tuned.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from foundry_eval.results import TaskResult
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


def _grounding_section(out: Path) -> tuple[list[str], dict[str, Any]]:
    """The VLM's attribute accuracy on held-out caption scenes beside chance and the text-only LLM."""
    from foundry_pipeline.grounding import pipeline_grounding
    from foundry_pipeline.world import png_bytes

    g, held = pipeline_grounding(out)
    rows = [("VLM (sees the image)", g["vlm"]), ("text-only LLM", g.get("text_only_llm", {})), ("chance (random caption)", g["chance"])]
    parts = [
        "<h2>Does the VLM look? Grounding on held-out images</h2>",
        f"<p>{g['images']} held-out caption scenes (1–3 objects of distinct colours, each in one of the 9 table "
        "cells the position words name; seeds never trained on). Generated captions (greedy) are read back "
        "into (colour, shape, position) mentions; per image every object has two attributes (its colour is "
        "mentioned; its position phrase is right) and every invented colour counts as two wrong ones. "
        f"Goal: ≥ 80%. The VLM wrote {g['distinct_captions']} distinct captions for {g['images']} images.</p>",
        "<table><tr><th>captioner</th><th>attribute accuracy %</th><th>colour recall %</th><th>position %</th>"
        "<th>shape %</th><th>invented colours / object</th></tr>",
    ]
    for name, r in rows:
        if r:
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{100 * r['accuracy']:.1f}</td><td>{100 * r['color_recall']:.1f}</td>"
                f"<td>{100 * r['position_accuracy']:.1f}</td><td>{100 * r['shape_accuracy']:.1f}</td>"
                f"<td>{r['hallucinated_per_image_object']:.2f}</td></tr>"
            )
    parts.append("</table>")
    if "text_only_llm" in g:
        parts.append(f"<p>The text-only LLM's sentence (the same for every image): <i>{html.escape(g['text_only_llm']['text'])}</i></p>")
    parts.append("<div>")
    for sample in g["samples"]:
        png = _png_bytes_uri(png_bytes(held.images[sample["index"]]))
        parts.append(
            f"<figure><img src='{png}' width='128'><figcaption><b>generated:</b> {html.escape(sample['generated'])}"
            f"<br><b>reference:</b> {html.escape(sample['reference'])}</figcaption></figure>"
        )
    parts.append("</div><p>(The scene camera faces the robot: the table's left is the image's right, its far side the image's bottom.)</p>")
    return parts, {k: v for k, v in g.items() if k != "samples"}


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
    from foundry_pipeline import clock

    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>wall s</th><th>CPU s</th><th>stolen</th><th>summary</th></tr>")
    order = ("world", "tokenizer", "llm", "vlm", "vla", "scratch", "baseline", "eval")
    for stage in (s for s in order if s in stages):
        info = stages[stage] or {}
        brief = {k: v for k, v in info.items() if k in ("first_loss", "final_loss", "vocab_size", "steps")}
        text = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in brief.items())
        if info.get("side_by_side_with"):
            text = f"side by side with {', '.join(info['side_by_side_with'])}; {text}"
        parts.append(f"<tr><td>{stage}</td>{_timing_cells(info)}<td>{html.escape(text)}</td></tr>")
    total = clock.totals({s: stages[s] for s in order if stages.get(s)})
    parts.append(f"<tr><td><b>total</b></td>{_timing_cells(total)}<td>side-by-side stages count once in wall time</td></tr>")
    parts.append("</table><p>stolen: the share of the machine's busy CPU time that the hypervisor "
                 "gave to other guests while the stage ran (<code>/proc/stat</code> steal); on a shared virtual "
                 "machine it makes the same stage's wall time drift, its CPU time much less.</p>")

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
    for stage in ("llm", "vlm", "vla", "scratch", "baseline"):
        png = out / stage / "loss.png"
        if png.is_file():
            parts.append(f"<figure>{_img(png, f'{stage} loss', 250)}<figcaption>{stage}</figcaption></figure>")
    parts.append("</div>")

    grounding_parts, grounding = _grounding_section(out)
    parts += grounding_parts

    # closed-loop results
    results_root = out / "eval" / "results"
    loaded = load_results(results_root)
    cmp = compare(loaded, test=ev.test, alpha=ev.alpha)
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
    metrics = end_state_table(loaded.results.values(), _success_distances({t for _, t in loaded.results}))
    parts += _end_state_section(metrics)

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
    summary = {
        "decisions": decisions,
        "verdict": verdict,
        "grounding": grounding,
        "success": _success_table(task_rows),
        "end_state": metrics,
    }
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    return path, decisions


def _success_table(rows: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{task: {policy: {successes, n}}} of the evaluated tasks."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        table.setdefault(r.task, {})[r.model] = {"successes": r.successes, "n": r.n}
    return table


#: How the verdict names the pipeline's policies.
POLICY_WORDS = {
    "scratch": "the same VLA trained from scratch (no LLM/VLM pretraining)",
    "baseline": "the baseline",
    "random": "the random policy",
    "expert": "the scripted expert",
}


def _verdict(rows: list[Any], pairs: list[Any]) -> str:
    """Plain-language outcome: is the pretrained-chain VLA better than each other policy, per the tests."""
    from foundry_eval.stats.step import P0_GREATER, P0_LESS

    def wins(p: Any, model: str) -> bool:
        return (p.decision == P0_LESS and p.model_b == model) or (p.decision == P0_GREATER and p.model_a == model)

    lines = []
    others = sorted({m for p in pairs for m in (p.model_a, p.model_b)} - {"vla"}, key=lambda m: list(POLICY_WORDS).index(m) if m in POLICY_WORDS else 99)
    for other in others:
        words = POLICY_WORDS.get(other, other)
        mine = [p for p in pairs if {p.model_a, p.model_b} == {"vla", other}]
        won = [p.task for p in mine if wins(p, "vla")]
        lost = [p.task for p in mine if wins(p, other)]
        if won:
            lines.append(f"The VLA (LLM→VLM→VLA chain) is significantly better than {words} on: {', '.join(won)}.")
        else:
            lines.append(f"The VLA is not significantly better than {words} on any task at this budget.")
        if lost:
            lines.append(f"It is significantly worse than {words} on: {', '.join(lost)}.")
    return " ".join(lines)


def end_state_summary(result: TaskResult, success_distance: float | None = None) -> dict[str, Any] | None:
    """Aggregate one (policy, task)'s end-of-episode ``metrics``; None when the task records none.

    ``median``: per metric, over the episodes that have it. ``nearer_named``: episodes that ended
    nearer the goal the instruction names than the other object (``goal_distance`` <
    ``distractor_distance``): the policy picked the right one even where it missed by more than
    ``success_distance``. ``metrics_failed``: episodes whose measurement failed (results.json says why).
    """
    done = [e for e in result.episodes if not e.is_pending]
    measured = [e.metrics for e in done if e.metrics is not None]
    failed = sum(1 for e in done if e.metrics_error)
    if not measured and not failed:
        return None
    names = sorted({k for m in measured for k in m})
    out: dict[str, Any] = {
        "successes": result.successes,
        "n": len(done),
        "measured": len(measured),
        "metrics_failed": failed,
        "median": {k: float(np.median([m[k] for m in measured if k in m])) for k in names},
        "success_distance": success_distance,
    }
    both = [m for m in measured if "goal_distance" in m and "distractor_distance" in m]
    if both:
        out["nearer_named"] = sum(m["goal_distance"] < m["distractor_distance"] for m in both)
        out["compared"] = len(both)
    out["reading"] = _reading(out)
    return out


def _reading(s: Mapping[str, Any]) -> str:
    """One sentence on what the end-state numbers mean next to the success count."""
    need = f"; success needs < {100 * s['success_distance']:g} cm" if s.get("success_distance") else ""
    goal = s["median"].get("goal_distance")
    words = [f"{s['successes']}/{s['n']} successes"]
    if "nearer_named" in s:
        named = f"{s['nearer_named']}/{s['compared']}"
        words.append(f"ended nearer the named target than the other one in {named}")
    if goal is not None:
        words.append(f"median final distance to the goal {100 * goal:.1f} cm{need}")
    if s["metrics_failed"]:
        words.append(f"the measurement failed in {s['metrics_failed']} episode(s) (see metrics_error)")
    elif s["measured"] < s["n"]:
        words.append(f"{s['n'] - s['measured']} crashed episode(s) not measured")
    return "; ".join(words) + "."


def end_state_table(
    results: Iterable[TaskResult], success_distances: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """{task: {policy: end_state_summary}} of the (policy, task) results that record metrics."""
    table: dict[str, dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: (r.task, r.model_key)):
        summary = end_state_summary(r, success_distances.get(r.task))
        if summary is not None:
            table.setdefault(r.task, {})[r.model_key] = summary
    return table


def _success_distances(tasks: set[str]) -> dict[str, float]:
    """{Task: success_distance} of the registered tasks (PascalCase names) that declare one."""
    from foundry_core.plugins import get_registry
    from foundry_eval.results import normalize_task_name

    out = {}
    for spec in get_registry().specs("task"):
        if normalize_task_name(spec.name) in tasks:
            distance = getattr(spec.load(), "success_distance", None)
            if distance is not None:
                out[normalize_task_name(spec.name)] = float(distance)
    return out


def _end_state_section(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    if not table:
        return []
    parts = [
        "<h2>Where the policies ended</h2><p>The tasks' end-of-episode measurements (results.json "
        "<code>metrics</code>), next to the success counts: a policy can pick the right target and still "
        "miss it by more than the task's tolerance. Distances are horizontal, in cm; <i>nearer named</i>: "
        "episodes that ended nearer the target the instruction names than the other one.</p>",
        "<table><tr><th>task</th><th>policy</th><th>successes</th><th>median distance to goal (cm)</th>"
        "<th>nearer named</th><th>other medians (as recorded, m)</th><th>reading</th></tr>",
    ]
    for task, policies in table.items():
        for policy, s in policies.items():
            goal = s["median"].get("goal_distance")
            others = ", ".join(f"{k} {v:.3f}" for k, v in s["median"].items() if k != "goal_distance")
            nearer = f"{s['nearer_named']}/{s['compared']}" if "nearer_named" in s else "-"
            parts.append(
                f"<tr><td>{html.escape(task)}</td><td>{html.escape(policy)}</td><td>{s['successes']}/{s['n']}</td>"
                f"<td>{'-' if goal is None else f'{100 * goal:.1f}'}</td><td>{nearer}</td>"
                f"<td>{html.escape(others)}</td><td style='text-align:left'>{html.escape(s['reading'])}</td></tr>"
            )
    parts.append("</table>")
    return parts


def _timing_cells(info: dict[str, Any]) -> str:
    share = info.get("steal_share")
    cells = [info.get("seconds", "-"), info.get("cpu_seconds", "-"), "-" if share is None else f"{share:.0%}"]
    return "".join(f"<td>{c}</td>" for c in cells)
