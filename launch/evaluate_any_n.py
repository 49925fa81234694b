r"""One pipeline for any number of users: mixed-N training against one network per N.

    python launch/evaluate_any_n.py [--mixed=DIR] [--per_n=runs/per_n] \
        [--n_users=10,20,30,40] [--gap_n_users=10,20,30,40,60] [--out=results/any_n]

* **Scheduler and policy.**  For every N of ``--n_users``, the pipeline trained
  over mixed N (``--mixed``, default: the shipped one, trained with
  ``launch/train_joint.py --config.system.n_users=60
  --config.train.n_users_min=5``) and one trained at that N alone
  (``PER_N/n<N>/pipeline``, trained here by ``launch/train_joint.py``'s
  procedure with the default joint config when missing) decide on the same
  held-out scenarios.  Reported: the mean cost sum C_i (Eq. 24-25, inference
  delays included) of both, their ratio with a 95% CI of the paired per-scenario
  difference, and greedy + KKT as a reference.  The N sweep of Fig. 7(c) can
  then use the one network instead of retraining per N.
* **Allocator.**  The shipped allocator's gap to the optimal (KKT) weighted
  delay at every N of ``--gap_n_users``, every task offloaded: the largest
  network and the worst sub-network.

Writes ``OUT.json`` and ``OUT.md``; every number comes from this run.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import jax
import numpy as np
from absl import flags, logging
from scipy import stats

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli as common
from dynmec_jax import evaluation, files, pipeline, system
from dynmec_jax.configs import joint as joint_configs
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

_MIXED = flags.DEFINE_string("mixed", None, "mixed-N pipeline (default: the shipped one)")
_PER_N = flags.DEFINE_string("per_n", "runs/per_n", "per-N pipelines: PER_N/n<N>/pipeline")
_N = flags.DEFINE_list("n_users", ["10", "20", "30", "40"], "N of the pipeline comparison")
_GAP_N = flags.DEFINE_list("gap_n_users", ["10", "20", "30", "40", "60"],
                           "N of the allocator's gap to the optimum")
_BATCH = flags.DEFINE_integer("batch", 1024, "held-out scenarios per N", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 4242, "PRNG seed of the held-out scenarios")
_OUT = flags.DEFINE_string("out", "results/any_n", "output prefix (.json, .md)")


def per_n_pipeline(n: int, root: pathlib.Path) -> pipeline.Pipeline:
    """The pipeline trained at N = n alone (trained now, with 3 seeds, if missing)."""
    path = root / f"n{n}" / "pipeline"
    if (path / "pipeline.json").is_file():
        return pipeline.load_pipeline(path)
    cfg = joint_configs.get_config("default")
    cfg.system.n_users = n
    tc = train_config.joint_config(cfg)
    alloc = allocator_lib.load_allocator()
    sp = alloc.sys_params.replace(n_users=n)
    t0 = time.time()
    states, _, per_seed, best = train_joint.train_and_select(
        tc, alloc, sp, files.seed_keys(int(cfg.seed), int(cfg.n_seeds)),
        jax.random.key(int(cfg.eval.seed) + 1), int(cfg.eval.batch))
    record = {"train_wall_time_s": time.time() - t0, "validation": per_seed,
              "exported_seed": best, "config": json.loads(cfg.to_json())}
    pipe = pipeline.make_pipeline(tc, alloc, train_joint.unstack(states, best), record)
    pipeline.save_pipeline(pipe, path)
    logging.info("trained the N = %d pipeline in %.0f s", n, record["train_wall_time_s"])
    return pipe


def ratio_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """mean(a) / mean(b) - 1 and the 95% t half-width of the paired difference over mean(b)."""
    d = a - b
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean() / b.mean()), float(half / b.mean())


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    ns = common.guard(lambda: [int(v) for v in _N.value])
    gap_ns = common.guard(lambda: [int(v) for v in _GAP_N.value])
    if min(ns + gap_ns) < 1:
        common.fail("--n_users and --gap_n_users must be positive integers")
    out = pathlib.Path(_OUT.value)
    common.writable_workdir(out.parent)
    try:
        mixed = pipeline.load_pipeline(_MIXED.value)
    except (FileNotFoundError, ValueError) as e:
        common.fail(f"--mixed: {e}")
    base = mixed.allocator.sys_params
    rows = []
    for n in ns:
        per_n = per_n_pipeline(n, pathlib.Path(_PER_N.value))
        sp = base.replace(n_users=n)
        scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(_SEED.value), n), sp,
                                      _BATCH.value)

        @jax.jit
        def costs(scn, sp=sp, per_n=per_n):
            res = {"mixed": evaluation.pipeline_method(mixed, scn, sp),
                   "per_n": evaluation.pipeline_method(per_n, scn, sp),
                   "greedy": evaluation.greedy(scn, sp)}
            return {k: evaluation.scenario_metrics(scn, v, sp)["cost"] for k, v in res.items()}

        c = {k: np.asarray(v, np.float64) for k, v in costs(scn).items()}
        gap, half = ratio_ci(c["mixed"], c["per_n"])
        rows.append({"n_users": n, "mixed_cost": float(c["mixed"].mean()),
                     "per_n_cost": float(c["per_n"].mean()),
                     "greedy_cost": float(c["greedy"].mean()),
                     "mixed_over_per_n_minus_1": gap, "ci95": half,
                     "within_1pct": bool(gap + half <= 0.01)})
        print(f"N = {n}: mixed {rows[-1]['mixed_cost']:.2f}, per-N {rows[-1]['per_n_cost']:.2f}"
              f" ({100 * gap:+.2f}% +- {100 * half:.2f}%), greedy + KKT "
              f"{rows[-1]['greedy_cost']:.2f}", flush=True)
    alloc = mixed.allocator
    gaps = []
    for n in gap_ns:
        sp = base.replace(n_users=n)
        scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(_SEED.value + 1), n), sp,
                                      _BATCH.value)
        e = train_allocator.evaluate_subnets(alloc, scn, np.ones(scn.shape, bool), sp)
        g = np.asarray(e["gap"])
        gaps.append({"n_users": n, "largest_gap": float(g[-1, -1]), "worst_gap": float(g.max()),
                     "best_gap": float(g.min())})
        print(f"allocator at N = {n}: largest network {100 * g[-1, -1]:.3f}%, worst sub-network "
              f"{100 * g.max():.3f}% above the optimal weighted delay", flush=True)
    record = {"command": ["launch/evaluate_any_n.py", *sys.argv[1:]],
              "pipelines": rows, "allocator_gap": gaps, "batch": _BATCH.value,
              "seed": _SEED.value, "mixed": _MIXED.value or "shipped",
              "mixed_record": json.loads(mixed.record).get("config"),
              "versions": files.versions()}
    files.write_json(record, out.with_suffix(".json"))
    lines = ["# One pipeline for any N", "",
             f"Made by `{' '.join(['python launch/evaluate_any_n.py', *sys.argv[1:]])}` "
             f"({_BATCH.value} held-out scenarios per N; cost = sum C_i of Eq. 24-25 per "
             "scenario, inference delays included).", "",
             "| N | mixed-N pipeline | per-N pipeline | mixed / per-N - 1 (95% CI) | "
             "greedy + KKT |", "|---|---|---|---|---|"]
    lines += [f"| {r['n_users']} | {r['mixed_cost']:.2f} | {r['per_n_cost']:.2f} | "
              f"{100 * r['mixed_over_per_n_minus_1']:+.2f}% +- {100 * r['ci95']:.2f}% | "
              f"{r['greedy_cost']:.2f} |" for r in rows]
    lines += ["", "Allocator (shipped) against the optimal allocation, every task offloaded:", "",
              "| N | largest network | worst sub-network | best sub-network |", "|---|---|---|---|"]
    lines += [f"| {g['n_users']} | {100 * g['largest_gap']:.3f}% | {100 * g['worst_gap']:.3f}% | "
              f"{100 * g['best_gap']:.3f}% |" for g in gaps]
    files.atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    common.run(main)
