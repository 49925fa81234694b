"""Section V.B quality check: PMRL against every joint baseline, and against the optimum.

:func:`evaluate` (``dynmec-evaluate-joint``):

1. Trains ``config.n_seeds`` seeds of PMRL (variant "full") and of RL (variant
   "fixed" = the largest allocator, no policy) with Algorithm 1, all seeds at
   once (``jit(vmap(train))``), on the config's allocator.
2. On held-out scenarios of the config's system (``eval.seed``, users with
   computing power) evaluates the Section V.B methods of the registry
   (:mod:`dynmec_jax.methods`: PMRL, RL, Fix MoE, Rand, Local execution,
   Greedy + KKT on all ``eval.batch`` scenarios; the joint GA on the first
   ``eval.ga_batch``) and a shipped pipeline if given.  Means with 95%
   Student-t CIs over seeds (:func:`dynmec_jax.stats.mean_ci`).
3. At N = ``eval.small_n`` trains PMRL again and reports its gap in sum_i C_i
   (Eq. 24-25) to the exhaustive optimum over all 2^N offloading subsets with
   the exact allocation (``baselines/exhaustive.py``, energy-aware), (a)
   without inference delay on either side and (b) with PMRL's own inference
   delay against the optimum given the smallest inference delay any
   sub-network could have (width 1, depth 1, plus M_Sced and M_Poli).

:func:`report` prints the tables.  Units: SI; costs as in Eq. 24-25.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from dynmec_jax import costs, evaluation, files, methods, pipeline, stats, system
from dynmec_jax.baselines import exhaustive, greedy
from dynmec_jax.train import joint as train_joint
from dynmec_jax.train import joint_run
from dynmec_jax.train.config import JointConfig

#: The metrics the report shows (of :class:`dynmec_jax.evaluation.Metrics`).
SHOWN = ("delay", "miss_ratio", "energy", "cost", "offload_fraction", "width", "depth",
         "inference_share")
#: The methods trained here, scored on every held-out scenario.
TRAINED = (methods.PMRL, methods.RL, methods.FIX_MOE_VB, methods.RAND, methods.LOCAL,
           methods.GREEDY)
#: Section V.B's claim: PMRL has a lower mean delay and miss ratio than these.
MUST_BEAT = (methods.LOCAL.name, methods.RAND.name, methods.RL.name, methods.FIX_MOE_VB.name)


def _means(per_method: dict) -> dict:
    return {name: {k: float(np.mean(getattr(m, k))) for k in SHOWN}
            for name, m in per_method.items()}


def _evaluate(chosen, inputs, scn, sp):
    return methods.evaluate(chosen, inputs, scn, sp)


_evaluate_jit = jax.jit(_evaluate, static_argnums=0)


def evaluate(config: JointConfig, shipped: pipeline.Pipeline | None = None,
             with_optimum: bool = True, progress=print) -> dict:
    """Steps 1-3 of the module doc; returns the record (``table``: ``{method: {metric:
    (mean, ci)}}``, ``per_seed``, ``pmrl_over_greedy_cost``, ``claim_met``, ``optimum``)."""
    alloc = joint_run.load_allocator(config)
    sp = config.system
    keys = files.seed_keys(config.seed, config.n_seeds)
    walls, states, tcs = {}, {}, {}
    for name, variant in (("PMRL", "full"), ("RL", "fixed")):
        tcs[name] = dataclasses.replace(config.train, variant=variant)
        t0 = time.time()
        states[name], _ = train_joint.train_seeds(tcs[name], alloc, sp, keys)
        jax.block_until_ready(states[name])
        walls[name] = time.time() - t0
        progress(f"trained {name}: {config.n_seeds} seeds in {walls[name]:.1f} s")

    e = config.eval
    scn = system.sample_scenarios(jax.random.key(e.seed), sp, e.batch)
    ga_scn = jax.tree.map(lambda a: a[:e.ga_batch], scn)
    eval_key = jax.random.key(e.seed + 3)
    per_seed: dict[str, list] = {}
    for i in range(config.n_seeds):
        k = jax.random.fold_in(eval_key, i)
        inputs = methods.Inputs(
            allocator=alloc, keys={"rand": jax.random.split(k)[0],
                                   "ga_vb": jax.random.fold_in(eval_key, 100 + i)},
            pmrl=pipeline.make_pipeline(tcs["PMRL"], alloc, train_joint.unstack(states["PMRL"], i)),
            rl=pipeline.make_pipeline(tcs["RL"], alloc, train_joint.unstack(states["RL"], i)),
            ga_iters=e.ga_iters)
        res = _means(_evaluate_jit(TRAINED, inputs, scn, sp))
        if e.ga_iters > 0:
            res.update(_means(methods.evaluate((methods.GA_VB,), inputs, ga_scn, sp)))
        for name, v in res.items():
            per_seed.setdefault(name, []).append(v)
    if shipped is not None:
        inputs = methods.Inputs(allocator=shipped.allocator, pmrl=shipped)
        per_seed["PMRL (shipped)"] = [
            _means(_evaluate_jit((methods.PMRL,), inputs, scn, sp))[methods.PMRL.name]]

    table = {name: {k: _ci([r[k] for r in rows]) for k in SHOWN}
             for name, rows in per_seed.items()}
    ratio = _ci([p["cost"] / g["cost"] for p, g in zip(per_seed["PMRL"], per_seed["Greedy"],
                                                         strict=True)])
    record = {"n_users": sp.n_users, "scenarios": e.batch, "table": table,
              "per_seed": per_seed, "train_wall_time_s": walls,
              "pmrl_over_greedy_cost": ratio, "config": files.to_jsonable(config)}
    record["claim_failures"] = [
        f"{who} {k} {table[who][k][0]:.6g} >= {other} {table[other][k][0]:.6g}"
        for who in ("PMRL", "PMRL (shipped)") if who in table
        for other in MUST_BEAT for k in ("delay", "miss_ratio")
        if not table[who][k][0] < table[other][k][0]]
    record["claim_met"] = not record["claim_failures"]
    if with_optimum:
        record["optimum"] = exhaustive_gap(config, alloc, keys)
    return record


def _ci(values) -> tuple[float, float]:
    c = stats.mean_ci(values)
    return c["mean"], c["ci"]


def _pmrl_cost(pipe, scn, sp):
    res = evaluation.pipeline_method(pipe, scn, sp)
    return (evaluation.task_cost(scn, res, sp),
            evaluation.task_cost(scn, evaluation.without_inference(res), sp),
            evaluation.scenario_metrics(scn, res, sp))


def exhaustive_gap(config: JointConfig, alloc, keys) -> dict:
    """PMRL's gap to the exhaustive optimum at N = ``eval.small_n`` (module doc, step 3)."""
    n = config.eval.small_n
    sp_n = config.system.replace(n_users=n)
    tc = dataclasses.replace(config.train, n_users=n)
    t0 = time.time()
    states, _ = train_joint.train_seeds(tc, alloc, sp_n, keys)
    jax.block_until_ready(states)
    wall = time.time() - t0
    scn = system.sample_scenarios(jax.random.key(config.eval.seed + 2), sp_n,
                                  config.eval.small_batch)
    models = pipeline.build_models(tc, alloc)
    t_local = costs.inference_delays(sp_n, models.scheduler_macs, 0, 0)[0]

    def infer_edge(n_served):
        return costs.inference_delays(sp_n, models.scheduler_macs, models.policy_macs,
                                      alloc.macs(1, 1, max(n_served, 1)))[1]

    opt0 = exhaustive.exhaustive_optimum(scn, sp_n, objective="cost", allocation="energy_aware")
    opt1 = exhaustive.exhaustive_optimum(scn, sp_n, infer_local=t_local, infer_edge=infer_edge,
                                         objective="cost", allocation="energy_aware")
    local = evaluation.task_cost(scn, evaluation.local_execution(scn, sp_n), sp_n)
    greedy_cost = float(greedy.greedy_offloading(scn, sp_n).cost.mean())
    out = {"n_users": n, "scenarios": config.eval.small_batch, "train_wall_time_s": wall,
           "greedy_cost_no_infer": greedy_cost,
           "greedy_gap_no_infer": greedy_cost / float(opt0.value.mean()) - 1,
           "opt_cost_no_infer": float(opt0.value.mean()),
           "opt_cost_infer": float(opt1.value.mean()),
           "opt_offload_fraction": float(opt1.offload.mean()),
           "local_cost": float(local.mean()), "seeds": []}
    pmrl_cost = jax.jit(_pmrl_cost)
    for i in range(keys.shape[0]):
        pipe = pipeline.make_pipeline(tc, alloc, train_joint.unstack(states, i))
        c_inf, c0, m = pmrl_cost(pipe, scn, sp_n)
        out["seeds"].append({
            "cost_infer": float(c_inf.mean()), "cost_no_infer": float(c0.mean()),
            "gap_infer": float(c_inf.mean() / opt1.value.mean() - 1),
            "gap_no_infer": float(c0.mean() / opt0.value.mean() - 1),
            "never_below_optimum": bool(np.all(np.asarray(c0) >= np.asarray(opt0.value)
                                               * (1 - 1e-4))),
            "offload_fraction": float(m.offload_fraction.mean())})
    return out


def report(record: dict) -> str:
    """The record as the text tables ``dynmec-evaluate-joint`` prints."""
    t = record["table"]
    lines = [f"== Section V.B, N = {record['n_users']}, {record['scenarios']} held-out scenarios,"
             " mean +- 95% CI over seeds ==",
             f"{'method':<16}{'delay [ms]':>20}{'miss ratio [%]':>20}{'energy [J]':>22}"
             f"{'sum C_i':>20}{'offload':>9}{'width':>7}{'depth':>7}"]
    for name, r in t.items():
        d, m, e, c = r["delay"], r["miss_ratio"], r["energy"], r["cost"]
        lines.append(f"{name:<16}{1e3 * d[0]:>11.3f} +- {1e3 * d[1]:<5.3f}{100 * m[0]:>11.2f} "
                     f"+- {100 * m[1]:<5.2f}{e[0]:>12.3f} +- {e[1]:<6.3f}{c[0]:>11.2f} +- "
                     f"{c[1]:<6.2f}{r['offload_fraction'][0]:>9.3f}{r['width'][0]:>7.2f}"
                     f"{r['depth'][0]:>7.2f}")
    ratio = record["pmrl_over_greedy_cost"]
    lines.append(f"\nPMRL / Greedy + KKT cost sum_i C_i: {ratio[0]:.4f} +- {ratio[1]:.4f} (each "
                 "with its own inference delay, Eq. 9)")
    lines += [f"NOT MET: {f}" for f in record["claim_failures"]]
    lines.append("claim (PMRL lower mean delay and miss ratio than "
                 f"{', '.join(MUST_BEAT)}): {'met' if record['claim_met'] else 'NOT met'}")
    gap = record.get("optimum")
    if gap:
        g0 = _ci([s["gap_no_infer"] for s in gap["seeds"]])
        g1 = _ci([s["gap_infer"] for s in gap["seeds"]])
        lines += [
            f"\n== PMRL vs the exhaustive optimum, N = {gap['n_users']}, {gap['scenarios']} "
            "scenarios (sum_i C_i, Eq. 24-25) ==",
            f"optimum: cost {gap['opt_cost_no_infer']:.3f} (no inference delay), "
            f"{gap['opt_cost_infer']:.3f} (smallest inference delay); Local execution "
            f"{gap['local_cost']:.3f}; optimum offloads {gap['opt_offload_fraction']:.3f}; "
            f"greedy + KKT {gap['greedy_cost_no_infer']:.3f} "
            f"({100 * gap['greedy_gap_no_infer']:.2f}% above)",
            f"PMRL gap without inference delay: {100 * g0[0]:.2f}% +- {100 * g0[1]:.2f}%; "
            f"with inference delay: {100 * g1[0]:.2f}% +- {100 * g1[1]:.2f}%; never below the "
            f"optimum: {all(s['never_below_optimum'] for s in gap['seeds'])}"]
    return "\n".join(lines)
