r"""Section V.B quality check: PMRL against every joint baseline, and the exhaustive optimum.

    python launch/evaluate_joint.py [--config=dynmec_jax/configs/joint.py:default] \
        [--pipeline=DIR] [--json=FILE] [--skip_exhaustive]

1. Trains ``config.n_seeds`` seeds of PMRL (variant "full") and of RL (variant
   "fixed" = the largest allocator, no policy) with Algorithm 1, all seeds at
   once (``jit(vmap(train))``), on the config's allocator.
2. On held-out scenarios of the config's system (``eval.seed``, users with
   computing power) evaluates PMRL, RL, Fix MoE (PMRL's scheduler with the
   largest fixed sub-network), Rand, Local execution, Greedy + KKT (all
   ``eval.batch`` scenarios) and GA (joint, ``eval.ga_iters`` iterations, on the
   first ``eval.ga_batch`` scenarios), and the shipped pipeline (``--pipeline``,
   default ``dynmec_jax/pretrained/pipeline``; ``--pipeline=`` skips it).
   Prints mean service delay [ms], deadline-miss ratio [%] and user energy
   [J per scenario] with 95% CIs over seeds (Student t; Local execution is
   deterministic).
3. At N = ``eval.small_n`` trains PMRL again (same config, N changed: the
   scheduler's input fixes N) and reports its gap in sum_i C_i (Eq. 24-25) to
   the exhaustive optimum over all 2^N offloading subsets with the exact
   optimal allocation (``baselines/exhaustive.py``, energy-aware), (a) without
   inference delay on either side and (b) with PMRL's own inference delay
   against the optimum given the smallest inference delay any sub-network of
   the allocator could have (width 1, depth 1, plus M_Sced and M_Poli).
   Also printed: the optimal allocation's cost with every task offloaded,
   which splits the gap into scheduling and allocation parts.

Exit code 1 if PMRL (every trained-seed mean, and the shipped pipeline) does
not have a lower mean delay AND a lower miss ratio than Local execution, Rand,
RL and Fix MoE.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags
from scipy import stats

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli as common
from dynmec_jax import costs, evaluation, files, pipeline, system
from dynmec_jax.baselines import exhaustive, greedy
from dynmec_jax.train import config as train_config
from dynmec_jax.train import joint as train_joint

_CONFIG = config_flags.DEFINE_config_file(
    "config", "dynmec_jax/configs/joint.py:default", "joint training config")
_PIPELINE = flags.DEFINE_string("pipeline", str(pipeline.PRETRAINED_DIR),
                                "shipped pipeline to evaluate too ('' skips it)")
_JSON = flags.DEFINE_string("json", None, "also write the numbers to this JSON file")
_SKIP_EXH = flags.DEFINE_bool("skip_exhaustive", False, "skip the exhaustive-optimum gap")

METRICS = ("delay", "miss_ratio", "energy", "cost", "offload_fraction", "width", "depth",
           "inference_share")
MUST_BEAT = ("Local execution", "Rand", "RL", "Fix MoE")


def ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval over seeds (0 for one value)."""
    v = np.asarray(values, np.float64)
    if v.size < 2 or np.allclose(v, v[0]):
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1)
                                  / np.sqrt(v.size))


def means(metrics: dict) -> dict:
    return {k: float(jnp.mean(metrics[k])) for k in METRICS}


def _vb_all(key, scn, sp, pmrl, rl):
    return evaluation.section_vb(key, scn, sp, pmrl, rl, ga_iters=None)


_vb_jit = jax.jit(_vb_all)


def _pmrl_cost(pipe, scn, sp):
    res = evaluation.pipeline_method(pipe, scn, sp)
    d = res.decision
    no_inf = res._replace(decision=d._replace(
        inference_delay_local=jnp.zeros_like(d.inference_delay_local),
        inference_delay_edge=jnp.zeros_like(d.inference_delay_edge)))
    return (evaluation.task_cost(scn, res, sp), evaluation.task_cost(scn, no_inf, sp),
            evaluation.scenario_metrics(scn, res, sp))


def exhaustive_gap(cfg, alloc, sp, keys) -> dict:
    """PMRL's gap to the exhaustive optimum at N = ``cfg.eval.small_n`` (module doc, step 3)."""
    n = int(cfg.eval.small_n)
    sp_n = sp.replace(n_users=n)
    tc = train_config.joint_config(cfg, n_users=n)
    t0 = time.time()
    states, _ = train_joint.train_seeds(tc, alloc, sp_n, keys)
    jax.block_until_ready(states)
    wall = time.time() - t0
    scn = system.sample_scenarios(jax.random.key(int(cfg.eval.seed) + 2), sp_n,
                                  int(cfg.eval.small_batch))
    models = pipeline.build_models(tc, alloc)
    t_local = costs.inference_delays(sp_n, models.scheduler_macs, 0, 0)[0]

    def infer_edge(n_served):
        return costs.inference_delays(
            sp_n, models.scheduler_macs, models.policy_macs,
            alloc.macs(1, 1, max(n_served, 1)))[1]

    opt0 = exhaustive.exhaustive_optimum(scn, sp_n, objective="cost", allocation="energy_aware")
    opt1 = exhaustive.exhaustive_optimum(scn, sp_n, infer_local=t_local, infer_edge=infer_edge,
                                         objective="cost", allocation="energy_aware")
    local = evaluation.task_cost(scn, evaluation.local_execution(scn, sp_n), sp_n)
    # decomposition: the best allocation when every task is offloaded (no inference delay)
    ones = jnp.ones(scn.shape, bool)
    b_all, f_all = exhaustive.energy_aware_allocation(scn, ones, sp_n)
    all_off = exhaustive.subset_value(scn, ones, b_all, f_all, sp_n)
    greedy_cost = float(greedy.greedy_offloading(scn, sp_n).cost.mean())
    out = {"n_users": n, "scenarios": int(cfg.eval.small_batch), "train_wall_time_s": wall,
           "greedy_cost_no_infer": greedy_cost,
           "greedy_gap_no_infer": greedy_cost / float(opt0.value.mean()) - 1,
           "opt_cost_no_infer": float(opt0.value.mean()),
           "opt_cost_infer": float(opt1.value.mean()),
           "opt_offload_fraction": float(opt1.offload.mean()),
           "local_cost": float(local.mean()),
           "opt_all_offloaded_cost_no_infer": float(all_off.mean()), "seeds": []}
    pmrl_cost = jax.jit(_pmrl_cost)
    for i in range(keys.shape[0]):
        pipe = pipeline.make_pipeline(tc, alloc, train_joint.unstack(states, i))
        c_inf, c0, m = pmrl_cost(pipe, scn, sp_n)
        out["seeds"].append({
            "cost_infer": float(c_inf.mean()), "cost_no_infer": float(c0.mean()),
            "gap_infer": float(c_inf.mean() / opt1.value.mean() - 1),
            "gap_no_infer": float(c0.mean() / opt0.value.mean() - 1),
            "never_below_optimum": bool(jnp.all(c0 >= opt0.value * (1 - 1e-4))),
            "offload_fraction": float(m["offload_fraction"].mean()),
            "delay": float(m["delay"].mean()), "miss_ratio": float(m["miss_ratio"].mean())})
    return out


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    cfg = _CONFIG.value
    common.guard(train_config.joint_config, cfg)
    try:
        alloc = allocator_lib.load_allocator(cfg.get("allocator", "") or None)
        shipped = pipeline.load_pipeline(_PIPELINE.value) if _PIPELINE.value else None
    except (FileNotFoundError, ValueError) as e:
        common.fail(str(e))
    sp = common.guard(system.params_from_overrides, cfg.system.to_dict(), alloc.sys_params)
    if shipped is not None and shipped.n_users not in (None, sp.n_users):
        common.fail(f"pipeline {_PIPELINE.value} was trained for N = {shipped.n_users}, "
                    f"the config has N = {sp.n_users}")
    n_seeds = int(cfg.n_seeds)
    keys = files.seed_keys(int(cfg.seed), n_seeds)
    walls = {}
    states = {}
    for name, variant in (("PMRL", "full"), ("RL", "fixed")):
        t0 = time.time()
        tc = train_config.joint_config(cfg, variant=variant)
        states[name], _ = train_joint.train_seeds(tc, alloc, sp, keys)
        jax.block_until_ready(states[name])
        walls[name] = time.time() - t0
        print(f"trained {name}: {n_seeds} seeds in {walls[name]:.1f} s", flush=True)

    scn = system.sample_scenarios(jax.random.key(int(cfg.eval.seed)), sp, int(cfg.eval.batch))
    ga_scn = jax.tree.map(lambda a: a[:int(cfg.eval.ga_batch)], scn)
    eval_key = jax.random.key(int(cfg.eval.seed) + 3)
    per_seed: dict[str, list] = {}
    for i in range(n_seeds):
        pmrl = pipeline.make_pipeline(train_config.joint_config(cfg), alloc,
                                      train_joint.unstack(states["PMRL"], i))
        rl = pipeline.make_pipeline(train_config.joint_config(cfg, variant="fixed"), alloc,
                                    train_joint.unstack(states["RL"], i))
        res = _vb_jit(jax.random.fold_in(eval_key, i), scn, sp, pmrl, rl)
        for k, v in res.items():
            per_seed.setdefault(k, []).append(means(v))
        if int(cfg.eval.ga_iters) > 0:
            t0 = time.time()
            ga = evaluation.genetic(jax.random.fold_in(eval_key, 100 + i), ga_scn, sp, joint=True,
                                    n_iters=int(cfg.eval.ga_iters))
            jax.block_until_ready(ga)
            walls.setdefault("GA_per_seed", time.time() - t0)
            per_seed.setdefault("GA", []).append(
                means(evaluation.scenario_metrics(ga_scn, ga, sp)))
    if shipped is not None:
        res = _vb_jit(eval_key, scn, sp, shipped, None)
        per_seed["PMRL (shipped)"] = [means(res["PMRL"])]

    table = {name: {k: ci95([r[k] for r in rows]) for k in METRICS}
             for name, rows in per_seed.items()}
    record = {"table": table, "per_seed": per_seed, "train_wall_time_s": walls,
              "config": json.loads(cfg.to_json())}
    print(f"\n== Section V.B, N = {sp.n_users}, {int(cfg.eval.batch)} held-out scenarios "
          f"(GA: first {int(cfg.eval.ga_batch)}, {int(cfg.eval.ga_iters)} iterations), "
          f"mean +- 95% CI over {n_seeds} seeds ==")
    print(f"{'method':<16}{'delay [ms]':>20}{'miss ratio [%]':>20}{'energy [J]':>22}"
          f"{'sum C_i':>20}{'offload':>9}{'width':>7}{'depth':>7}")
    for name, t in table.items():
        d, m, e, c = t["delay"], t["miss_ratio"], t["energy"], t["cost"]
        print(f"{name:<16}{1e3 * d[0]:>11.3f} +- {1e3 * d[1]:<5.3f}{100 * m[0]:>11.2f} +- "
              f"{100 * m[1]:<5.2f}{e[0]:>12.3f} +- {e[1]:<6.3f}{c[0]:>11.2f} +- {c[1]:<6.2f}"
              f"{t['offload_fraction'][0]:>9.3f}{t['width'][0]:>7.2f}{t['depth'][0]:>7.2f}")
    ratio = ci95([p["cost"] / g["cost"] for p, g in zip(per_seed["PMRL"], per_seed["Greedy"],
                                                        strict=True)])
    record["pmrl_over_greedy_cost"] = ratio
    print(f"\nPMRL / Greedy + KKT cost sum_i C_i: {ratio[0]:.4f} +- {ratio[1]:.4f} (PMRL with its "
          "own inference delay and learned allocator; the greedy with the exact allocation and "
          "no inference delay)")

    ok = True
    for who in ("PMRL", "PMRL (shipped)"):
        if who not in table:
            continue
        for other in MUST_BEAT:
            if other not in table:
                continue
            for k in ("delay", "miss_ratio"):
                if not table[who][k][0] < table[other][k][0]:
                    ok = False
                    print(f"NOT MET: {who} {k} {table[who][k][0]:.6g} >= {other} "
                          f"{table[other][k][0]:.6g}")
    print("\nclaim (PMRL lower mean delay and miss ratio than "
          f"{', '.join(MUST_BEAT)}): {'met' if ok else 'NOT met'}")

    record["claim_met"] = ok
    if not _SKIP_EXH.value:
        gap = exhaustive_gap(cfg, alloc, sp, keys)
        record["exhaustive"] = gap
        g0 = ci95([s["gap_no_infer"] for s in gap["seeds"]])
        g1 = ci95([s["gap_infer"] for s in gap["seeds"]])
        print(f"\n== PMRL vs the exhaustive optimum, N = {gap['n_users']}, {gap['scenarios']} "
              f"scenarios (sum_i C_i, Eq. 24-25) ==")
        print(f"optimum: cost {gap['opt_cost_no_infer']:.3f} (no inference delay), "
              f"{gap['opt_cost_infer']:.3f} (smallest inference delay); Local execution "
              f"{gap['local_cost']:.3f}; optimum offloads {gap['opt_offload_fraction']:.3f}; "
              "optimal allocation with every task offloaded "
              f"{gap['opt_all_offloaded_cost_no_infer']:.3f}; greedy + KKT "
              f"{gap['greedy_cost_no_infer']:.3f} ({100 * gap['greedy_gap_no_infer']:.2f}% above)")
        print(f"PMRL gap without inference delay: {100 * g0[0]:.2f}% +- {100 * g0[1]:.2f}%; "
              f"with inference delay: {100 * g1[0]:.2f}% +- {100 * g1[1]:.2f}%; never below the "
              f"optimum: {all(s['never_below_optimum'] for s in gap['seeds'])}")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(record, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    common.run(main)
