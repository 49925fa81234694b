r"""Equal versus optimal (KKT) resource allocation on sampled scenarios.

Samples scenarios from Table II's defaults (Section V), offloads every task
(the "users without computing power" case of Section V.A) and prints, for the
equal split and for the exact minimiser of the importance-weighted delay:
weighted delay (Eq. 18-20 objective), mean service delay, deadline-miss ratio
and user energy, as means with 95% confidence intervals over scenarios.
No inference delay is included here: it is the allocation quality alone.

    python launch/compare_allocators.py --batch=1024 --seed=0 --n_users=30
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dynmec_jax import accounting, baselines, system
from dynmec_jax import cli as common

_BATCH = flags.DEFINE_integer("batch", 1024, "number of scenarios", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed")
_N_USERS = flags.DEFINE_integer("n_users", 30, "users (tasks) per scenario", lower_bound=1)
_OFFLOAD = flags.DEFINE_float(
    "offload_fraction", 1.0, "probability that a task is offloaded (1.0: all, Section V.A)",
    lower_bound=0.0, upper_bound=1.0)


def mean_ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% confidence interval."""
    x = np.asarray(x, np.float64)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else float("nan")
    return float(x.mean()), float(half)


def evaluate(scn, offload, alloc_fn, params) -> dict[str, np.ndarray]:
    """Per-scenario metrics of an allocation (no inference delay)."""
    b, f = alloc_fn(scn, offload, params)
    out = system.task_outcomes(scn, offload, b, f, params)
    served = jnp.maximum(offload.sum(-1), 1)
    return {
        "weighted_delay": system.weighted_delay(scn, offload, b, f, params),
        "delay_ms": 1e3 * out.delay.mean(-1),
        "miss_ratio": out.miss.mean(-1),
        "energy_mJ": 1e3 * jnp.where(offload, out.energy, 0.0).sum(-1) / served,
    }


def main(argv):
    del argv
    params = system.validate(dataclasses.replace(system.SystemParams(), n_users=_N_USERS.value))
    k_scn, k_off = jax.random.split(jax.random.PRNGKey(_SEED.value))
    scn = system.sample_scenarios(k_scn, params, _BATCH.value)
    offload = jax.random.uniform(k_off, scn.shape) < _OFFLOAD.value
    rows = {}
    for name, fn in [("equal", baselines.equal_allocation),
                     ("optimal", baselines.optimal_allocation)]:
        t0 = time.perf_counter()
        metrics = jax.jit(evaluate, static_argnums=2)(scn, offload, fn, params)
        metrics = jax.tree.map(np.asarray, metrics)
        rows[name] = (metrics, time.perf_counter() - t0)
    cols = ["weighted_delay", "delay_ms", "miss_ratio", "energy_mJ"]
    print(f"{_BATCH.value} scenarios, N = {params.n_users}, seed {_SEED.value}, "
          f"offload fraction {_OFFLOAD.value}; mean +- 95% CI over scenarios; "
          "no inference delay; energy per offloaded task")
    header = f"{'allocator':<10}" + "".join(f"{c:>24}" for c in cols) + f"{'wall s':>9}"
    print(header)
    print("-" * len(header))
    for name, (m, wall) in rows.items():
        cells = "".join(f"{mean_ci(m[c])[0]:>14.4g} +- {mean_ci(m[c])[1]:<7.2g}" for c in cols)
        print(f"{name:<10}{cells}{wall:>9.2f}")
    eq, opt = rows["equal"][0]["weighted_delay"], rows["optimal"][0]["weighted_delay"]
    print(f"optimal / equal weighted delay: {opt.mean() / eq.mean():.4f} "
          f"(optimal better in {100 * np.mean(opt <= eq * (1 + 1e-6)):.1f}% of scenarios)")
    ops = baselines.optimal_allocation_ops(params.n_users)
    print(f"optimal allocator: {int(ops):,} operations per scenario -> modelled inference delay "
          f"{1e3 * float(accounting.inference_delay(ops, params)):.3f} ms (Eq. 9, lambda = "
          f"{params.efficiency}, f = f_ser)")
    return 0


if __name__ == "__main__":
    common.run(main)
