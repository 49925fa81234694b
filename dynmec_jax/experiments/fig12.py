"""Fig. 12: the training cost of progressive shrinking against training each sub-network apart.

:func:`training_cost` counts the optimiser steps (and the wall time of the
jitted training chunks) until every sub-network of a case (width and depth
dynamic, width only, depth only) is within a target gap of the optimal
weighted delay, for progressive shrinking (Section IV.B) and for
"traditional" training from scratch, one sub-network after another.
Units: steps (each one batch and both updates of Fig. 2(b)), seconds.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import baselines, files, stats, system
from dynmec_jax.store import ResultStore
from dynmec_jax.system import SystemParams
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config
from dynmec_jax.train import loop
from dynmec_jax.train.config import AllocatorConfig

#: The two ways of training of Fig. 12, in the store's order (point ``method`` index).
METHODS = ("progressive", "traditional")


@functools.lru_cache(maxsize=4)
def _cost_functions(config: AllocatorConfig, sys_params: SystemParams, eval_batch: int,
                    eval_seed: int):
    """Setup and the jitted chunk and gap functions of :func:`training_cost`, built once
    per (config, system) so that the runs of Fig. 12 compile once per stratum
    (:func:`~dynmec_jax.train.allocator.table_strata`: the chunk computes only the
    layers its sub-networks use, so a depth-1 sub-network trains faster, and, with
    ``train.capacity_factor``, only the experts their gates pick)."""
    s = train_allocator.setup(config, sys_params)
    scn = system.sample_scenarios(jax.random.key(eval_seed), s.sys_params, eval_batch)
    mask = jnp.ones(scn.shape, bool)
    opt = system.weighted_delay(scn, mask, *baselines.optimal_allocation(scn, mask, s.sys_params),
                                s.sys_params).mean()

    @jax.jit
    def gaps(params):
        alloc = allocator_lib.Allocator(params, s.scales, s.sys_params, s.model)
        b, f = allocator_lib.allocate_all(alloc, scn, mask, s.sys_params)
        return system.weighted_delay(scn, mask, b, f, s.sys_params).mean(-1) / opt - 1.0

    chunk_fn = jax.jit(lambda st, k, allowed, strata: train_allocator.train_chunk(
        s.step_fn, st, k, s.sys_params, s.scales, allowed, strata), static_argnums=3)
    return s, gaps, chunk_fn, set()   # the set: depth strata already compiled


def training_cost(config: AllocatorConfig, sys_params: SystemParams, case: str, method: str,
                  seed: int, target: float = 0.02, eval_every: int = 25, max_steps: int = 4000,
                  eval_batch: int = 512, eval_seed: int = 12345) -> dict:
    """Optimiser steps and wall time to bring every sub-network of ``case``
    within ``target`` of the optimal weighted delay (Fig. 12).

    Args:
      config: the allocator and its training (shapes, batch, lr).
      sys_params: the system the scenarios are drawn from.
      case: "full" (width and depth dynamic), "width" or "depth" (only one).
      method: "progressive" (Section IV.B: the largest network first, then
        the phases of :func:`progressive_phases`, each run until its
        sub-networks reach the target; weights are inherited) or
        "traditional" (each sub-network trained from scratch, one after
        another, until it reaches the target).
      seed: PRNG seed (initialisation and training batches).
      target: relative excess weighted delay (gap) every sub-network must
        reach, measured on ``eval_batch`` held-out scenarios, all offloaded.
      eval_every: steps between quality checks (the step counts are
        multiples of it).
      max_steps: cap per phase (progressive) or per sub-network (traditional);
        a run that hits it is marked ``reached=False``.
      eval_seed: PRNG seed of the held-out scenarios.
    Returns a dict with ``steps`` (optimiser steps in total; each step is one
    batch of ``config.batch`` scenarios and both updates of Fig. 2(b)),
    ``wall_time_s`` (training only, jitted chunks, evaluation excluded),
    ``reached``, the final gaps and a per-stage breakdown.
    """
    if method not in ("progressive", "traditional"):
        raise ValueError(f"method must be 'progressive' or 'traditional', got {method!r}")
    s, gaps, chunk_fn, compiled = _cost_functions(config, sys_params, eval_batch, eval_seed)
    K, L = config.model.max_width, config.model.n_layers
    members = train_config.subnet_set(case, K, L)
    key = jax.random.key(seed)

    def run_stage(state, allowed, check):
        """Trains on ``allowed`` until every sub-network in ``check`` meets the target."""
        table = jnp.asarray(np.broadcast_to(allowed, (eval_every, K, L)))
        strata = train_allocator.table_strata(allowed[None],
                                              widths=bool(config.train.capacity_factor))
        if strata not in compiled:   # compile outside the timed region
            jax.block_until_ready(chunk_fn(warm, key, table, strata))
            compiled.add(strata)
        steps, wall = 0, 0.0
        while True:
            t0 = time.perf_counter()
            state, _ = chunk_fn(state, key, table, strata)
            jax.block_until_ready(state)
            wall += time.perf_counter() - t0
            steps += eval_every
            g = np.asarray(gaps(state.params))
            # a diverged run is an error (exit 1), not a measurement that never reaches
            loop.check_finite(int(state.step), {"gap to the optimum": g[check]}, state.params)
            if g[check].max() <= target or steps >= max_steps:
                return state, steps, wall, g, bool(g[check].max() <= target)

    warm = train_allocator.init_state(jax.random.key(0), s.model, s.tx)
    stages = []
    if method == "progressive":
        state = train_allocator.init_state(jax.random.fold_in(key, 1), s.model, s.tx)
        for name, allowed in train_config.progressive_phases(case, K, L):
            state, n, wall, g, ok = run_stage(state, allowed, allowed)
            stages.append({"stage": name, "steps": n, "wall_time_s": wall, "reached": ok})
        final = g
    else:
        final = np.full((K, L), np.nan)
        for k, d in zip(*np.nonzero(members), strict=True):
            one = np.zeros((K, L), bool)
            one[k, d] = True
            k_init = jax.random.fold_in(key, 1 + k * L + d)
            state = train_allocator.init_state(k_init, s.model, s.tx)
            state, n, wall, g, ok = run_stage(state, one, one)
            final[k, d] = g[k, d]
            stages.append({"stage": f"width={k + 1},depth={d + 1}", "steps": n,
                           "wall_time_s": wall, "reached": ok})
    return {
        "case": case, "method": method, "seed": seed, "target": target,
        "steps": int(sum(st["steps"] for st in stages)),
        "wall_time_s": float(sum(st["wall_time_s"] for st in stages)),
        "reached": all(st["reached"] for st in stages) and bool(final[members].max() <= target),
        "final_max_gap": loop.worst_over_seeds(final[members]),
        "stages": stages,
    }


def run(config: AllocatorConfig, f, store: ResultStore, progress: bool = True) -> list[dict]:
    """Training cost (Fig. 12) per (case, method, seed) of ``f`` (a
    :class:`~dynmec_jax.experiments.config.Fig12Config`) for the allocator ``config``.

    Each run is one record of ``store`` (figure ``"fig12"``, point ``{"case":
    case index, "method": method index}``): finished runs are read back, the
    others computed (:func:`training_cost`) and stored as they end, so an
    interrupted measurement resumes.  Returns the records in (case, method,
    seed) order.
    """
    conf = {"allocator": files.to_jsonable(config), "fig12": files.to_jsonable(f)}
    items = [(ci, mi, s) for ci in range(len(f.cases)) for mi in range(len(METHODS))
             for s in f.seeds]
    records = []
    for ci, mi, s in tqdm(items, desc="Fig. 12 training cost", unit="run", disable=not progress):
        point = {"case": ci, "method": mi}
        rec = store.try_read("fig12", point, s)
        if rec is None or rec.get("config") != files.to_jsonable(conf):
            t0 = time.perf_counter()
            r = training_cost(config, config.system, f.cases[ci], METHODS[mi], s,
                              target=f.target, eval_every=f.eval_every, max_steps=f.max_steps,
                              eval_batch=f.eval_batch, eval_seed=config.eval.seed)
            rec = store.write("fig12", point, s,
                              {"steps": r["steps"], "wall_time_s": r["wall_time_s"],
                               "reached": float(r["reached"]),
                               "final_max_gap": r["final_max_gap"]},
                              config=conf, wall_time_s=time.perf_counter() - t0,
                              extra={"stages": r["stages"]})
            logging.info("Fig. 12 %s %s seed %d: %d steps, %.1f s", f.cases[ci], METHODS[mi],
                         s, r["steps"], r["wall_time_s"])
        records.append(rec)
    return records


def data(f, records: list[dict]) -> dict:
    """Fig. 12's numbers: steps and wall time per case and method, mean and 95% CI over
    seeds (:func:`dynmec_jax.stats.mean_ci`), and whether every run reached the target."""
    out = {"cases": list(f.cases), "target": f.target, "seeds": list(f.seeds)}
    for mi, method in enumerate(METHODS):
        d = {}
        for field, name in (("steps", "steps"), ("wall_time_s", "seconds")):
            cells = [stats.mean_ci([r["result"][field] for r in records
                                    if r["point"] == {"case": ci, "method": mi}])
                     for ci in range(len(f.cases))]
            d[name] = {"mean": [c["mean"] for c in cells], "ci": [c["ci"] for c in cells]}
        d["reached"] = [all(r["result"]["reached"] for r in records
                            if r["point"] == {"case": ci, "method": mi})
                        for ci in range(len(f.cases))]
        out[method] = d
    return out
