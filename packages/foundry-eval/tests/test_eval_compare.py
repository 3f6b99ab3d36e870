"""``foundry eval compare``: synthetic trees (fast), bad input, the HTML report, and the released results."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from foundry_eval.compare_cli import CSV_COLUMNS, RATE_WIDTH, compare_command
from foundry_eval.results import load_results, results_path, write_results
from foundry_eval.stats.compare import compare


@pytest.fixture(autouse=True)
def _cache(request, tmp_path_factory, monkeypatch):
    # boundaries are deterministic and keyed (incl. a format version): keep them in pytest's cache across runs
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    path = cache.mkdir("foundry_eval_compare") if cache else tmp_path_factory.getbasetemp() / "foundry_cache"
    monkeypatch.setenv("FOUNDRY_CACHE_DIR", str(path))


def _tree(root, rates: dict[str, dict[str, float]], n: int = 40, budget: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    for model, tasks in rates.items():
        for task, p in tasks.items():
            out = rng.random(n) < p
            evs = [
                {"skill_type": task, "scenario_index": i, "is_success": bool(o)} for i, o in enumerate(out)
            ]
            write_results(results_path(root, model, task, "2026-01-01T00-00-00"), evs, budget)
    (root / "rename.yaml").write_text(
        "tasks: {TaskA: A, TaskB: B}\ntask_groups:\n  Both: [TaskA, TaskB]\n", encoding="utf-8"
    )
    return root


RATES = {
    "good": {"TaskA": 0.95, "TaskB": 0.9},
    "mid": {"TaskA": 0.5, "TaskB": 0.55},
    "bad": {"TaskA": 0.02, "TaskB": 0.05},
}


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_compare_csv_on_synthetic_tree(tmp_path):
    root = _tree(tmp_path / "res", RATES)
    res = CliRunner().invoke(compare_command, [str(root), "--format", "csv"])
    assert res.exit_code == 0, res.output
    header = res.stdout.splitlines()[0].split(",")
    assert (
        header[:10]
        == CSV_COLUMNS[:10]
        == "eval_set,model,task,n,successes,success_rate,ci_low,ci_high,crashed,letters".split(",")
    )
    rows = _csv_rows(res.stdout)
    per_task = {(r["model"], r["task"]): r for r in rows if r["kind"] == "task"}
    assert len(per_task) == 6 and len([r for r in rows if r["task"] == "Both"]) == 3
    # clear separations get different letters; letters are real (never "?")
    a = {m: per_task[(m, "TaskA")]["letters"] for m in RATES}
    assert a == {"good": "a", "mid": "b", "bad": "c"}
    agg = {r["model"]: r for r in rows if r["task"] == "Both"}
    assert agg["good"]["n"] == "80" and agg["good"]["budget"] == "80" and agg["good"]["letters"] == "a"


def test_all_tasks_aggregate_even_with_task_groups(tmp_path):
    root = _tree(tmp_path / "res", RATES)  # rename.yaml defines the group "Both"
    res = CliRunner().invoke(compare_command, [str(root), "--format", "csv"])
    assert res.exit_code == 0, res.output
    agg = [r for r in _csv_rows(res.stdout) if r["kind"] == "aggregate"]
    assert sorted({r["task"] for r in agg}) == ["All Tasks", "Both"]
    assert {r["model"] for r in agg if r["task"] == "All Tasks"} == set(RATES)
    res = CliRunner().invoke(compare_command, [str(root), "--tasks", "A"])  # one task: still an aggregate
    assert res.exit_code == 0 and "All Tasks" in res.stdout


def test_table_header_aligned_and_reference_layout(tmp_path):
    root = _tree(tmp_path / "res", RATES)
    res = CliRunner().invoke(compare_command, [str(root)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    head, row = lines[0], lines[2]
    # every right-aligned header label ends in the same column as its data
    for label, value in (("Success Rate (%)", "%"), ("N", "40"), ("90% CI", "]")):
        end = head.index(label) + len(label)
        assert row[:end].endswith(value) and row[end] == " ", (label, head, row)
    assert head.index("Letters") == row.index("]") + 3
    assert len(lines[1]) == len(head) and RATE_WIDTH == len("Success Rate (%)") + 1
    ref = CliRunner().invoke(compare_command, [str(root), "--layout", "reference"])
    assert ref.exit_code == 0, ref.output
    lines = ref.stdout.splitlines()
    assert lines[1] == "-" * 88 and "Letters" not in lines[0]
    rows = [ln for ln in lines[2:] if ln and not ln.startswith("warning")]
    assert len(rows) == 6  # one table, per-task rows only, no aggregates
    rates = [float(ln[45:57]) for ln in rows]  # Task 30 + Model 15, then the 13-wide rate "{:>11.1f}%"
    assert rates == sorted(rates, reverse=True) and all(ln[57] == "%" for ln in rows)
    assert all(len(ln) == 83 for ln in rows)


def test_compare_table_json_barnard_and_selection(tmp_path):
    root = _tree(tmp_path / "res", RATES)
    res = CliRunner().invoke(compare_command, [str(root), "--models", "good,mid", "--tasks", "A"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Task") and "90% CI" in lines[0] and set(lines[1]) == {"-"}
    assert lines[2].split()[:2] == ["A", "good"]  # display name, best first
    res = CliRunner().invoke(compare_command, [str(root), "--format", "json", "--test", "barnard"])
    doc = json.loads(res.stdout)
    assert doc["settings"]["test"] == "barnard" and not doc["errors"]
    assert all(p["pvalue"] is not None for p in doc["pairs"])
    assert {p["method"] for p in doc["pairs"]} == {"barnard"}
    res = CliRunner().invoke(
        compare_command, [str(root), "--format", "json", "--test", "barnard", "--correction", "holm"]
    )
    holm = json.loads(res.stdout)
    # Holm is uniformly more powerful than Bonferroni: everything Bonferroni separates, Holm does too
    sep = {(p["task"], p["model_a"], p["model_b"]) for p in doc["pairs"] if p["decision"] != "undecided"}
    sep_holm = {
        (p["task"], p["model_a"], p["model_b"]) for p in holm["pairs"] if p["decision"] != "undecided"
    }
    assert sep <= sep_holm and holm["settings"]["correction"] == "holm"
    res = CliRunner().invoke(compare_command, [str(root), "--correction", "holm"])
    assert res.exit_code != 0 and "Holm" in str(res.exception)


def test_crashed_pending_and_mismatched_models_are_flagged(tmp_path):
    root = tmp_path / "res"
    evs = [{"skill_type": "TaskA", "scenario_index": i, "is_success": i % 2 == 0} for i in range(10)]
    evs[1]["failure_message"] = "policy error at t=0.3 s: action contains NaN"
    evs[3]["failure_message"] = "Traceback (most recent call last):\n  SimFailure: line search is NaN"
    evs.append({"skill_type": "TaskA", "scenario_index": 10, "is_success": None, "is_pending": True})
    write_results(results_path(root, "m1", "TaskA", "t0"), evs, 20)
    write_results(
        results_path(root, "m1", "TaskB", "t0"), evs and [dict(e, skill_type="TaskB") for e in evs[:10]], 20
    )
    write_results(
        results_path(root, "m2", "TaskA", "t0"), [dict(e, skill_type="TaskA") for e in evs[:10]], 20
    )
    rs = load_results(root)
    cmp = compare(rs)
    row = next(r for r in cmp.rows if r.model == "m1" and r.task == "TaskA")
    assert (row.n, row.successes, row.crashed, row.policy_errors, row.pending) == (10, 5, 1, 1, 1)
    assert any("policy error" in w and "NaN" in w for w in cmp.warnings)
    assert any("pending" in w for w in cmp.warnings)
    assert any(
        "excluded because not every model has them" in w and "m2 lacks TaskB" in w for w in cmp.warnings
    )
    agg = [r for r in cmp.rows if r.kind == "aggregate"]
    assert {r.n for r in agg} == {10} and not cmp.errors
    res = CliRunner().invoke(compare_command, [str(root)])
    assert "(1 crashed, 1 policy errors, 1 pending)" in res.stdout and "warning:" in res.stdout
    agg_row = next(r for r in agg if r.model == "m1")
    assert (agg_row.crashed, agg_row.policy_errors) == (1, 1)


def test_missing_budget_is_a_clear_error(tmp_path):
    p = tmp_path / "m" / "T" / "rollouts" / "t0" / "results.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"evaluations": []}))
    res = CliRunner().invoke(compare_command, [str(tmp_path)])
    assert res.exit_code != 0 and "max_sample_size_per_model" in str(res.exception)


def test_report_html_and_violins(tmp_path):
    root = _tree(tmp_path / "res", RATES)
    out = tmp_path / "report"
    res = CliRunner().invoke(compare_command, [str(root), "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    pngs = sorted((out / "violins").glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)  # 2 tasks, Both, All Tasks
    assert "Balanced aggregates" in html and "violins/" in html and "<b>a</b>" in html


def test_plugin_attaches_compare_to_eval_group(foundry_pm):
    import click

    from foundry_core.cli.main import build_cli
    from foundry_eval import plugin

    foundry_pm.register(plugin, name="foundry-eval")
    cli = build_cli(lambda: foundry_pm)
    eval_group = cli.get_command(click.Context(cli), "eval")
    assert eval_group.commands["compare"] is compare_command


def test_compare_released_results(shared_data):
    root = shared_data / "vla_foundry" / "eval_results"
    res = CliRunner().invoke(compare_command, [str(root), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = _csv_rows(res.stdout)
    rs = load_results(root)
    per_task = {(r["eval_set"], r["model"], r["task"]) for r in rows if r["kind"] == "task"}
    assert per_task == {(t.eval_set, t.model, t.task) for t in rs.results.values()} and len(per_task) == 390
    for es, n_models in (("CS", 12), ("OSS", 9)):
        main = [r for r in rows if r["eval_set"] == es and r["task"] == "16 Main Tasks"]
        unseen = [r for r in rows if r["eval_set"] == es and r["task"] == "3 Unseen Tasks"]
        assert len(main) == n_models and len(unseen) == 9
        assert {r["n"] for r in main} == {"3200"} and {r["n"] for r in unseen} == {"600"}
    assert all(r["letters"] and set(r["letters"]) <= set("abcdefghijklmnopqrstuvwxyz") for r in rows)
    assert sum(int(r["crashed"]) for r in rows if r["kind"] == "task") == 196
    best = max(
        (r for r in rows if r["eval_set"] == "OSS" and r["task"] == "16 Main Tasks"),
        key=lambda r: float(r["success_rate"]),
    )
    worst = min(
        (r for r in rows if r["eval_set"] == "OSS" and r["task"] == "16 Main Tasks"),
        key=lambda r: float(r["success_rate"]),
    )
    assert not set(best["letters"]) & set(worst["letters"])


@pytest.mark.slow
def test_released_letters_lp_versus_legacy_boundary(shared_data):
    """Recompute every compact letter of the released evaluations with the previous (legacy) and the LP
    boundary. A pair whose decision changes must be newly separated in the direction of the rates, or
    (randomized boundary states make single decisions chance events) a separation lost where the LP
    randomizes the state at which legacy decided, at rates where the LP's exact power is the higher."""
    from foundry_eval.stats.step import StepSpec, exact_rejection_probability, load_or_synthesize

    rs = load_results(shared_data / "vla_foundry" / "eval_results")
    new = compare(rs)
    old = compare(rs, step_construction="legacy")
    key = lambda p: (p.eval_set, p.task, p.model_a, p.model_b)  # noqa: E731
    old_pairs = {key(p): p for p in old.pairs}
    rows = {(r.eval_set, r.task, r.model): r for r in new.rows}
    arrays = {(r.eval_set, r.task, r.model): np.asarray(r.outcomes) for r in rs.results.values()}
    changed = [(p, old_pairs[key(p)]) for p in new.pairs if p.decision != old_pairs[key(p)].decision]
    gained, lost = 0, 0
    for p, q in changed:
        ra = rows[(p.eval_set, p.task, p.model_a)].success_rate
        rb = rows[(p.eval_set, p.task, p.model_b)].success_rate
        if q.decision == "undecided":
            assert (ra < rb) if p.decision == "p0 < p1" else (ra > rb), (p, ra, rb)
            gained += 1
            continue
        assert p.decision == "undecided", (p, q)  # never a reversed decision
        lost += 1
        lp = load_or_synthesize(StepSpec(n_max=p.n_pairs, alpha=p.alpha))
        legacy = load_or_synthesize(StepSpec(n_max=p.n_pairs, alpha=p.alpha, construction="legacy"))
        a = arrays[(p.eval_set, p.task, p.model_a)][: q.n_pairs]
        b = arrays[(p.eval_set, p.task, p.model_b)][: q.n_pairs]
        lo_, hi_ = (a, b) if q.decision == "p0 < p1" else (b, a)  # the one-sided test that rejected
        t, x, y = q.n_pairs, int(lo_.sum()), int(hi_.sum())
        assert 0.0 < lp.reject_probability(t, x, y) < 1.0, (p, q, "LP rejects this state surely or never")
        r_lo, r_hi = sorted((ra, rb))
        assert exact_rejection_probability(lp, r_lo, r_hi) >= exact_rejection_probability(legacy, r_lo, r_hi)
    step_pairs = [p for p in new.pairs if p.method == "step"]
    assert len(step_pairs) > 1000 and gained >= 5 * max(lost, 1)  # the LP boundary separates more pairs
    letters_changed = sum(
        r.letters != o.letters for r, o in zip(new.rows, old.rows, strict=True) if r.kind == "task"
    )
    print(
        f"pairs changed: {len(changed)} of {len(step_pairs)} STEP pairs ({gained} newly separated, {lost} lost "
        f"on a randomized state); task rows with new letters: {letters_changed}"
    )


def test_episode_metrics_change_no_number_and_failed_ones_are_warned(tmp_path):
    plain = _tree(tmp_path / "plain", RATES)
    measured = _tree(tmp_path / "measured", RATES)
    for path in measured.rglob("results.json"):
        doc = json.loads(path.read_text())
        for e in doc["evaluations"]:
            e["metrics"] = {"goal_distance": 0.05}
        del doc["evaluations"][0]["metrics"]
        doc["evaluations"][0]["metrics_error"] = "Traceback (most recent call last):\nValueError: no disk\n"
        path.write_text(json.dumps(doc))
    a = CliRunner().invoke(compare_command, [str(plain), "--format", "csv"])
    b = CliRunner().invoke(compare_command, [str(measured), "--format", "csv"])
    assert a.exit_code == b.exit_code == 0, b.output
    assert a.stdout == b.stdout  # the same table: metrics never change how an episode counts
    assert "episode_metrics() failed" not in a.stderr
    assert b.stderr.count("episode_metrics() failed") == 6 and "ValueError: no disk" in b.stderr
