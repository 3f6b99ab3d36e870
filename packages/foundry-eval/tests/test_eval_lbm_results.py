"""``foundry eval import-lbm``: LBM Eval's results-<timestamp>.json -> results tree -> compare; bad files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from foundry_core.cli.main import build_cli
from foundry_core.errors import DataError
from foundry_eval import plugin
from foundry_eval.lbm_results import import_lbm_results
from foundry_eval.results import load_results

STAMP = "2026-02-03T04-05-06"


def _evaluation(skill, index, success, pending=False, message=None):
    return {
        "skill_type": skill,
        "scenario_index": index,
        "is_pending": pending,
        "total_time": None if pending else 12.5,
        "is_success": None if pending else success,
        "failure_message": message,
    }


def _lbm_file(tmp_path, evaluations, **top):
    done = [e for e in evaluations if not e["is_pending"]]
    doc = {
        "evaluations": evaluations,
        "num_processes": 4,
        "elapsed_time": 321.0,
        "num_requested_evaluations": len(evaluations),
        "num_evaluated": len(done),
        "num_success": sum(1 for e in done if e["is_success"]),
        "success_rate": sum(1 for e in done if e["is_success"]) / max(1, len(done)),
        **top,
    }
    path = tmp_path / "lbm_out" / f"results-{STAMP}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _run(tmp_path):
    evs = [_evaluation("PutMugOnSaucer", i, i % 2 == 0) for i in range(6)]
    evs += [_evaluation("put_kiwi_in_center_of_table", i, i < 3) for i in range(4)]
    evs += [_evaluation("PutKiwiInCenterOfTable", 4, None, pending=True)]
    evs[1]["failure_message"] = "Traceback (most recent call last):\n  SimFailure"
    return evs


def test_import_splits_by_task_and_compare_reads_it(tmp_path):
    src = _lbm_file(tmp_path, _run(tmp_path))
    summary = import_lbm_results(src, model="mine", eval_set="OSS", out=tmp_path / "tree")
    assert set(summary.files) == {"PutMugOnSaucer", "PutKiwiInCenterOfTable"}
    assert (
        summary.files["PutMugOnSaucer"]
        == tmp_path / "tree/OSS/mine/PutMugOnSaucer/rollouts" / STAMP / "results.json"
    )
    assert summary.pending == {"PutKiwiInCenterOfTable": 1, "PutMugOnSaucer": 0}
    assert summary.budgets == {"PutKiwiInCenterOfTable": 5, "PutMugOnSaucer": 6}
    assert not summary.warnings
    rs = load_results(tmp_path / "tree")
    kiwi, mug = rs.results[("OSS/mine", "PutKiwiInCenterOfTable")], rs.results[("OSS/mine", "PutMugOnSaucer")]
    assert (kiwi.n, kiwi.successes, kiwi.pending, kiwi.budget) == (4, 3, 1, 5)
    assert (mug.n, mug.successes, mug.crashed) == (6, 3, 1)
    assert any("1 pending" in w for w in rs.warnings)
    doc = json.loads(summary.files["PutMugOnSaucer"].read_text())
    assert doc["num_processes"] == 4 and doc["imported_from"] == str(src)
    with pytest.raises(DataError, match="already exists"):  # never overwritten
        import_lbm_results(src, model="mine", eval_set="OSS", out=tmp_path / "tree")


def test_budget_option_and_totals_mismatch_is_reported(tmp_path):
    src = _lbm_file(tmp_path, _run(tmp_path), num_success=99)
    summary = import_lbm_results(src, model="m", eval_set=None, out=tmp_path / "tree", budget=200)
    assert summary.budgets["PutMugOnSaucer"] == 200
    assert summary.warnings == [f"{src}: num_success says 99, the evaluations give 6"]
    assert load_results(tmp_path / "tree").results[("m", "PutMugOnSaucer")].budget == 200
    with pytest.raises(DataError, match="PutMugOnSaucer has 6 evaluations, more than --max-sample-size 5"):
        import_lbm_results(src, model="m2", eval_set=None, out=tmp_path / "tree", budget=5)
    assert not (tmp_path / "tree" / "m2").exists()  # nothing half-imported


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("evaluations"), "missing or malformed 'evaluations'"),
        (lambda d: d["evaluations"][2].pop("scenario_index"), r"evaluations\[2\]: missing key"),
        (lambda d: d["evaluations"][0].update(is_success="yes"), r"evaluations\[0\]: is_success must be"),
        (lambda d: d["evaluations"][3].pop("is_pending"), r"evaluations\[3\]: is_pending must be a bool"),
        (lambda d: d["evaluations"][10].update(is_success=True), r"evaluations\[10\]: a pending evaluation"),
        (
            lambda d: d["evaluations"].append(dict(d["evaluations"][0])),
            r"repeats task PutMugOnSaucer scenario 0",
        ),
        (lambda d: d.update(num_processes="four"), "num_processes must be"),
    ],
)
def test_bad_file_one_clear_error(tmp_path, mutate, match):
    src = _lbm_file(tmp_path, _run(tmp_path))
    doc = json.loads(src.read_text())
    mutate(doc)
    src.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=match) as info:
        import_lbm_results(src, model="m", eval_set="OSS", out=tmp_path / "tree")
    assert str(src) in str(info.value)
    assert not (tmp_path / "tree").exists()


def test_cli_import_then_compare_and_bad_input_exit_2(tmp_path, foundry_pm):
    foundry_pm.register(plugin, name="foundry-eval")
    cli = build_cli(lambda: foundry_pm)
    src = _lbm_file(tmp_path, _run(tmp_path))
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "eval",
            "import-lbm",
            str(src),
            "--model",
            "mine",
            "--eval-set",
            "OSS",
            "--out",
            str(tmp_path / "tree"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "PutKiwiInCenterOfTable: 5 evaluations, 1 pending (budget 5)" in res.output
    res = runner.invoke(cli, ["eval", "compare", str(tmp_path / "tree"), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "OSS,mine,PutMugOnSaucer,6,3" in res.output
    bad = tmp_path / "results-x.json"
    bad.write_text("{not json")
    res = runner.invoke(cli, ["eval", "import-lbm", str(bad), "--model", "m", "--out", str(tmp_path / "t2")])
    assert res.exit_code == 2 and "results-x.json: cannot read LBM Eval results" in res.output
    wrong = tmp_path / "results.json"
    wrong.write_text("{}")
    res = runner.invoke(
        cli, ["eval", "import-lbm", str(wrong), "--model", "m", "--out", str(tmp_path / "t2")]
    )
    assert res.exit_code == 2 and "named results-<timestamp>.json" in res.output


def test_import_keeps_episode_metrics_and_checks_them(tmp_path):
    evs = [_evaluation("ReachTarget", i, i == 0) for i in range(2)]
    evs[0]["metrics"] = {"goal_distance": 0.01, "tcp_height": 0.03}
    evs[1]["metrics_error"] = "Traceback (most recent call last):\nKeyError: 'yellow'\n"
    import_lbm_results(_lbm_file(tmp_path, evs), model="mine", eval_set=None, out=tmp_path / "tree")
    rs = load_results(tmp_path / "tree")
    (tr,) = rs.results.values()
    assert [e.metrics for e in tr.episodes] == [{"goal_distance": 0.01, "tcp_height": 0.03}, None]
    assert (tr.n, tr.successes) == (2, 1) and any("KeyError" in w for w in rs.warnings)
    evs[0]["metrics"] = {"goal_distance": "near"}
    bad = _lbm_file(tmp_path / "bad", evs)
    with pytest.raises(DataError, match=r"evaluations\[0\]\.metrics\.goal_distance must be a number"):
        import_lbm_results(bad, model="mine", eval_set=None, out=tmp_path / "tree2")
