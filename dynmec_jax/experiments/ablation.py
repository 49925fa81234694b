"""Scheduler ablation (Section V.B): what makes Eq. 23-27 learn, one change per row.

:func:`run_rows` trains, for each row of :data:`ROWS` (from the paper's exact
scheduler and estimator to the default), ``config.n_seeds`` seeds of PMRL
(Algorithm 1, variant "full") with the config's budget, all seeds at once
(``jit(vmap(train))``).  Every row is scored on the same ``eval.batch``
held-out scenarios (``eval.seed``) against greedy offloading with the optimal
(KKT) allocation (``baselines/greedy.py``): sum_i C_i (Eq. 24-25, each with
its own inference delay, Eq. 9), its ratio to the greedy's, the offloaded
share, the mean service delay, the deadline-miss ratio and the agreement of
the offloading decisions with the greedy's; mean and 95% Student-t interval
over the seeds.  :func:`markdown` writes the table (``results/scheduler_ablation.md``).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from dynmec_jax import evaluation, files, pipeline, stats, system
from dynmec_jax.baselines import exhaustive, greedy
from dynmec_jax.train import joint as train_joint
from dynmec_jax.train.config import JointConfig

_ONE = dict(scheduler="set", scheduler_layers=1, scheduler_passes=1)
_DEFAULT = dict(scheduler="set", scheduler_layers=2, scheduler_passes=2, advantage="relative",
                estimator="marginal")
_PAPER = dict(scheduler="paper", scheduler_layers=1, scheduler_passes=1)

#: (name, description, TrainConfig overrides), from the paper's scheduler to the default.
ROWS = (
    ("paper", "paper's 5N -> 32 -> N, raw Eq. 23 (the paper)",
     dict(_PAPER, advantage="raw", estimator="eq23")),
    ("paper_relative", "paper's network, relative per-task advantage",
     dict(_PAPER, advantage="relative", estimator="eq23")),
    ("set_raw", "per-user (set) network, 1 layer, raw Eq. 23",
     dict(_ONE, advantage="raw", estimator="eq23")),
    ("set_relative", "per-user network, relative per-task advantage",
     dict(_ONE, advantage="relative", estimator="eq23")),
    ("set_raw_marginal", "per-user network, raw marginal (system-level) costs",
     dict(_ONE, advantage="raw", estimator="marginal")),
    ("set_relative_marginal", "per-user network, relative marginal costs",
     dict(_ONE, advantage="relative", estimator="marginal")),
    ("paper_relative_marginal", "paper's network, relative marginal costs",
     dict(_PAPER, advantage="relative", estimator="marginal")),
    ("two_layers", "per-user network, 2 hidden layers, relative marginal costs",
     dict(_DEFAULT, scheduler_passes=1)),
    ("default", "+ a second pass over the tasks the first would offload (the default)",
     dict(_DEFAULT)),
    ("default_entropy", "default + entropy bonus 0.05 decaying to 0",
     dict(_DEFAULT, entropy=0.05)),
    ("default_clip", "default + gradient clipping at global norm 1",
     dict(_DEFAULT, clip_norm=1.0)),
)


def _metrics(pipe, scn, sp, g_offload):
    res = evaluation.pipeline_method(pipe, scn, sp)
    m = evaluation.scenario_metrics(scn, res, sp)
    return {"cost": jnp.mean(m.cost),
            "cost_no_infer": jnp.mean(evaluation.task_cost(scn, evaluation.without_inference(res),
                                                           sp)),
            "offload_fraction": jnp.mean(m.offload_fraction),
            "delay_ms": 1e3 * jnp.mean(m.delay), "miss_ratio": jnp.mean(m.miss_ratio),
            "agreement": jnp.mean(res.decision.offload == g_offload)}


def _train_and_score(tc, alloc, sp, keys, scn, g_offload, score) -> tuple[list, float]:
    t0 = time.time()
    states, _ = train_joint.train_seeds(tc, alloc, sp, keys)
    jax.block_until_ready(states)
    wall = time.time() - t0
    per_seed = [{k: float(v) for k, v in score(
        pipeline.make_pipeline(tc, alloc, train_joint.unstack(states, i)), scn, sp,
        g_offload).items()} for i in range(keys.shape[0])]
    return per_seed, wall


def run_rows(cfg: JointConfig, rows, alloc, small_n: int = 0) -> dict:
    """Trains and scores each row; returns ``{"greedy": {...}, "rows": [...]}``.

    With ``small_n`` > 0 each row is also trained at N = ``small_n`` and its
    sum_i C_i compared with the exhaustive optimum (``eval.small_batch``
    scenarios, exact energy-aware allocation, no inference delay): ``gap``
    with PMRL's own inference delay, ``gap_no_infer`` without.
    """
    sp = cfg.system
    scn = system.sample_scenarios(jax.random.key(cfg.eval.seed), sp, cfg.eval.batch)
    g = jax.jit(lambda s: greedy.greedy_offloading(s, sp))(scn)
    g_m = evaluation.scenario_metrics(scn, evaluation.greedy(scn, sp), sp)
    base = {"cost": float(jnp.mean(g_m.cost)),
            "cost_no_infer": float(jnp.mean(g.cost)),
            "offload_fraction": float(jnp.mean(g.offload)),
            "rounds": float(jnp.mean(g.rounds)),
            "delay_ms": 1e3 * float(jnp.mean(g_m.delay)),
            "miss_ratio": float(jnp.mean(g_m.miss_ratio))}
    small = None
    if small_n > 0:
        sp_s = sp.replace(n_users=small_n)
        scn_s = system.sample_scenarios(jax.random.key(cfg.eval.seed + 2), sp_s,
                                        cfg.eval.small_batch)
        opt = float(jnp.mean(exhaustive.exhaustive_optimum(
            scn_s, sp_s, objective="cost", allocation="energy_aware").value))
        g_s = greedy.greedy_offloading(scn_s, sp_s)
        small = (sp_s, scn_s, opt, g_s.offload)
        base["small_n"] = small_n
        base["small_optimum"] = opt
        base["small_gap"] = float(jnp.mean(g_s.cost)) / opt - 1
    keys = files.seed_keys(cfg.seed, cfg.n_seeds)
    score = jax.jit(_metrics)
    out = []
    for name, desc, over in rows:
        tc = dataclasses.replace(cfg.train, **over)
        per_seed, wall = _train_and_score(tc, alloc, sp, keys, scn, g.offload, score)
        agg = {k: stats.mean_ci([r[k] for r in per_seed]) for k in per_seed[0]}
        row = {"name": name, "description": desc, "options": over,
               "train_wall_time_s": wall, "per_seed": per_seed,
               "mean": {k: a["mean"] for k, a in agg.items()},
               "ci": {k: a["ci"] for k, a in agg.items()},
               "cost_ratio": stats.mean_ci([r["cost"] / base["cost"] for r in per_seed])}
        msg = ""
        if small is not None:
            sp_s, scn_s, opt, g_off = small
            tc_s = dataclasses.replace(tc, n_users=small_n)
            per_s, wall_s = _train_and_score(tc_s, alloc, sp_s, keys, scn_s, g_off, score)
            row["small"] = {"per_seed": per_s, "train_wall_time_s": wall_s,
                            "gap": stats.mean_ci([r["cost"] / opt - 1 for r in per_s]),
                            "gap_no_infer": stats.mean_ci(
                                [r["cost_no_infer"] / opt - 1 for r in per_s]),
                            "offload_fraction": stats.mean_ci(
                                [r["offload_fraction"] for r in per_s])}
            msg = (f"  N={small_n}: {100 * row['small']['gap']['mean']:.2f}% above the optimum "
                   f"({100 * row['small']['gap_no_infer']['mean']:.2f}% without inference delay)")
        out.append(row)
        print(f"{name:<24} cost/greedy {row['cost_ratio']['mean']:.4f} +- "
              f"{row['cost_ratio']['ci']:.4f}  offloaded {agg['offload_fraction']['mean']:.3f}"
              f"  delay {agg['delay_ms']['mean']:.2f} ms{msg}  [{wall:.0f} s]", flush=True)
    return {"greedy": base, "rows": out}


def markdown(result: dict, cfg: JointConfig) -> str:
    """The ablation table (Markdown)."""
    t, sp = cfg.train, cfg.system
    g = result["greedy"]
    small = "small_n" in g
    lines = [
        f"Scheduler ablation: N = {sp.n_users}, {cfg.eval.batch} held-out scenarios, "
        f"{cfg.n_seeds} seeds (mean +- 95% CI), {t.pretrain_steps} policy "
        f"pre-training steps + {t.episodes} episodes at batch {t.batch}, the shipped "
        "allocator; each method's cost includes its own inference delay (Eq. 9, 34-35)."
        + (f" Last columns: the same row trained at N = {g['small_n']}, sum_i C_i above the "
           f"exhaustive optimum on {cfg.eval.small_batch} scenarios (with / without "
           "PMRL's inference delay)." if small else "")
        + " Made by `dynmec-ablate-scheduler` (python launch/ablate_scheduler.py).",
        "",
        "| row | scheduler | sum_i C_i | / greedy | offloaded | delay [ms] | miss [%] | "
        "agrees with greedy |" + (f" N = {g['small_n']}: above optimum | offloaded |"
                                  if small else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if small else ""),
    ]
    for r in result["rows"]:
        m, c = r["mean"], r["ci"]
        line = (f"| {r['name']} | {r['description']} | {m['cost']:.1f} +- {c['cost']:.1f} | "
                f"{r['cost_ratio']['mean']:.4f} +- {r['cost_ratio']['ci']:.4f} | "
                f"{100 * m['offload_fraction']:.1f}% | {m['delay_ms']:.2f} | "
                f"{100 * m['miss_ratio']:.2f} | {100 * m['agreement']:.1f}% |")
        if small:
            sm = r["small"]
            line += (f" {100 * sm['gap']['mean']:.2f}% / {100 * sm['gap_no_infer']['mean']:.2f}%"
                     f" | {100 * sm['offload_fraction']['mean']:.1f}% |")
        lines.append(line)
    line = (f"| greedy + KKT | removal-only greedy, optimal allocation, its own inference delay "
            f"({g['rounds']:.2f} removal rounds on average) "
            f"| {g['cost']:.1f} | 1 | {100 * g['offload_fraction']:.1f}% | "
            f"{g['delay_ms']:.2f} | {100 * g['miss_ratio']:.2f} | - |")
    if small:
        line += f" {100 * g['small_gap']:.2f}% | - |"
    lines.append(line)
    return "\n".join(lines) + "\n"
