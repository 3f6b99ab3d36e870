"""benchmarks/run_all.py on tiny fake benchmark modules: one passing its goal, one raising, one hanging,
one without a device parameter (skipped with --gpu), one with keys missing, one with a spawned process
pool. Each runs in a subprocess.

    uv run pytest tests/test_benchmarks_runner.py -q
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("foundry_benchmarks_run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, body: str) -> None:
    path.write_text(textwrap.dedent(body))


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    d = tmp_path / "benchmarks"
    d.mkdir()
    _write(
        d / "fast_thing.py",
        """
        def run(quick: bool, device: str = "cpu") -> dict:
            return {"name": "fast_thing", "metric": "ours / baseline throughput", "unit": "items/s",
                    "baseline": 10.0, "ours": 25.0 if quick else 30.0, "ratio": 2.5 if quick else 3.0,
                    "goal": 2.0, "higher_is_better": True, "device_seen": device}
    """,
    )
    _write(
        d / "broken_thing.py",
        """
        def run(quick: bool) -> dict:
            raise RuntimeError("synthetic failure in broken_thing")
    """,
    )
    _write(d / "_helper.py", "raise AssertionError('helpers are not benchmarks')\n")
    return d


def test_table_and_json(run_all, bench_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    code = run_all.main(["--dir", str(bench_dir), "--out", str(out), "--quick", "--timeout", "60"])
    assert code == 1  # broken_thing errored
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["benchmark", "ratio"]
    fast = next(line for line in lines if line.startswith("fast_thing"))
    assert "10 items/s" in fast and "25 items/s" in fast and "2.5x" in fast and ">= 2" in fast
    assert fast.rstrip().endswith("pass")
    broken = next(line for line in lines if line.startswith("broken_thing"))
    assert "synthetic failure" in broken and broken.rstrip().endswith("error")
    assert not any(line.startswith("_helper") for line in lines)

    payload = json.loads(out.read_text())
    assert payload["quick"] is True and payload["device"] == "cpu"
    recs = {r["module"]: r for r in payload["benchmarks"]}
    assert set(recs) == {"fast_thing", "broken_thing"}
    assert recs["fast_thing"]["status"] == "pass"
    assert (
        recs["fast_thing"]["result"]["ratio"] == 2.5 and recs["fast_thing"]["result"]["device_seen"] == "cpu"
    )
    assert recs["broken_thing"]["status"] == "error"
    assert "RuntimeError" in recs["broken_thing"]["reason"]
    assert "synthetic failure" in recs["broken_thing"]["traceback"]
    assert not list(tmp_path.glob(".results.json.*"))  # the atomic write left no temporary behind
    assert out.stat().st_mode & 0o777 == 0o644


def test_only_goal_miss_and_strict(run_all, bench_dir: Path, tmp_path: Path, capsys) -> None:
    _write(
        bench_dir / "slow_thing.py",
        """
        def run(quick):
            return {"name": "slow_thing", "baseline": 5, "ours": 10, "ratio": 2.0, "goal": 1.0,
                    "higher_is_better": False, "unit": "ms"}
    """,
    )
    out = tmp_path / "r.json"
    assert (
        run_all.main(["--dir", str(bench_dir), "--out", str(out), "--only", "slow_thing", "fast_thing"]) == 0
    )
    assert run_all.main(["--dir", str(bench_dir), "--out", str(out), "--only", "slow_thing", "--strict"]) == 1
    recs = {r["module"]: r for r in json.loads(out.read_text())["benchmarks"]}
    assert set(recs) == {"slow_thing"} and recs["slow_thing"]["status"] == "fail"
    assert "<= 1" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_all.main(["--dir", str(bench_dir), "--out", str(out), "--only", "nope"])


def test_timeout_missing_keys_and_gpu_skip(run_all, tmp_path: Path) -> None:
    _write(tmp_path / "hangs.py", "import time\n\ndef run(quick):\n    time.sleep(60)\n")
    _write(tmp_path / "partial.py", "def run(quick):\n    return {'name': 'partial', 'ratio': 1.0}\n")
    _write(tmp_path / "cpu_only.py", "def run(quick):\n    raise AssertionError('must not run with --gpu')\n")
    hang = run_all.run_one(tmp_path / "hangs.py", quick=True, device="cpu", timeout=2)
    assert hang["status"] == "timeout" and hang["seconds"] < 20
    partial = run_all.run_one(tmp_path / "partial.py", quick=True, device="cpu", timeout=60)
    assert partial["status"] == "error" and "baseline" in partial["reason"]
    skipped = run_all.run_one(tmp_path / "cpu_only.py", quick=True, device="cuda", timeout=60)
    assert skipped["status"] == "skipped" and "device" in skipped["reason"]
    table = run_all.format_table([hang, partial, skipped], gpu=True)
    assert "MFU" in table.splitlines()[0]
    assert [line.split()[-1] for line in table.splitlines()[2:]] == ["timeout", "error", "skipped"]


def test_spawned_pools_and_docstring_metric(run_all, tmp_path: Path) -> None:
    """A benchmark whose process pool (spawn) pickles its own functions, and a metric from the docstring."""
    _write(
        tmp_path / "pooled.py",
        '''
        """Pooled fake. ratio = pool result / 1 (higher is better). More text."""
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        def _square(x):
            return x * x

        def run(quick):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                value = sum(pool.map(_square, [1, 2]))
            return {"name": "pooled", "baseline": 1, "ours": value, "ratio": value / 1}
    ''',
    )
    rec = run_all.run_one(tmp_path / "pooled.py", quick=True, device="cpu", timeout=120)
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["result"]["ours"] == 5
    assert rec["ratio_doc"] == "pool result / 1 (higher is better)"
    assert "pool result / 1" in run_all.format_table([rec]).splitlines()[2]
    assert run_all.ratio_from_doc("x\n``ratio`` = a / b (goal >= 0.95). MFU") == "a / b (goal >= 0.95)"
    assert run_all.ratio_from_doc("no such phrase") is None


def test_mfu_uses_dense_bf16_peaks(run_all) -> None:
    value, peak = run_all.mfu(494.5e12, "NVIDIA H100 80GB HBM3")
    assert peak == 989e12 and value == pytest.approx(0.5)
    assert run_all.mfu(1e12, "NVIDIA H200")[1] == 989e12
    assert run_all.mfu(1e12, "Some Future GPU") == (None, None)
