"""Benchmark of the GA baseline (Section V.A / V.B) at N = 30, Table II defaults.

Prints, for allocation-only and joint mode:
  * wall time of the jitted run on one scenario (warmed up, block_until_ready,
    median over --repeats runs) and of the vmapped run over --batch scenarios;
  * wall time of the same run executed eagerly (``jax.disable_jit``: op-by-op
    dispatch from a Python loop, a stand-in for a plain NumPy/Python GA),
    measured (after a warm-up call) over a few iterations and extrapolated
    linearly to the full run;
  * the modelled operation count (``ga.ga_ops``) and its Eq. 9 delay at
    lambda = 1 and f = f_ser, with each transcendental / random draw costing
    1 operation (lower bound) and 20 / 10 operations;
  * the mean best objective (Eq. 11a, no inference delay) after 0, 25, 50,
    100, 200, 300, 400 iterations (one 400-iteration run per scenario), and
    without the equal-share seed in the initial population;
  * allocation mode: the GA versus equal allocation (equal shares of b_max and
    f_ser among offloaded users, computed inline) on the same scenarios;
    joint mode: offload fraction, versus all-offloaded equal share and all-local;
  * the per-task service delay and miss ratio once the GA's own delay is added
    as T^infer (Eq. 11a), for each delay estimate.

Usage: python benchmarks/ga.py [--batch 64] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import accounting, system
from dynmec_jax.baselines import ga

CHECKPOINTS = (0, 25, 50, 100, 200, 300, 400)


def timed(fn, *args, repeats):
    """Median wall time [s] of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def equal_objective(scn, mask, params):
    """Eq. 11a objective of equal shares of b_max and f_ser among offloaded users."""
    x = jnp.asarray(mask).astype(bool)
    n_off = jnp.maximum(jnp.sum(x, axis=-1, keepdims=True), 1)
    b = jnp.where(x, params.bandwidth_max / n_off, 0.0)
    f = jnp.where(x, params.f_server / n_off, 0.0)
    return system.objective(system.task_outcomes(scn, x, b, f, params), params)


def with_inference(scn, res, params, t_infer):
    """Mean per-task service delay [s] and miss ratio with T^infer = t_infer [s] for every task."""
    out = system.task_outcomes(scn, res.offload, res.bandwidth, res.f_alloc, params,
                               infer_edge=t_infer, infer_local=t_infer)
    return float(jnp.mean(out.delay)), float(jnp.mean(out.miss))


def bench_mode(joint, params, args, scn_batch):
    n = params.n_users
    alg = ga.GeneticAlgorithm(n, n_iters=args.iters, joint=joint)
    gp = alg.default_params()
    one = jax.tree.map(lambda a: a[0], scn_batch)
    mask1 = jnp.ones(n, bool)
    maskb = jnp.ones(scn_batch.size.shape, bool)
    key = jax.random.key(args.seed)
    rec = {"mode": "joint" if joint else "allocation", "n_users": n,
           "pop_size": alg.pop_size, "n_iters": args.iters,
           "decay_interval": int(gp.decay_interval)}

    run1 = jax.jit(alg.run)
    rec["wall_jit_one_s"] = timed(run1, key, one, mask1, params, gp, repeats=args.repeats)
    runb = jax.jit(alg.run_batch)
    t_b = timed(runb, key, scn_batch, maskb, params, gp, repeats=max(3, args.repeats // 2))
    rec["wall_jit_batch_s"] = t_b
    rec["wall_jit_batch_per_scenario_s"] = t_b / scn_batch.size.shape[0]

    eager_iters = args.eager_iters
    alg_e = ga.GeneticAlgorithm(n, n_iters=eager_iters, joint=joint)
    with jax.disable_jit():
        jax.block_until_ready(alg_e.run(key, one, mask1, params, gp))  # warm op caches
        t0 = time.perf_counter()
        jax.block_until_ready(alg_e.run(key, one, mask1, params, gp))
        t_e = time.perf_counter() - t0
    rec["wall_eager_iters"] = eager_iters
    rec["wall_eager_measured_s"] = t_e
    rec["wall_eager_extrapolated_s"] = t_e * (args.iters + 1) / (eager_iters + 1)

    for label, tc, rc in (("lower_bound", 1, 1), ("costly_transcendental_rng", 20, 10)):
        ops = ga.ga_ops(n, alg.pop_factor, args.iters, joint,
                        transcendental_cost=tc, random_cost=rc)
        rec[f"ops_{label}"] = ops
        rec[f"modelled_delay_{label}_s"] = float(accounting.inference_delay(ops["total"], params))

    counted = ga.evaluation_ops(n, params)
    rec["evaluation_ops_jaxpr"] = counted

    # Convergence: one long run per scenario.
    alg_l = ga.GeneticAlgorithm(n, n_iters=max(CHECKPOINTS), joint=joint)
    res_l = jax.jit(alg_l.run_batch)(key, scn_batch, maskb, params, gp)
    hist = np.asarray(res_l.best_objective_history)
    rec["mean_objective_at"] = {str(c): float(hist[:, c].mean()) for c in CHECKPOINTS}

    alg_u = ga.GeneticAlgorithm(n, n_iters=args.iters, joint=joint, seed_equal=False)
    res_u = jax.jit(alg_u.run_batch)(key, scn_batch, maskb, params, gp)
    hist_u = np.asarray(res_u.best_objective_history)
    rec["unseeded_mean_objective_at"] = {
        str(c): float(hist_u[:, c].mean()) for c in CHECKPOINTS if c <= args.iters}

    res = runb(key, scn_batch, maskb, params, gp)
    rec["mean_objective"] = float(jnp.mean(res.objective))
    eq = equal_objective(scn_batch, maskb, params)
    rec["equal_all_offloaded_mean_objective"] = float(jnp.mean(eq))
    rec["ga_over_equal_mean_ratio"] = float(jnp.mean(res.objective / eq))
    rec["ga_better_than_equal_fraction"] = float(jnp.mean(res.objective < eq * (1 - 1e-6)))
    if joint:
        rec["offload_fraction"] = float(jnp.mean(res.offload))
        loc = system.objective(system.task_outcomes(
            scn_batch, jnp.zeros_like(maskb), jnp.zeros(maskb.shape), jnp.zeros(maskb.shape),
            params), params)
        rec["all_local_mean_objective"] = float(jnp.mean(loc))
        e_loc = system.local_energy(scn_batch.workload, scn_batch.size, scn_batch.f_local, params)
        rec["mean_local_energy_J"] = float(jnp.mean(e_loc))

    # Service delay once the GA's own delay counts (Eq. 11a's T^infer).
    delays = {"none": 0.0, "modelled_lower_bound": rec["modelled_delay_lower_bound_s"],
              "modelled_costly": rec["modelled_delay_costly_transcendental_rng_s"],
              "measured_jit": rec["wall_jit_one_s"],
              "measured_eager": rec["wall_eager_extrapolated_s"]}
    rec["service_with_inference"] = {
        k: dict(zip(("mean_delay_s", "miss_ratio"), with_inference(scn_batch, res, params, v),
                    strict=True))
        for k, v in delays.items()}
    return rec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--eager-iters", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="allocation,joint")
    parser.add_argument("--json", default=None, help="also write the records here")
    args = parser.parse_args()

    params = system.SystemParams()
    scn = system.sample_scenarios(jax.random.key(args.seed + 1), params, args.batch)
    records = []
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        rec = bench_mode(mode == "joint", params, args, scn)
        rec["benchmark_wall_s"] = time.perf_counter() - t0
        records.append(rec)
        print(f"\n=== GA, {rec['mode']} mode: N={rec['n_users']}, P={rec['pop_size']}, "
              f"{rec['n_iters']} iterations, decay interval {rec['decay_interval']} ===")
        print(f"jitted wall, one scenario (median of {args.repeats}): "
              f"{rec['wall_jit_one_s'] * 1e3:.1f} ms")
        print(f"jitted wall, vmapped over {args.batch}: {rec['wall_jit_batch_s'] * 1e3:.1f} ms "
              f"({rec['wall_jit_batch_per_scenario_s'] * 1e3:.2f} ms/scenario)")
        print(f"eager wall (disable_jit), {rec['wall_eager_iters']} iterations: "
              f"{rec['wall_eager_measured_s']:.2f} s -> {rec['n_iters']} iterations: "
              f"{rec['wall_eager_extrapolated_s']:.1f} s (extrapolated)")
        for label in ("lower_bound", "costly_transcendental_rng"):
            o = rec[f"ops_{label}"]
            print(f"modelled ops [{label}]: {o['total']:.3e} (evals {o['evaluations']}, "
                  f"arith {o['arith']:.3e}, transc {o['transcendental']:.3e}, "
                  f"random {o['random']:.3e}) -> Eq. 9 delay "
                  f"{rec[f'modelled_delay_{label}_s'] * 1e3:.1f} ms")
        print(f"jaxpr count of one evaluation: {rec['evaluation_ops_jaxpr']}")
        print("mean best objective vs iterations: " + ", ".join(
            f"{k}: {v:.4f}" for k, v in rec["mean_objective_at"].items()))
        print("  without the equal-share seed: " + ", ".join(
            f"{k}: {v:.4f}" for k, v in rec["unseeded_mean_objective_at"].items()))
        print(f"GA ({rec['n_iters']} it.) mean objective {rec['mean_objective']:.4f}; "
              f"equal share (all offloaded) {rec['equal_all_offloaded_mean_objective']:.4f}; "
              f"mean ratio GA/equal {rec['ga_over_equal_mean_ratio']:.4f}; "
              f"GA better on {rec['ga_better_than_equal_fraction'] * 100:.0f}% of scenarios")
        if "offload_fraction" in rec:
            print(f"joint: offload fraction {rec['offload_fraction']:.3f}; all-local objective "
                  f"{rec['all_local_mean_objective']:.3f}; mean E_loc "
                  f"{rec['mean_local_energy_J']:.3g} J")
        for k, v in rec["service_with_inference"].items():
            print(f"  T_infer = {k:22s}: mean service delay {v['mean_delay_s'] * 1e3:9.2f} ms, "
                  f"miss ratio {v['miss_ratio']:.3f}")
    print(f"\njax {jax.__version__}, backend {jax.default_backend()}, "
          f"devices {jax.devices()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"records": records, "jax": jax.__version__,
                       "backend": jax.default_backend()}, fh, indent=2)


if __name__ == "__main__":
    main()
