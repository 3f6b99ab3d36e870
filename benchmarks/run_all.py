"""Run every benchmark in this folder, print one table of ratios against their baselines, write results.json.

Each benchmark module (any ``benchmarks/*.py`` except this file and ``_``-prefixed helpers) runs in its own
subprocess with a timeout, so one that raises or hangs is reported in the table, never fatal to the others.
The contract a benchmark module fulfils is in ``benchmarks/README.md``; modules that predate parts of it
(no ``device`` parameter, missing ``metric``/``higher_is_better``) are called with only the parameters they
accept and shown with what they return.

    uv run python benchmarks/run_all.py [--quick] [--only NAME ...] [--gpu] [--timeout S] [--out FILE]

``--gpu`` passes ``device="cuda"`` to benchmarks whose ``run`` accepts ``device``, marks the others skipped
and reports MFU (achieved FLOP/s over the dense bf16 peak of the device, from
``foundry_core.train.metrics.GPU_PEAK_BF16``) for benchmarks that return ``flops_per_s`` or ``mfu``.
Exit status: 0 when every selected benchmark ran (or was skipped), 1 when one errored or timed out; with
``--strict`` also 1 when one missed its declared goal. Tested by ``tests/test_benchmarks_runner.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results.json"
REQUIRED_KEYS = ("name", "baseline", "ours", "ratio")
#: Status of one benchmark run: ran and met its goal, ran and missed it, ran without a goal (or without
#: ``higher_is_better`` to judge it), raised, hung, or not applicable (``--gpu`` without a device parameter).
STATUSES = ("pass", "fail", "ok", "error", "timeout", "skipped")


# --------------------------------------------------------------------------------------------- discovery
def discover(directory: Path, only: list[str] | None = None) -> list[Path]:
    """Benchmark module files in ``directory``, sorted; ``only`` filters by module stem (unknown → error)."""
    files = sorted(
        p
        for p in directory.glob("*.py")
        if not p.name.startswith("_") and p.resolve() != Path(__file__).resolve()
    )
    if only:
        stems = {p.stem: p for p in files}
        unknown = [n for n in only if n not in stems]
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {unknown}; available: {sorted(stems)}")
        files = [stems[n] for n in only]
    return files


# --------------------------------------------------------------------------------------------- worker side
def mfu(flops_per_s: float, device_name: str) -> tuple[float | None, float | None]:
    """(MFU, peak FLOP/s) of one device against the dense bf16 peak table; (None, None) for an unknown GPU."""
    from foundry_core.train.metrics import GPU_PEAK_BF16

    for key, peak in GPU_PEAK_BF16:
        if key in device_name:
            return flops_per_s / peak, peak
    return None, None


_RATIO_LINE = re.compile(r"`*ratio`*\s*=\s*(.+?)(?:\.\s|\.$|$)", re.MULTILINE)


def ratio_from_doc(doc: str | None) -> str | None:
    """The ``ratio = ...`` phrase of a module docstring: what the ratio means when ``metric`` is missing."""
    match = _RATIO_LINE.search(doc or "")
    return match.group(1).replace("`", "").strip() if match else None


def _import_benchmark(path: Path) -> Any:
    """Import under the file's own name (so spawned worker pools can import it again), unless taken."""
    if path.stem not in sys.modules:
        return importlib.import_module(path.stem)
    spec = importlib.util.spec_from_file_location(f"_foundry_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _worker(path: Path, quick: bool, device: str, out: Path) -> int:
    """Import one benchmark module, call its ``run`` with the parameters it accepts, write the outcome."""
    sys.path.insert(0, str(path.parent))  # benchmarks may import sibling helper modules
    record: dict[str, Any]
    try:
        module = _import_benchmark(path)
        run = getattr(module, "run", None)
        if not callable(run):
            raise TypeError(f"{path.name} has no run(quick: bool, device: str = 'cpu') function")
        params = inspect.signature(run).parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs: dict[str, Any] = {"quick": quick}
        if "device" in params or takes_kwargs:
            kwargs["device"] = device
        elif device != "cpu":
            record = {"status": "skipped", "reason": f"run() takes no device parameter; not run on {device}"}
            out.write_text(json.dumps(record))
            return 0
        result = run(**kwargs)
        if not isinstance(result, dict):
            raise TypeError(f"run() returned {type(result).__name__}, expected a dict")
        record = {"status": "ran", "result": result, "ratio_doc": ratio_from_doc(module.__doc__)}
        if device.startswith("cuda"):
            import torch

            name = torch.cuda.get_device_name(torch.device(device))
            record["device_name"] = name
            if "mfu" not in result and isinstance(result.get("flops_per_s"), (int, float)):
                value, peak = mfu(float(result["flops_per_s"]), name)
                record["mfu"], record["peak_flops"] = value, peak
            elif "mfu" in result:
                record["mfu"] = result["mfu"]
    except BaseException as exc:  # noqa: BLE001 - everything a benchmark raises is reported, not fatal
        record = {
            "status": "error",
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    out.write_text(json.dumps(record, default=_jsonable))
    return 0


# --------------------------------------------------------------------------------------------- parent side
def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def normalize(module: str, result: dict[str, Any]) -> dict[str, Any]:
    """The contract's keys with what is missing filled as None; raises ValueError on a missing required key."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"{module}: run() result lacks required key(s) {missing}; has {sorted(result)}")
    ratio = result["ratio"]
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not math.isfinite(ratio):
        raise ValueError(f"{module}: ratio must be a finite number, got {ratio!r}")
    norm = dict(result)
    norm.setdefault("metric", None)
    norm.setdefault("unit", None)
    norm.setdefault("goal", None)
    norm.setdefault("higher_is_better", None)
    return norm


def judge(result: dict[str, Any]) -> tuple[str, str | None]:
    """("pass" | "fail" | "ok", note) of one normalized result against its optional goal."""
    goal, hib = result.get("goal"), result.get("higher_is_better")
    if goal is None:
        return "ok", None
    if hib is None:
        return "ok", "goal declared without higher_is_better: not judged"
    met = result["ratio"] >= goal if hib else result["ratio"] <= goal
    return ("pass" if met else "fail"), None


def run_one(path: Path, *, quick: bool, device: str, timeout: float) -> dict[str, Any]:
    """Run one benchmark module in a fresh subprocess and return its record for the table and results.json."""
    record: dict[str, Any] = {"module": path.stem, "file": str(path), "device": device}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="foundry-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_worker",
            str(path),
            "--_result",
            str(out),
            "--device",
            device,
        ] + (["--quick"] if quick else [])
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
            record.update(
                status="timeout",
                reason=f"no result after {timeout:g} s (killed)",
                seconds=round(time.perf_counter() - start, 2),
                stderr_tail=_tail(stderr),
            )
            return record
        _kill_group(proc)  # leftovers of a benchmark's own worker pools
        record["seconds"] = round(time.perf_counter() - start, 2)
        if not out.is_file():
            record.update(
                status="error",
                reason=f"worker exited {proc.returncode} without a result",
                stderr_tail=_tail(stderr),
            )
            return record
        outcome = json.loads(out.read_text())
    if outcome["status"] in ("error", "skipped"):
        record.update(status=outcome["status"], reason=outcome["reason"])
        if outcome["status"] == "error":
            record["traceback"] = outcome.get("traceback")
            record["stderr_tail"] = _tail(stderr)
        return record
    try:
        result = normalize(path.stem, outcome["result"])
    except ValueError as exc:
        record.update(status="error", reason=str(exc), result=outcome["result"])
        return record
    status, note = judge(result)
    record.update(status=status, result=result)
    if note:
        record["note"] = note
    for key in ("ratio_doc", "device_name", "mfu", "peak_flops"):
        if key in outcome:
            record[key] = outcome[key]
    record["stdout_tail"] = _tail(stdout, 30)
    return record


# --------------------------------------------------------------------------------------------- table
def _num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.4g}"


def _with_unit(x: Any, unit: str | None) -> str:
    return f"{_num(x)} {unit}" if unit else _num(x)


def _goal(result: dict[str, Any]) -> str:
    goal, hib = result.get("goal"), result.get("higher_is_better")
    if goal is None:
        return "-"
    return f"{'>=' if hib else '<=' if hib is False else '?'} {_num(goal)}"


def _meaning(record: dict[str, Any], width: int = 64) -> str:
    result = record["result"]
    metric, hib = result.get("metric") or record.get("ratio_doc"), result.get("higher_is_better")
    arrow = " (higher better)" if hib else " (lower better)" if hib is False else ""
    text = metric or "(metric not declared)"
    room = width - len(arrow)  # the direction always shows; a long metric is cut (results.json has it whole)
    return (text if len(text) <= room else text[: room - 1] + "…") + arrow


def format_table(records: list[dict[str, Any]], *, gpu: bool = False) -> str:
    """One plain-text table: a row per benchmark, errors and skips with their reason."""
    header = ["benchmark", "ratio means", "baseline", "ours", "ratio", "goal", "status"]
    if gpu:
        header.insert(6, "MFU")
    rows: list[list[str]] = []
    for rec in records:
        res = rec.get("result")
        if rec["status"] in ("pass", "fail", "ok") and res is not None:
            row = [
                res["name"],
                _meaning(rec),
                _with_unit(res["baseline"], res["unit"]),
                _with_unit(res["ours"], res["unit"]),
                f"{_num(res['ratio'])}x",
                _goal(res),
                rec["status"],
            ]
            if gpu:
                row.insert(6, f"{rec['mfu']:.1%}" if isinstance(rec.get("mfu"), (int, float)) else "-")
        else:
            row = [
                rec["module"],
                rec.get("reason", "").splitlines()[0][:70] if rec.get("reason") else "",
                "-",
                "-",
                "-",
                "-",
                rec["status"],
            ]
            if gpu:
                row.insert(6, "-")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_jsonable)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_all(files: list[Path], *, quick: bool, device: str, timeout: float) -> list[dict[str, Any]]:
    records = []
    for i, path in enumerate(files, 1):
        print(f"[{i}/{len(files)}] {path.stem} ...", file=sys.stderr, flush=True)
        rec = run_one(path, quick=quick, device=device, timeout=timeout)
        print(
            f"[{i}/{len(files)}] {path.stem}: {rec['status']} ({rec.get('seconds', 0):.1f} s)"
            + (f" - {rec['reason'].splitlines()[0]}" if rec.get("reason") else ""),
            file=sys.stderr,
            flush=True,
        )
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode (< 60 s each)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these benchmark modules (file stems)"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="device cuda where supported; report MFU; skip others"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per benchmark (default 300 with --quick, 1200 otherwise)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results file (default {DEFAULT_OUT})")
    parser.add_argument("--dir", type=Path, default=HERE, help="folder holding the benchmark modules")
    parser.add_argument("--strict", action="store_true", help="exit 1 also when a benchmark misses its goal")
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker is not None:
        return _worker(args._worker, args.quick, args.device, args._result)

    device = "cuda" if args.gpu else "cpu"
    timeout = args.timeout if args.timeout is not None else (300.0 if args.quick else 1200.0)
    files = discover(args.dir, args.only)
    started = _dt.datetime.now(_dt.UTC)
    records = run_all(files, quick=args.quick, device=device, timeout=timeout)
    print(format_table(records, gpu=args.gpu))
    payload = {
        "created": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "device": device,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "benchmarks": records,
    }
    write_json_atomic(args.out, payload)
    print(f"results: {args.out}", file=sys.stderr)
    bad = {"error", "timeout"} | ({"fail"} if args.strict else set())
    return 1 if any(r["status"] in bad for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
