"""The allocation alone (no scheduling): a trained allocator, and equal vs optimal shares.

* :func:`evaluate_allocator` (``dynmec-evaluate-allocator``): a trained
  allocator against the optimal allocation on held-out scenarios, every task
  offloaded and a random share offloaded: for every (width, depth) the gap to
  the optimal weighted delay (Fig. 4(a)) and the weighted delay with the
  sub-network's Eq. 9 inference delay (Fig. 4(b)).
* :func:`compare_allocators` (``dynmec-compare-allocators``): equal versus
  optimal (KKT) allocation on sampled scenarios: weighted delay (Eq. 18-20
  objective), mean service delay, deadline-miss ratio and user energy per
  offloaded task, means with 95% CIs over scenarios; no inference delay.

Units: SI inside; the tables print ms, % and mJ (labelled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dynmec_jax import accounting, baselines, rng, stats, system
from dynmec_jax.train import allocator as train_allocator

#: The quality goals of an allocator: largest network and every sub-network within.
GOALS = {"largest": 0.01, "worst": 0.05}


def evaluate_allocator(alloc, batch: int, seed: int, offload_fraction: float) -> dict:
    """``{mask name: {"gap", "weighted_delay_infer", "optimal_weighted_delay"}}`` and
    ``"goals_met"`` (:data:`GOALS`) of a trained allocator (module doc)."""
    sp = alloc.sys_params
    k_scn, k_off = jax.random.split(jax.random.PRNGKey(seed))
    scn = system.sample_scenarios(k_scn, sp, batch)
    masks = {"all offloaded": np.ones(scn.shape, bool),
             f"random {offload_fraction:.0%} offloaded":
                 np.asarray(rng.uniform(k_off, scn.shape) < offload_fraction)}
    out, ok = {}, True
    for name, mask in masks.items():
        e = train_allocator.evaluate_subnets(alloc, scn, mask)
        gap = np.asarray(e["gap"])
        ok &= bool(gap[-1, -1] <= GOALS["largest"] and gap.max() <= GOALS["worst"])
        out[name] = {"gap": gap.tolist(),
                     "weighted_delay_infer": np.asarray(e["wd_infer"].mean(-1)).tolist(),
                     "optimal_weighted_delay": float(e["opt"].mean())}
    out["goals_met"] = ok
    return out


def _grid(name: str, a: np.ndarray, fmt: str) -> str:
    K, L = a.shape
    lines = [name, "width \\ depth " + "".join(f"{d:>11}" for d in range(1, L + 1))]
    lines += [f"{k:>13} " + "".join(f"{a[k - 1, d]:>11{fmt}}" for d in range(L))
              for k in range(1, K + 1)]
    return "\n".join(lines)


def allocator_report(result: dict, batch: int) -> str:
    """:func:`evaluate_allocator`'s tables as text."""
    lines = []
    for name, r in result.items():
        if name == "goals_met":
            continue
        gap, wd_inf = np.asarray(r["gap"]), np.asarray(r["weighted_delay_infer"])
        best = np.unravel_index(np.argmin(wd_inf), wd_inf.shape)
        lines += [f"\n== {name}: {batch} scenarios, optimal weighted delay "
                  f"{r['optimal_weighted_delay']:.2f} ==",
                  _grid("gap to the optimal weighted delay [%], no inference delay (Fig. 4(a))",
                        100 * gap, ".3f"),
                  _grid("weighted delay with inference delay (Fig. 4(b))", wd_inf, ".2f"),
                  f"best with inference delay: width {best[0] + 1}, depth {best[1] + 1}; "
                  f"largest network gap {100 * gap[-1, -1]:.3f}%, worst sub-network "
                  f"{100 * gap.max():.3f}%"]
    lines.append(f"\nquality goals (largest <= {100 * GOALS['largest']:g}%, every sub-network "
                 f"<= {100 * GOALS['worst']:g}%): {'met' if result['goals_met'] else 'NOT met'}")
    return "\n".join(lines)


def _metrics(scn, offload, alloc_fn, sp) -> dict:
    b, f = alloc_fn(scn, offload, sp)
    out = system.task_outcomes(scn, offload, b, f, sp)
    served = jnp.maximum(offload.sum(-1), 1)
    return {"weighted_delay": system.weighted_delay(scn, offload, b, f, sp),
            "delay_ms": 1e3 * out.delay.mean(-1), "miss_ratio": out.miss.mean(-1),
            "energy_mJ": 1e3 * jnp.where(offload, out.energy, 0.0).sum(-1) / served}


def compare_allocators(batch: int, seed: int, n_users: int, offload_fraction: float) -> str:
    """Equal versus optimal allocation (module doc), as a text table."""
    sp = system.validate(system.SystemParams(n_users=n_users))
    k_scn, k_off = jax.random.split(jax.random.PRNGKey(seed))
    scn = system.sample_scenarios(k_scn, sp, batch)
    offload = rng.uniform(k_off, scn.shape) < offload_fraction
    rows = {name: jax.tree.map(np.asarray, jax.jit(_metrics, static_argnums=2)(
        scn, offload, fn, sp))
            for name, fn in (("equal", baselines.equal_allocation),
                             ("optimal", baselines.optimal_allocation))}
    cols = ["weighted_delay", "delay_ms", "miss_ratio", "energy_mJ"]
    lines = [f"{batch} scenarios, N = {n_users}, seed {seed}, offload fraction "
             f"{offload_fraction}; mean +- 95% CI over scenarios; no inference delay; energy "
             "per offloaded task",
             f"{'allocator':<10}" + "".join(f"{c:>24}" for c in cols)]
    for name, m in rows.items():
        cells = [stats.mean_ci(m[c]) for c in cols]
        lines.append(f"{name:<10}" + "".join(f"{c['mean']:>14.4g} +- {c['ci']:<7.2g}"
                                             for c in cells))
    eq, opt = rows["equal"]["weighted_delay"], rows["optimal"]["weighted_delay"]
    ops = baselines.optimal_allocation_ops(n_users)
    lines += [f"optimal / equal weighted delay: {opt.mean() / eq.mean():.4f} (optimal better "
              f"in {100 * np.mean(opt <= eq * (1 + 1e-6)):.1f}% of scenarios)",
              f"optimal allocator: {int(ops):,} operations per scenario -> modelled inference "
              f"delay {1e3 * float(accounting.inference_delay(ops, sp)):.3f} ms (Eq. 9, "
              f"lambda = {sp.efficiency}, f = f_ser)"]
    return "\n".join(lines)
