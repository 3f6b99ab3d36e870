"""Self-contained HTML report of a comparison: settings, warnings/errors, one section per eval set with
the per-task and aggregate tables and violin plots (PNG files next to ``report.html``).

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_compare.py -k report``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from foundry_eval.report.violins import violin_plot

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}td.num{text-align:right}.warn{color:#a60}
.err{color:#c00;font-weight:bold}img{max-width:100%;border:1px solid #eee;margin:4px}"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _table(rows) -> str:
    head = "<tr><th>Task</th><th>Model</th><th>Success %</th><th>N</th><th>90% CI</th><th>Letters</th><th>Crashed</th><th>Policy errors</th><th>Pending</th></tr>"
    body = []
    for r in rows:
        rate = f"{100 * r.success_rate:.1f}" if r.n else "n/a"
        body.append(
            f"<tr><td>{html.escape(r.task_display)}</td><td>{html.escape(r.model)}</td><td class=num>{rate}</td>"
            f"<td class=num>{r.n}</td><td class=num>[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]</td>"
            f"<td><b>{html.escape(r.letters)}</b></td><td class=num>{r.crashed}</td><td class=num>{r.policy_errors}</td><td class=num>{r.pending}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def write_report(cmp, out: Path, root: Path | None = None) -> Path:
    """Write violins (``out/violins/*.png``) and ``out/report.html``; returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = cmp.settings
    parts = [
        f"<html><head><meta charset='utf-8'><title>Foundry eval comparison</title><style>{_CSS}</style></head><body>",
        "<h1>Policy comparison</h1>",
        f"<p>Results root: <code>{html.escape(str(root or ''))}</code>. Test: <b>{html.escape(str(s.get('test')))}</b> "
        f"(sequential horizon = budget; Lai's test above {s.get('lai_threshold')}), family-wise α = {s.get('alpha')} "
        f"per task/group with {html.escape(str(s.get('correction', 'bonferroni')).capitalize())} over pairs{' (halved per direction)' if s.get('conservative') else ''}. "
        "Models that share no letter differ significantly; sharing a letter means <i>not separated</i>, not equal. "
        "Crashed episodes and policy errors (e.g. NaN actions) count as failures and are listed; pending "
        "episodes are excluded from N. "
        "Intervals are 90% Clopper–Pearson; violins are Beta(1+s, 1+f) posteriors (line: posterior mean, dot: "
        "observed rate).</p>",
    ]
    if cmp.errors:
        parts.append(
            "<h2 class=err>Errors</h2><ul>"
            + "".join(f"<li class=err>{html.escape(e)}</li>" for e in cmp.errors)
            + "</ul>"
        )
    if cmp.warnings:
        parts.append(
            "<h2 class=warn>Warnings</h2><ul>"
            + "".join(f"<li class=warn>{html.escape(w)}</li>" for w in cmp.warnings)
            + "</ul>"
        )
    for es in sorted({r.eval_set for r in cmp.rows}):
        parts.append(f"<h2>Eval set: {html.escape(es or '(flat)')}</h2>")
        for kind, title in (("aggregate", "Balanced aggregates"), ("task", "Per task")):
            rows = [r for r in cmp.rows if r.eval_set == es and r.kind == kind]
            if not rows:
                continue
            parts.append(f"<h3>{title}</h3>")
            groups: dict[str, list] = {}
            for r in rows:
                groups.setdefault(r.task, []).append(r)
            ordered = []
            for task, grows in groups.items():
                grows.sort(key=lambda r: -(r.success_rate if r.n else -1.0))
                ordered += grows
                png = out / "violins" / f"{_slug(es or 'flat')}__{_slug(task)}.png"
                violin_plot(grows, f"{es + ' / ' if es else ''}{grows[0].task_display}", png)
            parts.append(_table(ordered))
            for task in groups:
                rel = f"violins/{_slug(es or 'flat')}__{_slug(task)}.png"
                parts.append(f"<img src='{html.escape(rel)}' alt='{html.escape(task)}'>")
    parts.append("</body></html>")
    index = out / "report.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
