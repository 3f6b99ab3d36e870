"""STEP boundary synthesis time (our own implementation) for n_max = 50 / 200 / 500, alpha = 0.05, linear
budget: the LP construction (default; 129 control points + 32 near the ends + any added where the size
peaked, size verified ≤ alpha at every null rate)
and, for comparison in the same process, the legacy fixed-order construction. Each synthesis runs from
scratch (no disk cache) and is checked: the size must stay ≤ alpha.

Baseline: the reference system states 15–25 s for n_max = 200 on two CPU cores; we use 20 s (a stated
number, not re-measured: the reference package is CC BY-NC and not installed).
ratio = 20 s / our n_max = 200 time (higher is faster). ``--quick``: n_max 50 and 200 only.

    uv run python benchmarks/step_synthesis.py [--quick]
"""

from __future__ import annotations

import argparse
import time

BASELINE_S_200 = 20.0


def _time_one(n_max: int, construction: str = "lp") -> tuple[float, float]:
    """(wall s, CPU s of this process): on a shared machine the CPU time is the steadier number."""
    from foundry_eval.stats.step import StepSpec, synthesize

    t0, c0 = time.perf_counter(), time.process_time()
    pol = synthesize(StepSpec(n_max=n_max, alpha=0.05, construction=construction))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if construction == "lp":
        assert pol.size_max <= 0.05, "type-I error exceeded"
    return dt, dc


def run(quick: bool) -> dict:
    sizes = (50, 200) if quick else (50, 200, 500)
    times = {n: _time_one(n) for n in sizes}
    legacy = {n: _time_one(n, "legacy") for n in sizes}
    return {
        "name": "step_synthesis",
        "metric": "stated reference time (20 s) / our synthesis time, n_max=200",
        "higher_is_better": True,
        "ratio": BASELINE_S_200 / times[200][0],
        "baseline": BASELINE_S_200,
        "ours": times[200][0],
        "unit": "s (n_max=200)",
        "times_s": {str(n): round(t[0], 3) for n, t in times.items()},
        "cpu_s": {str(n): round(t[1], 3) for n, t in times.items()},
        "legacy_times_s": {str(n): round(t[0], 3) for n, t in legacy.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n_max 50 and 200 only")
    res = run(ap.parse_args().quick)
    print(f"{'n_max':>6}  {'LP (s)':>8}  {'LP CPU (s)':>10}  {'legacy (s)':>10}")
    for n, t in res["times_s"].items():
        print(f"{n:>6}  {t:>8.2f}  {res['cpu_s'][n]:>10.2f}  {res['legacy_times_s'][n]:>10.2f}")
    print(
        f"baseline (reference, stated) n_max=200: {res['baseline']:.1f} s; ours {res['ours']:.2f} s; "
        f"ratio (baseline/ours) = {res['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
