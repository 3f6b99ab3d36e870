"""Posterior violin plots: one violin per model of Beta(1 + s, 1 + f), with the posterior mean (line),
the empirical rate (dot), the compact letters and "successes/used (budget)". A visual summary only.

Uses matplotlib's object API with the Agg canvas (no pyplot global state, no display needed).
Test: ``uv run pytest packages/foundry-eval/tests/test_eval_compare.py -k report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from foundry_eval.stats.posteriors import posterior_mean, posterior_samples


def violin_plot(rows: Sequence, title: str, path: Path, n_samples: int = 2000, seed: int = 0) -> Path:
    """Write one PNG for the rows of one (eval_set, task or task group), best model first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted([r for r in rows if r.n > 0], key=lambda r: (-r.success_rate, r.model))
    # constrained layout sizes the margins to the multi-line tick labels and the axis label
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        data = [posterior_samples(r.successes, r.n, n_samples, seed + i) for i, r in enumerate(rows)]
        pos = list(range(1, len(rows) + 1))
        ax.violinplot(data, positions=pos, showextrema=False, widths=0.8)
        lo = max(0.0, min(float(d.min()) for d in data) - 0.05)
        top = min(1.0, max(float(d.max()) for d in data) + 0.05)
        pad = 0.08 * (top - lo)
        for x, r in zip(pos, rows):
            ax.hlines(posterior_mean(r.successes, r.n), x - 0.3, x + 0.3, color="black", lw=1.5)
            ax.plot([x], [r.success_rate], "o", color="tab:red", ms=4)
            ax.text(x, top + pad * 0.2, r.letters, ha="center", va="bottom", fontsize=10, weight="bold")
        labels = [
            f"{r.model}\n{r.successes}/{r.n} ({r.budget})"
            + (f"\n{r.crashed} crashed" if r.crashed else "")
            + (f"\n{r.policy_errors} policy err." if r.policy_errors else "")
            for r in rows
        ]
        ax.set_xticks(pos, labels, fontsize=8)
        ax.set_ylim(lo, top + pad * 1.5)
    ax.set_ylabel("success rate (posterior)")
    ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
