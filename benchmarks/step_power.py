"""STEP power and size: the LP boundary (default) against the previous fixed-order boundary (``legacy``),
both synthesized in this process, and the reference system's stated numbers (issue 20).

Exact computations only (forward recursion over the state grid; no simulation): one-sided power
P(reject by n_max) at every pair p0 < p1 of a rate grid that includes 0 and 1, and the size (rejection
probability at p0 = p1 = p) over a dense null grid, for α in {0.05, 0.01, 0.05/6, 0.05/66}.

Baseline: the legacy construction, measured here. The reference's numbers (n_max 200) are stated in
issue 20 (its package is CC BY-NC and not installed) and printed next to ours.
ratio = min over the grid of power(LP) / power(legacy) (points where legacy power ≥ 1e-6); goal ≥ 1.0.
The result also carries ``size_over_alpha`` (max exact size / α; must be ≤ 1), the smallest power
difference and the expected stopping time of both at a few alternatives. ``--quick``: n_max 100, α in
{0.05, 0.05/66}, no reference table.

    uv run python benchmarks/step_power.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

ALPHAS = (0.05, 0.01, 0.05 / 6, 0.05 / 66)
RATES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.87, 0.9, 0.95, 0.98, 0.99, 1.0)
#: issue 20, n_max 200, one-sided: α → power at (0.75, 0.87), (0.0, 0.05), (0.01, 0.06), size at 0.05.
REFERENCE = {
    0.05: (0.882, 0.981, 0.828, 0.0501),
    0.05 / 36: (0.418, 0.552, 0.288, 0.00139),
    0.05 / 66: (0.348, 0.435, 0.221, 0.00076),
}
TABLE_POINTS = ((0.75, 0.87), (0.0, 0.05), (0.01, 0.06))
STOP_POINTS = ((0.5, 0.8), (0.3, 0.7), (0.75, 0.87), (0.0, 0.05))


def _policies(n: int, alpha: float) -> tuple[object, object, float]:
    from foundry_eval.stats.step import StepSpec, synthesize

    t0 = time.perf_counter()
    new = synthesize(StepSpec(n_max=n, alpha=alpha))
    dt = time.perf_counter() - t0
    old = synthesize(StepSpec(n_max=n, alpha=alpha, construction="legacy"))
    return new, old, dt


def expected_stop(policy, p0: float, p1: float) -> float:
    """E[min(T, n_max)] of the one-sided test under (p0, p1), exactly."""
    from foundry_eval.stats.step import _push

    m = np.ones((1, 1, 1))
    total = 0.0
    for t in range(1, policy.spec.n_max + 1):
        total += float(m.sum())
        m = _push(m, np.array([p0]), np.array([p1]))
        m[0] *= 1.0 - policy.dense(t)
    return total


def run(quick: bool) -> dict:
    from foundry_eval.stats.step import exact_rejection_probabilities, exact_size

    n = 100 if quick else 200
    alphas = (0.05, 0.05 / 66) if quick else ALPHAS + (0.05 / 36,)
    pairs = [(a, b) for a in RATES for b in RATES if a < b]
    p0, p1 = np.array(pairs).T
    null = np.sin(np.linspace(0.0, np.pi / 2, 2002)[1:-1]) ** 2
    rows, min_ratio, min_diff, worst_size, synth = [], np.inf, np.inf, 0.0, {}
    for alpha in alphas:
        new, old, synth[alpha] = _policies(n, alpha)
        pw_new = exact_rejection_probabilities(new, p0, p1)
        pw_old = exact_rejection_probabilities(old, p0, p1)
        ok = pw_old >= 1e-6
        ratio = round(float(np.min(pw_new[ok] / pw_old[ok])), 9)  # 1e-9: float rounding where both are 1
        diff = float(np.min(pw_new - pw_old))
        size_new, size_old = exact_size(new, null).max(), exact_size(old, null).max()
        table = exact_rejection_probabilities(new, *np.array(TABLE_POINTS).T)
        table_old = exact_rejection_probabilities(old, *np.array(TABLE_POINTS).T)
        at05 = (exact_size(new, [0.05])[0], exact_size(old, [0.05])[0])
        stops = [(expected_stop(new, *pt), expected_stop(old, *pt)) for pt in STOP_POINTS]
        rows.append((alpha, ratio, diff, size_new / alpha, size_old / alpha, table, table_old, at05, stops))
        min_ratio, min_diff = min(min_ratio, ratio), min(min_diff, diff)
        worst_size = max(worst_size, size_new / alpha)
    return {
        "name": "step_power",
        "metric": f"min over the rate grid of power(LP) / power(legacy), n_max={n}",
        "higher_is_better": True,
        "goal": 1.0,
        "ratio": min_ratio,
        "baseline": 1.0,
        "ours": min_ratio,
        "unit": "power ratio",
        "min_power_difference": min_diff,
        "size_over_alpha": worst_size,
        "n_max": n,
        "synthesis_s": {f"{a:.6g}": round(t, 2) for a, t in synth.items()},
        "rows": [
            {
                "alpha": a,
                "min_ratio": r,
                "min_diff": d,
                "size_new_over_alpha": sn,
                "size_old_over_alpha": so,
                "table_new": [float(v) for v in tn],
                "table_old": [float(v) for v in to],
                "size_at_0.05": [float(v) for v in s05],
                "expected_stop_new_old": [[round(x, 2) for x in st] for st in stops],
            }
            for a, r, d, sn, so, tn, to, s05, stops in rows
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n_max 100, two alphas")
    res = run(ap.parse_args().quick)
    print(f"n_max = {res['n_max']}, one-sided, exact (forward recursion)")
    print(
        f"{'alpha':>10} {'min new/old':>12} {'min new-old':>12} {'size/α new':>11} {'size/α old':>11}  synth s"
    )
    for r in res["rows"]:
        print(
            f"{r['alpha']:>10.6f} {r['min_ratio']:>12.4f} {r['min_diff']:>12.2e} "
            f"{r['size_new_over_alpha']:>11.6f} {r['size_old_over_alpha']:>11.6f}  "
            f"{res['synthesis_s'][format(r['alpha'], '.6g')]:.1f}"
        )
    print("\npower 0.75 vs 0.87 | 0.0 vs 0.05 | 0.01 vs 0.06 | size at p = 0.05   (new / old / reference)")
    for r in res["rows"]:
        ref = next((v for a, v in REFERENCE.items() if abs(a - r["alpha"]) < 1e-12), None)
        ref = ref if res["n_max"] == 200 else None  # the reference's numbers are for n_max 200
        cells = []
        for i in range(3):
            cell = f"{r['table_new'][i]:.4f} / {r['table_old'][i]:.4f}"
            cells.append(cell + (f" / {ref[i]:.3f}" if ref else ""))
        s = r["size_at_0.05"]
        size = f"{s[0]:.5f} / {s[1]:.5f}" + (f" / {ref[3]:.5f}" if ref else "")
        print(f"α={r['alpha']:.6f}: " + " | ".join(cells) + " | " + size)
    print("\nE[stopping time] new / old at (0.5,0.8) (0.3,0.7) (0.75,0.87) (0,0.05):")
    for r in res["rows"]:
        print(f"α={r['alpha']:.6f}: " + "  ".join(f"{a:.1f}/{b:.1f}" for a, b in r["expected_stop_new_old"]))
    print(
        f"\nratio (min power new/old over the grid) = {res['ratio']:.4f} (goal >= 1.0); "
        f"max size/α = {res['size_over_alpha']:.8f} (must be <= 1)"
    )


if __name__ == "__main__":
    main()
