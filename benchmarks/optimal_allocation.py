"""Speed and quality of the exact (KKT) allocator against the equal share.

Prints, for 1,024 scenarios x 30 users with Table II defaults:
* the jitted wall time of ``baselines.optimal_allocation`` (warmed up,
  ``block_until_ready``, median of ``--repeats`` runs) and of the equal share;
* the per-scenario operation count ``optimal_allocation_ops(30)`` and the
  Eq. 9 inference delay it implies (lambda ops / f_ser), next to the MoE
  allocator's largest model (10 experts, depth 3) for scale;
* the mean weighted delay sum_i w_i (T_tra + T_com) of optimal vs equal with
  all users offloaded and with a random 60% offloaded.

Usage: ``python benchmarks/optimal_allocation.py [--batch 1024] [--repeats 20] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import accounting, baselines, system


def median_time(fn, *args, repeats: int) -> float:
    """Median wall time [s] of ``fn(*args)`` over ``repeats`` runs, after one warm-up."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(batch: int = 1024, repeats: int = 20, seed: int = 0) -> dict:
    """Runs the benchmark and prints its numbers; returns them as a dict."""
    params = system.SystemParams()
    k_scn, k_mask = jax.random.split(jax.random.PRNGKey(seed))
    scn = system.sample_scenarios(k_scn, params, batch=batch)
    shape = (batch, params.n_users)
    masks = {
        "all offloaded": jnp.ones(shape, bool),
        "random 60% offloaded": jax.random.uniform(k_mask, shape) < 0.6,
    }

    opt = jax.jit(baselines.optimal_allocation)
    eq = jax.jit(baselines.equal_allocation)
    wd = jax.jit(system.weighted_delay)

    x_all = masks["all offloaded"]
    t_opt = median_time(opt, scn, x_all, params, repeats=repeats)
    t_eq = median_time(eq, scn, x_all, params, repeats=repeats)
    print(f"{jax.devices()[0].platform} x {jax.device_count()}, jax {jax.__version__}, "
          f"{batch} scenarios x {params.n_users} users, median of {repeats} runs")
    print(f"  optimal_allocation (jit): {1e3 * t_opt:8.3f} ms per call "
          f"({1e6 * t_opt / batch:.2f} us per scenario)")
    print(f"  equal_allocation   (jit): {1e3 * t_eq:8.3f} ms per call")

    ops = baselines.optimal_allocation_ops(params.n_users)
    ops15 = baselines.optimal_allocation_ops(params.n_users, special_cost=15)
    moe = accounting.allocation_model_macs(10, 3, params.n_users)
    moe_total = moe["dynamic"] + moe["fixed"]
    print(f"  ops per scenario (N = {params.n_users}): {ops:,.0f} MAC-equivalents "
          f"(exp/log/div = 1 op); {ops15:,.0f} with exp/log/div = 15 ops")
    print(f"  Eq. 9 inference delay at f_ser = {params.f_server / 1e9:g} GHz: "
          f"{1e6 * float(accounting.inference_delay(ops, params)):.2f} us "
          f"({1e6 * float(accounting.inference_delay(ops15, params)):.2f} us); "
          f"MoE allocator (10, 3): {moe_total:,} MACs, "
          f"{1e6 * float(accounting.inference_delay(moe_total, params)):.1f} us")

    results = {"time_optimal_s": t_opt, "time_equal_s": t_eq, "ops": ops, "ops_special15": ops15}
    for name, x in masks.items():
        b, f = opt(scn, x, params)
        be, fe = eq(scn, x, params)
        d_opt = float(jnp.mean(wd(scn, x, b, f, params)))
        d_eq = float(jnp.mean(wd(scn, x, be, fe, params)))
        gain = 1.0 - d_opt / d_eq
        print(f"  {name:>21}: mean weighted delay optimal {d_opt:10.3f}, equal {d_eq:10.3f} "
              f"(optimal {100 * gain:.1f}% lower)")
        results[name] = {"optimal": d_opt, "equal": d_eq, "relative_gain": gain}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.batch, args.repeats, args.seed)
