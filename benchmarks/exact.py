"""Seconds per scenario of the certified optimum (``baselines.exact``) over N.

For each N (default 10, 30, 60, 100; Table II defaults, ``--scenarios``
scenarios each, one key per N) runs ``exact.exact_optimum`` (SCIP outer
approximation, tol 1e-6) and prints per N: min / median / max wall seconds
per scenario, the largest relative gap (UB - LB) / UB, the MILP solves per
scenario (median / max), how many scenarios ended "optimal", the offloaded
fraction, and how far the greedy heuristic (``baselines.greedy_offloading``,
float32) and all-local execution are above the optimum (mean, relative).
Scenarios run one at a time in this process (SCIP single-threaded).

Needs the ``exact`` extra (``pip install -e '.[exact]'``).

Usage: ``python benchmarks/exact.py [--sizes 10 30 60 100] [--scenarios 8] [--seed 0]
[--json out.json]``; last line ``exact_seconds_n60 <median seconds at N = 60>``.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np

from dynmec_jax import baselines, system
from dynmec_jax.baselines import exact


def run(n: int, scenarios: int, seed: int) -> dict:
    """Solves ``scenarios`` Table II scenarios of ``n`` users; returns the row's figures."""
    sp = system.SystemParams(n_users=n)
    scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(seed), n), sp, scenarios)
    scn = jax.tree.map(lambda a: np.asarray(a, np.float64), scn)
    res = exact.exact_optimum(scn, sp)
    greedy = np.asarray(baselines.greedy_offloading(scn, sp).cost, np.float64)
    local = np.asarray(system.cost_local(scn, sp), np.float64).sum(-1)
    s = res.seconds
    return {
        "n": n, "scenarios": scenarios,
        "seconds_min": float(s.min()), "seconds_median": float(np.median(s)),
        "seconds_max": float(s.max()), "gap_max": float(res.gap.max()),
        "iterations_median": float(np.median(res.iterations)),
        "iterations_max": int(res.iterations.max()),
        "optimal": int(np.sum(res.status == "optimal")),
        "offloaded": float(res.offload.mean()),
        "greedy_excess": float(np.mean(greedy / res.cost - 1.0)),
        "local_excess": float(np.mean(local / res.cost - 1.0)),
    }


def main(sizes=(10, 30, 60, 100), scenarios: int = 8, seed: int = 0) -> list[dict]:
    """Runs the benchmark, prints the table; returns its rows."""
    print(f"exact_optimum (SCIP outer approximation, tol 1e-6), Table II, {scenarios} "
          f"scenarios per N, {os.cpu_count()} CPUs")
    print(f"{'N':>4} {'min s':>7} {'median s':>9} {'max s':>7} {'max gap':>9} "
          f"{'MILPs med/max':>14} {'optimal':>8} {'offloaded':>9} {'greedy +':>9} "
          f"{'local +':>8}")
    rows = []
    for n in sizes:
        r = run(n, scenarios, seed)
        rows.append(r)
        print(f"{n:>4} {r['seconds_min']:>7.3f} {r['seconds_median']:>9.3f} "
              f"{r['seconds_max']:>7.3f} {r['gap_max']:>9.1e} "
              f"{r['iterations_median']:>7.1f}/{r['iterations_max']:<6d} "
              f"{r['optimal']:>4d}/{r['scenarios']:<3d} {r['offloaded']:>9.2f} "
              f"{100 * r['greedy_excess']:>8.3f}% {100 * r['local_excess']:>7.1f}%",
              flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 60, 100])
    parser.add_argument("--scenarios", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    rows = main(tuple(args.sizes), args.scenarios, args.seed)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    n60 = [r for r in rows if r["n"] == 60]
    print(f"exact_seconds_n60 {n60[0]['seconds_median']:.3f}" if n60
          else "exact_seconds_n60 nan (N = 60 not run)")
