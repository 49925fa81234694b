"""Section V.B quality check: PMRL against every joint baseline, and against the optimum.

:func:`evaluate` (``dynmec-evaluate-joint``):

1. Trains ``config.n_seeds`` seeds of PMRL (variant "full") and of RL (variant
   "fixed" = the largest allocator, no policy) with Algorithm 1, all seeds at
   once (``jit(vmap(train))``), on the config's allocator, and as many of DROO
   (``baselines/droo_train.py``) on as many scenarios (episodes x batch).
2. On held-out scenarios of the config's system (``eval.seed``, users with
   computing power) evaluates the Section V.B methods of the registry
   (:mod:`dynmec_jax.methods`: PMRL, RL, Fix MoE, Rand, Local execution,
   Greedy + KKT, DROO on all ``eval.batch`` scenarios; the joint GA on the first
   ``eval.ga_batch``) and a shipped pipeline if given, each with its own
   inference delay (Eq. 9).  Means with 95% Student-t CIs over seeds
   (:func:`dynmec_jax.stats.mean_ci`).
3. Solves the certified optimum (``baselines/exact.py``: a bound, no inference
   delay) of the first ``eval.optimum_batch`` of those scenarios and reports
   every method's gap to it, and PMRL's gap split into its inference delay,
   its learned allocation and its offloading decisions (:func:`decompose`).

:func:`report` prints the tables.  Units: SI; costs as in Eq. 24-25.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from dynmec_jax import evaluation, files, methods, pipeline, stats, system
from dynmec_jax.baselines import droo, droo_train, exact
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
    droo_states = None
    if config.eval.droo:
        t0 = time.time()
        droo_states = _train_droo(config, keys)
        walls["DROO"] = time.time() - t0
        progress(f"trained DROO: {config.n_seeds} seeds in {walls['DROO']:.1f} s")

    e = config.eval
    scn = system.sample_scenarios(jax.random.key(e.seed), sp, e.batch)
    ga_scn = jax.tree.map(lambda a: a[:e.ga_batch], scn)
    eval_key = jax.random.key(e.seed + 3)
    per_seed: dict[str, list] = {}
    pipes: dict[str, list] = {"PMRL": []}
    costs_: dict[str, list] = {}      # per-scenario sum_i C_i of each method and seed
    chosen = TRAINED + ((methods.DROO,) if droo_states is not None else ())
    for i in range(config.n_seeds):
        k = jax.random.fold_in(eval_key, i)
        inputs = methods.Inputs(
            allocator=alloc, keys={"rand": jax.random.split(k)[0],
                                   "ga_vb": jax.random.fold_in(eval_key, 100 + i)},
            pmrl=pipeline.make_pipeline(tcs["PMRL"], alloc, train_joint.unstack(states["PMRL"], i)),
            rl=pipeline.make_pipeline(tcs["RL"], alloc, train_joint.unstack(states["RL"], i)),
            droo=None if droo_states is None else train_joint.unstack(droo_states, i),
            ga_iters=e.ga_iters)
        pipes["PMRL"].append(inputs.pmrl)
        per = _evaluate_jit(chosen, inputs, scn, sp)
        res = _means(per)
        if e.ga_iters > 0:
            res.update(_means(methods.evaluate((methods.GA_VB,), inputs, ga_scn, sp)))
        for name, v in res.items():
            per_seed.setdefault(name, []).append(v)
        for name, m in per.items():
            costs_.setdefault(name, []).append(np.asarray(m.cost, np.float64))
    if shipped is not None:
        inputs = methods.Inputs(allocator=shipped.allocator, pmrl=shipped)
        m = _evaluate_jit((methods.PMRL,), inputs, scn, sp)[methods.PMRL.name]
        per_seed["PMRL (shipped)"] = [_means({"x": m})["x"]]
        costs_["PMRL (shipped)"] = [np.asarray(m.cost, np.float64)]
        pipes["PMRL (shipped)"] = [shipped]

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
        record["optimum"] = optimum_gaps(config, scn, costs_, pipes, progress)
    return record


def _train_droo(config: JointConfig, keys):
    """DROO for every seed, on as many scenarios as PMRL's scheduler sees."""
    tc = config.train
    dc = droo.DrooConfig(n_max=config.system.n_users, n_scenarios=tc.episodes * tc.batch)
    states, _ = jax.jit(jax.vmap(droo_train.make_train(dc), in_axes=(0, None)))(keys, config.system)
    return jax.block_until_ready(states)


def _ci(values) -> tuple[float, float]:
    c = stats.mean_ci(values)
    return c["mean"], c["ci"]


def optimum_gaps(config: JointConfig, scn, costs_: dict, pipes: dict, progress=print) -> dict:
    """Every method's gap to the certified optimum on the first ``eval.optimum_batch``
    held-out scenarios (mean and 95% CI over seeds of ``sum C / sum C_opt - 1``; for a
    single pipeline, over the scenarios), and PMRL's gap split into its inference delay,
    its learned allocation and its offloading decisions (:func:`decompose`)."""
    sp = config.system
    n = config.eval.optimum_batch
    sub = jax.tree.map(lambda a: np.asarray(a[:n]), scn)
    t0 = time.time()
    opt = exact.exact_optimum(sub, sp)
    wall = time.time() - t0
    progress(f"certified optimum of {n} scenarios in {wall:.1f} s "
             f"({float(np.mean(opt.status == 'optimal')):.0%} optimal)")
    total = float(np.sum(opt.cost))
    gaps = {}
    for name, per in costs_.items():
        g = [float(np.sum(c[:n])) / total - 1.0 for c in per]
        gaps[name] = (_ci(g) if len(g) > 1 else
                      (stats.relative_gap(per[0][:n], opt.cost)["mean"],
                       stats.relative_gap(per[0][:n], opt.cost)["ci"]))
    out = {"n_users": sp.n_users, "scenarios": n, "solver_wall_time_s": wall,
           "max_certificate_gap": float(np.max(opt.gap)),
           "optimum_cost": total / n, "optimum_offload_fraction": float(np.mean(opt.offload)),
           "gap": gaps}
    out["decomposition"] = {name: [decompose(p, sub, opt, sp) for p in ps]
                            for name, ps in pipes.items()}
    return out


def decompose(pipe: pipeline.Pipeline, scn, opt, sp) -> dict:
    """PMRL's gap to the optimum, in parts of the optimum's cost (they add up):
    ``inference`` (its own inference delay, Eq. 34-35), ``allocation`` (its learned
    allocation against the exact one of its own offloading set) and ``decisions`` (the
    exact allocation of its set against the optimum's set and allocation); and how its
    set differs: tasks it offloads that the optimum keeps local (``extra``) and the
    reverse (``missed``), as shares of all tasks, with their mean features relative to
    all tasks' (size, workload, deadline, distance, f_local, importance weight)."""
    res = evaluation.pipeline_method(pipe, scn, sp)
    full = float(np.sum(evaluation.task_cost(scn, res, sp)))
    no_inf = float(np.sum(evaluation.task_cost(scn, evaluation.without_inference(res), sp)))
    x = np.asarray(res.decision.offload)
    own = float(np.sum(evaluation.score(scn, x, sys_params=sp).cost))
    base = float(np.sum(opt.cost))
    xo = np.asarray(opt.offload, bool)
    feats = {"size": scn.size, "workload": scn.workload, "deadline": scn.deadline,
             "distance": scn.distance, "f_local": scn.f_local,
             "importance": np.asarray(system.importance_weights(scn.size, scn.workload,
                                                                scn.deadline, sp))}

    def profile(mask):
        if not mask.any():
            return {}
        return {k: float(np.mean(np.asarray(v)[mask]) / np.mean(np.asarray(v)))
                for k, v in feats.items()}

    extra, missed = x & ~xo, ~x & xo
    return {"gap": full / base - 1, "inference": (full - no_inf) / base,
            "allocation": (no_inf - own) / base, "decisions": own / base - 1,
            "offload_fraction": float(x.mean()),
            "optimum_offload_fraction": float(xo.mean()),
            "extra": float(extra.mean()), "missed": float(missed.mean()),
            "extra_profile": profile(extra), "missed_profile": profile(missed)}


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
    opt = record.get("optimum")
    if opt:
        lines += [f"\n== Gap to the certified optimum of sum_i C_i (Eq. 24-25), N = "
                  f"{opt['n_users']}, {opt['scenarios']} scenarios; optimum "
                  f"{opt['optimum_cost']:.3f} per scenario, offloads "
                  f"{100 * opt['optimum_offload_fraction']:.1f}% ==",
                  f"{'method':<16}{'above the optimum [%]':>26}"]
        for name, (g, ci) in opt["gap"].items():
            lines.append(f"{name:<16}{100 * g:>15.3f} +- {100 * ci:<7.3f}")
        lines.append("PMRL's gap in parts of the optimum [%] (inference delay + learned "
                     "allocation + offloading decisions; extra / missed offloads, % of tasks):")
        for name, parts in opt["decomposition"].items():
            for k, d in enumerate(parts):
                lines.append(f"  {name} #{k}: {100 * d['gap']:.3f} = {100 * d['inference']:.3f} "
                             f"+ {100 * d['allocation']:.3f} + {100 * d['decisions']:.3f}; "
                             f"extra {100 * d['extra']:.1f}, missed {100 * d['missed']:.1f}")
    return "\n".join(lines)
