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
import numpy as np

from dynmec_jax import evaluation, files, pipeline, stats, system
from dynmec_jax.baselines import exact, greedy
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
    ("default_h16", "default with 16 hidden units (a third of the scheduler's MACs)",
     dict(_DEFAULT, scheduler_hidden=16)),
    ("default_h24", "default with 24 hidden units", dict(_DEFAULT, scheduler_hidden=24)),
    ("default_one_layer", "default with one hidden layer per pass",
     dict(_DEFAULT, scheduler_layers=1)),
)


def _metrics(pipe, scn, sp, g_offload):
    res = evaluation.pipeline_method(pipe, scn, sp)
    m = evaluation.scenario_metrics(scn, res, sp)
    return {"cost": m.cost,
            "cost_no_infer": evaluation.task_cost(scn, evaluation.without_inference(res), sp),
            "offload_fraction": jnp.mean(m.offload_fraction),
            "delay_ms": 1e3 * jnp.mean(m.delay), "miss_ratio": jnp.mean(m.miss_ratio),
            "agreement": jnp.mean(res.decision.offload == g_offload)}


def _train_and_score(tc, alloc, sp, keys, scn, g_offload, score, opt) -> tuple[list, float]:
    t0 = time.time()
    states, _ = train_joint.train_seeds(tc, alloc, sp, keys)
    jax.block_until_ready(states)
    wall = time.time() - t0
    per_seed = []
    for i in range(keys.shape[0]):
        m = score(pipeline.make_pipeline(tc, alloc, train_joint.unstack(states, i)), scn, sp,
                  g_offload)
        row = {k: float(np.mean(v)) for k, v in m.items()}
        if opt is not None:
            n, total = len(opt), float(np.sum(opt))
            row["gap"] = float(np.sum(np.asarray(m["cost"])[:n])) / total - 1
            row["gap_no_infer"] = float(np.sum(np.asarray(m["cost_no_infer"])[:n])) / total - 1
        per_seed.append(row)
    return per_seed, wall


def run_rows(cfg: JointConfig, rows, alloc, with_optimum: bool = True, progress=print) -> dict:
    """Trains and scores each row; returns ``{"greedy": {...}, "rows": [...]}``.

    With ``with_optimum``, every row's sum_i C_i is also compared with the
    certified optimum (``baselines/exact.py``) of the first ``eval.optimum_batch``
    held-out scenarios: ``gap`` with PMRL's own inference delay, ``gap_no_infer``
    without (the optimum, a bound, pays none).
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
    opt = None
    if with_optimum:
        n = cfg.eval.optimum_batch
        opt = np.asarray(exact.exact_optimum(jax.tree.map(lambda a: np.asarray(a[:n]), scn),
                                             sp).cost)
        base["optimum_batch"] = n
        base["optimum_cost"] = float(np.mean(opt))
        base["gap"] = float(np.sum(np.asarray(g_m.cost)[:n]) / np.sum(opt) - 1)
        base["gap_no_infer"] = float(np.sum(np.asarray(g.cost)[:n]) / np.sum(opt) - 1)
    keys = files.seed_keys(cfg.seed, cfg.n_seeds)
    score = jax.jit(_metrics)
    out = []
    for name, desc, over in rows:
        tc = dataclasses.replace(cfg.train, **over)
        per_seed, wall = _train_and_score(tc, alloc, sp, keys, scn, g.offload, score, opt)
        agg = {k: stats.mean_ci([r[k] for r in per_seed]) for k in per_seed[0]}
        row = {"name": name, "description": desc, "options": over,
               "train_wall_time_s": wall, "per_seed": per_seed,
               "mean": {k: a["mean"] for k, a in agg.items()},
               "ci": {k: a["ci"] for k, a in agg.items()},
               "cost_ratio": stats.mean_ci([r["cost"] / base["cost"] for r in per_seed])}
        out.append(row)
        msg = (f"  {100 * agg['gap']['mean']:.2f}% above the optimum "
               f"({100 * agg['gap_no_infer']['mean']:.2f}% without inference delay)"
               if opt is not None else "")
        progress(f"{name:<24} cost/greedy {row['cost_ratio']['mean']:.4f} +- "
                 f"{row['cost_ratio']['ci']:.4f}  offloaded {agg['offload_fraction']['mean']:.3f}"
                 f"{msg}  [{wall:.0f} s]")
    return {"greedy": base, "rows": out}


def markdown(result: dict, cfg: JointConfig) -> str:
    """The ablation table (Markdown)."""
    t, sp = cfg.train, cfg.system
    g = result["greedy"]
    opt = "gap" in g
    lines = [
        f"Scheduler ablation: N = {sp.n_users}, {cfg.eval.batch} held-out scenarios, "
        f"{cfg.n_seeds} seeds (mean +- 95% CI), {t.pretrain_steps} policy "
        f"pre-training steps + {t.episodes} episodes at batch {t.batch}, the shipped "
        "allocator; each method's cost includes its own inference delay (Eq. 9, 34-35)."
        + (f" Last column: sum_i C_i above the certified optimum of the first "
           f"{g['optimum_batch']} scenarios (with / without the method's inference delay)."
           if opt else "")
        + " Made by `dynmec-ablate-scheduler` (python launch/ablate_scheduler.py).",
        "",
        "| row | scheduler | sum_i C_i | / greedy | offloaded | delay [ms] | miss [%] | "
        "agrees with greedy |" + (" above the optimum |" if opt else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if opt else ""),
    ]
    for r in result["rows"]:
        m, c = r["mean"], r["ci"]
        line = (f"| {r['name']} | {r['description']} | {m['cost']:.1f} +- {c['cost']:.1f} | "
                f"{r['cost_ratio']['mean']:.4f} +- {r['cost_ratio']['ci']:.4f} | "
                f"{100 * m['offload_fraction']:.1f}% | {m['delay_ms']:.2f} | "
                f"{100 * m['miss_ratio']:.2f} | {100 * m['agreement']:.1f}% |")
        if opt:
            line += (f" {100 * m['gap']:.2f}% +- {100 * c['gap']:.2f}% / "
                     f"{100 * m['gap_no_infer']:.2f}% |")
        lines.append(line)
    line = (f"| greedy + KKT | removal-only greedy, optimal allocation, its own inference delay "
            f"({g['rounds']:.2f} removal rounds on average) "
            f"| {g['cost']:.1f} | 1 | {100 * g['offload_fraction']:.1f}% | "
            f"{g['delay_ms']:.2f} | {100 * g['miss_ratio']:.2f} | - |")
    if opt:
        line += f" {100 * g['gap']:.2f}% / {100 * g['gap_no_infer']:.2f}% |"
    lines.append(line)
    return "\n".join(lines) + "\n"
