"""``foundry eval compare ROOT``: success table with 90% CIs and compact letters, CSV/JSON export,
violin plots and an HTML report. Registered on the shared ``eval`` group by ``foundry_eval.plugin``.

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_compare.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import click

CSV_COLUMNS = [
    "eval_set",
    "model",
    "task",
    "n",
    "successes",
    "success_rate",
    "ci_low",
    "ci_high",
    "crashed",
    "letters",
    "pending",
    "policy_errors",
    "budget",
    "task_display",
    "kind",
]


#: Width of the rate column: the header "Success Rate (%)" plus one space, so header and data align.
RATE_WIDTH = 17


def format_table(cmp, display: bool = True) -> str:
    """Our table: the reference's columns (REFERENCE §d.3; Task ≥ 30, Model ≥ 15 wide, widened to the
    longest name instead of overflowing; the rate column wide enough for its header) plus Letters;
    per-task rows grouped by task, best first, then the aggregates (task groups and all tasks)."""
    tw = max([30] + [len(r.task_display if display else r.task) + 1 for r in cmp.rows])
    mw = max([15] + [len(r.model_key) + 1 for r in cmp.rows])
    head = f"{'Task':<{tw}}{'Model':<{mw}}{'Success Rate (%)':>{RATE_WIDTH}}{'N':>5}{'90% CI':>20}  Letters"
    out = []
    for kind, title in (("task", None), ("aggregate", "Balanced aggregates (task groups)")):
        rows = [r for r in cmp.rows if r.kind == kind]
        if not rows:
            continue
        if title:
            out += ["", title]
        out += [head, "-" * (tw + mw + RATE_WIDTH + 5 + 20 + 9)]
        order: dict[tuple[str, str], int] = {}
        for r in rows:
            order.setdefault((r.task, r.eval_set), len(order))
        rows = sorted(rows, key=lambda r: (order[(r.task, r.eval_set)], -(r.success_rate if r.n else -1.0)))
        for r in rows:
            task = r.task_display if display else r.task
            rate = f"{100 * r.success_rate:.1f}%" if r.n else "n/a"
            ci = f"[{100 * r.ci_low:.1f}%, {100 * r.ci_high:.1f}%]"
            flags = []
            if r.crashed:
                flags.append(f"{r.crashed} crashed")
            if r.policy_errors:
                flags.append(f"{r.policy_errors} policy errors")
            if r.pending:
                flags.append(f"{r.pending} pending")
            line = f"{task:<{tw}}{r.model_key:<{mw}}{rate:>{RATE_WIDTH}}{r.n:>5}{ci:>20}  {r.letters}"
            out.append(line + (f"  ({', '.join(flags)})" if flags else ""))
    if cmp.warnings or cmp.errors:
        out.append("")
        out += [f"warning: {w}" for w in cmp.warnings]
        out += [f"ERROR: {e}" for e in cmp.errors]
    return "\n".join(out)


def format_reference_table(cmp, display: bool = True) -> str:
    """The reference system's printer layout (its ``print_results``): ONE table of the per-task rows,
    sorted by success rate descending (stable), no aggregates, no letters; fixed widths Task 30, Model 15,
    rate 13, N 5, CI 20 (long names overflow), header then 88 dashes. Reproduced as printed, including
    its header, whose 16-character "Success Rate (%)" overflows the 13-wide column by 3."""
    rows = sorted((r for r in cmp.rows if r.kind == "task"), key=lambda r: -(r.success_rate if r.n else -1.0))
    out = [f"{'Task':<30}{'Model':<15}{'Success Rate (%)':>13}{'N':>5}{'90% CI':>20}", "-" * 88]
    for r in rows:
        task = r.task_display if display else r.task
        rate = f"{100 * r.success_rate:>11.1f}%" if r.n else f"{'n/a':>12}"
        ci = f"[{100 * r.ci_low:.1f}%, {100 * r.ci_high:.1f}%]"
        out.append(f"{task:<30}{r.model_key:<15}{rate:>13}{r.n:>5}{ci:>20}")
    return "\n".join(out)


def format_csv(cmp) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in cmp.rows:
        vals = []
        for c in CSV_COLUMNS:
            v = getattr(r, c)
            if isinstance(v, float):
                v = "" if math.isnan(v) else f"{v:.6f}"
            vals.append(v)
        w.writerow(vals)
    return buf.getvalue()


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(type(o).__name__)


def format_json(cmp) -> str:
    doc = cmp.to_json()
    for r in doc["rows"]:
        if isinstance(r["success_rate"], float) and math.isnan(r["success_rate"]):
            r["success_rate"] = None
    return json.dumps(doc, indent=1, default=_json_default)


@click.command("compare")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--models", multiple=True, help="Models to compare (name or eval_set/name); repeat or comma-separate."
)
@click.option("--tasks", multiple=True, help="Tasks (PascalCase or display name); repeat or comma-separate.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Write violin PNGs and report.html here."
)
@click.option(
    "--test",
    type=click.Choice(["step", "barnard"]),
    default="step",
    show_default=True,
    help="Pairwise test: sequential STEP (Lai above --lai-threshold) or fixed-n Barnard.",
)
@click.option(
    "--layout",
    type=click.Choice(["foundry", "reference"]),
    default="foundry",
    show_default=True,
    help="--format table only. foundry: per-task blocks with letters, then aggregates. reference: the "
    "reference system's printer layout (one table of task rows sorted by rate, no letters).",
)
@click.option(
    "--alpha",
    type=float,
    default=0.05,
    show_default=True,
    help="Family-wise type-I error PER DIRECTION within each task or task group: each of the K(K-1)/2 "
    "pairs is tested at alpha/(K(K-1)/2) in each direction (Bonferroni). The two-sided test therefore "
    "errs with probability up to 2*alpha (measured at n_max 200, alpha 0.05, one pair: 0.09999); "
    "--conservative makes it <= alpha.",
)
@click.option(
    "--correction",
    type=click.Choice(["bonferroni", "holm"]),
    default="bonferroni",
    show_default=True,
    help="Multiple-comparison correction over pairs (holm: only with --test barnard).",
)
@click.option(
    "--conservative",
    is_flag=True,
    help="Halve alpha per direction, so the two-sided family-wise error is <= --alpha "
    "(measured at n_max 200, alpha 0.05, one pair: 0.049997).",
)
@click.option(
    "--seed", type=int, default=42, show_default=True, help="RNG seed of the randomized STEP decisions."
)
@click.option(
    "--lai-threshold", type=int, default=500, show_default=True, help="Horizons above this use Lai's test."
)
@click.option(
    "--step-construction",
    type=click.Choice(["lp", "legacy"]),
    default="lp",
    show_default=True,
    help="STEP boundary: lp (per-step linear program, more powerful) or legacy (the previous "
    "fixed-order boundary, to reproduce older letters).",
)
def compare_command(
    root,
    models,
    tasks,
    fmt,
    layout,
    out,
    test,
    alpha,
    correction,
    conservative,
    seed,
    lai_threshold,
    step_construction,
) -> None:
    """Compare policies in a results tree ROOT ({root}/[{eval_set}/]{model}/{Task}/rollouts/{ts}/results.json).

    Crashed episodes and policy errors count as failures and are also reported; pending ones are
    excluded from N. Two models of one task (or task group) that share no letter differ significantly:
    the family-wise error is <= --alpha per direction (<= 2 x --alpha two-sided), or <= --alpha
    two-sided with --conservative. Aggregate rows: each rename.yaml task group and always "All Tasks".
    Details: packages/foundry-eval/docs/statistics.md.
    """
    from foundry_eval.results import load_results
    from foundry_eval.stats.compare import compare

    def split(values):
        items = [v.strip() for value in values for v in value.split(",") if v.strip()]
        return items or None

    rs = load_results(root, models=split(models), tasks=split(tasks))
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        job = bar.add_task("STEP boundary synthesis", total=None, visible=False)

        def progress(t: int, n: int) -> None:
            bar.update(job, completed=t, total=n, visible=True)

        cmp = compare(
            rs,
            test=test,
            alpha=alpha,
            conservative=conservative,
            seed=seed,
            lai_threshold=lai_threshold,
            correction=correction,
            progress=progress,
            step_construction=step_construction,
        )
    table = format_reference_table if layout == "reference" else format_table
    text = {"table": table, "csv": format_csv, "json": format_json}[fmt](cmp)
    click.echo(text.rstrip("\n"))
    if fmt != "table":
        for w in cmp.warnings:
            click.echo(f"warning: {w}", err=True)
        for e in cmp.errors:
            click.echo(f"ERROR: {e}", err=True)
    if out is not None:
        from foundry_eval.report.html import write_report

        index = write_report(cmp, out, root=root)
        click.echo(f"report: {index}", err=True)
    if cmp.errors:
        raise click.exceptions.Exit(1)
