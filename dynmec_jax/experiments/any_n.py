"""One pipeline for any number of users: mixed-N training against one network per N.

* :func:`compare_pipelines`: for every N, the pipeline trained over mixed N
  (default: the shipped one, trained with ``dynmec-train-joint
  --config.system.n_users=60 --config.train.n_users_min=5``) and one trained
  at that N alone (``PER_N/n<N>/pipeline``, trained here by
  :func:`per_n_pipeline` when missing) decide on the same held-out
  scenarios.  Reported: the mean cost sum_i C_i (Eq. 24-25, inference delays
  included) of both, their relative difference with the 95% CI of the paired
  per-scenario difference (:func:`dynmec_jax.stats.relative_gap`), and
  greedy + KKT as a reference.
* :func:`allocator_gaps`: the allocator's gap to the optimal (KKT) weighted
  delay at every N, every task offloaded: the largest network and the worst
  sub-network.
* :func:`against_peers`: at every N (5 to 60 by default), the pipeline
  against greedy + KKT (paired relative difference of sum_i C_i with its
  95% CI, each charged its own inference delay) and its gap to the
  certified optimum (``baselines/exact.py``) on the first
  ``optimum_scenarios`` scenarios, split into inference delay, learned
  allocation and offloading decisions
  (:func:`dynmec_jax.experiments.joint_eval.decompose`).
* :func:`markdown`: ``results/any_n.md``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
from absl import logging

from dynmec_jax import evaluation, files, pipeline, stats, system, typedconfig
from dynmec_jax.baselines import exact
from dynmec_jax.configs import joint as joint_configs
from dynmec_jax.experiments.joint_eval import decompose
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import joint_run
from dynmec_jax.train.config import JointConfig


def per_n_pipeline(n: int, root: pathlib.Path) -> pipeline.Pipeline:
    """The pipeline trained at N = ``n`` alone (``configs/joint.py:default``), trained now
    and saved under ``root/n<N>`` if missing."""
    path = pathlib.Path(root) / f"n{n}" / "pipeline"
    if (path / "pipeline.json").is_file():
        return pipeline.load_pipeline(path)
    cfg = typedconfig.from_configdict(JointConfig, joint_configs.get_config("default"))
    cfg = dataclasses.replace(cfg, system=cfg.system.replace(n_users=n))
    t0 = time.time()
    pipe, _ = joint_run.train_and_save(cfg, path.parent)
    logging.info("trained the N = %d pipeline in %.0f s", n, time.time() - t0)
    return pipe


def _costs(pipes: dict, scn, sp) -> dict:
    res = {k: evaluation.pipeline_method(p, scn, sp) for k, p in pipes.items()}
    res["greedy"] = evaluation.greedy(scn, sp)
    return {k: evaluation.scenario_metrics(scn, v, sp).cost for k, v in res.items()}


def compare_pipelines(mixed: pipeline.Pipeline, ns, per_n_root, batch: int, seed: int,
                      progress=print) -> list[dict]:
    """Rows ``{n_users, mixed_cost, per_n_cost, greedy_cost, mixed_over_per_n_minus_1,
    ci95, within_1pct}`` (module doc)."""
    base = mixed.allocator.sys_params
    rows = []
    for n in ns:
        per_n = per_n_pipeline(n, per_n_root)
        sp = base.replace(n_users=n)
        scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(seed), n), sp, batch)
        c = {k: np.asarray(v, np.float64)
             for k, v in jax.jit(_costs)({"mixed": mixed, "per_n": per_n}, scn, sp).items()}
        gap = stats.relative_gap(c["mixed"], c["per_n"])
        rows.append({"n_users": n, "mixed_cost": float(c["mixed"].mean()),
                     "per_n_cost": float(c["per_n"].mean()),
                     "greedy_cost": float(c["greedy"].mean()),
                     "mixed_over_per_n_minus_1": gap["mean"], "ci95": gap["ci"],
                     "within_1pct": bool(gap["mean"] + gap["ci"] <= 0.01)})
        progress(f"N = {n}: mixed {rows[-1]['mixed_cost']:.2f}, per-N "
                 f"{rows[-1]['per_n_cost']:.2f} ({100 * gap['mean']:+.2f}% +- "
                 f"{100 * gap['ci']:.2f}%), greedy + KKT {rows[-1]['greedy_cost']:.2f}")
    return rows


def against_peers(pipe: pipeline.Pipeline, ns, batch: int, seed: int,
                  optimum_scenarios: int, progress=print) -> list[dict]:
    """Rows ``{n_users, pipeline_cost, greedy_cost, over_greedy, ci95, below_greedy,
    optimum_cost, gap_to_optimum, greedy_gap_to_optimum, parts}`` (module doc): costs
    sum_i C_i per scenario (Eq. 24-25), gaps as fractions of the optimum's cost."""
    base = pipe.allocator.sys_params
    rows = []
    for n in ns:
        sp = base.replace(n_users=n)
        scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(seed + 2), n), sp, batch)
        c = {k: np.asarray(v, np.float64)
             for k, v in jax.jit(_costs)({"pipeline": pipe}, scn, sp).items()}
        vs_greedy = stats.relative_gap(c["pipeline"], c["greedy"])
        m = min(optimum_scenarios, batch)
        sub = jax.tree.map(lambda a, m=m: np.asarray(a[:m]), scn)
        opt = exact.exact_optimum(sub, sp)
        total = float(np.sum(opt.cost))
        parts = decompose(pipe, sub, opt, sp)
        rows.append({"n_users": n, "pipeline_cost": float(c["pipeline"].mean()),
                     "greedy_cost": float(c["greedy"].mean()),
                     "over_greedy": vs_greedy["mean"], "ci95": vs_greedy["ci"],
                     "below_greedy": bool(vs_greedy["mean"] + vs_greedy["ci"] < 0),
                     "optimum_scenarios": m, "optimum_cost": total / m,
                     "gap_to_optimum": parts["gap"],
                     "greedy_gap_to_optimum": float(np.sum(c["greedy"][:m])) / total - 1,
                     "parts": {k: parts[k] for k in ("inference", "allocation", "decisions")}})
        r = rows[-1]
        progress(f"N = {n}: pipeline / greedy - 1 = {100 * r['over_greedy']:+.2f}% +- "
                 f"{100 * r['ci95']:.2f}%; above the optimum {100 * r['gap_to_optimum']:.2f}% "
                 f"(greedy {100 * r['greedy_gap_to_optimum']:.2f}%)")
    return rows


def allocator_gaps(alloc, ns, batch: int, seed: int) -> list[dict]:
    """Rows ``{n_users, largest_gap, worst_gap, best_gap}``: the allocator's gaps to the
    optimal weighted delay (every task offloaded) at each N."""
    out = []
    for n in ns:
        sp = alloc.sys_params.replace(n_users=n)
        scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(seed + 1), n), sp, batch)
        g = np.asarray(train_allocator.evaluate_subnets(alloc, scn, np.ones(scn.shape, bool),
                                                        sp)["gap"])
        out.append({"n_users": n, "largest_gap": float(g[-1, -1]), "worst_gap": float(g.max()),
                    "best_gap": float(g.min())})
    return out


def markdown(record: dict) -> str:
    """``results/any_n.md``: the pipelines' table and the allocator's gaps."""
    lines = ["# One pipeline for any N", "",
             f"Made by `{record['command']}` ({record['batch']} held-out scenarios per N; cost = "
             "sum C_i of Eq. 24-25 per scenario, each method's own inference delay included).",
             ""]
    if record.get("peers"):
        lines += ["The pipeline against greedy + KKT and the certified optimum (gap in % of the "
                  "optimum's cost on the first scenarios; its parts: inference delay + learned "
                  "allocation + offloading decisions):", "",
                  "| N | pipeline | greedy + KKT | pipeline / greedy - 1 (95% CI) | "
                  "above the optimum | = inference + allocation + decisions | greedy above "
                  "the optimum |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['n_users']} | {r['pipeline_cost']:.2f} | {r['greedy_cost']:.2f} | "
                  f"{100 * r['over_greedy']:+.2f}% +- {100 * r['ci95']:.2f}% | "
                  f"{100 * r['gap_to_optimum']:.2f}% | " + " + ".join(
                      f"{100 * r['parts'][k]:.2f}" for k in ("inference", "allocation",
                                                            "decisions"))
                  + f" | {100 * r['greedy_gap_to_optimum']:.2f}% |" for r in record["peers"]]
        lines.append("")
    if record.get("pipelines"):
        lines += ["| N | mixed-N pipeline | per-N pipeline | mixed / per-N - 1 (95% CI) | "
                  "greedy + KKT |", "|---|---|---|---|---|"]
    lines += [f"| {r['n_users']} | {r['mixed_cost']:.2f} | {r['per_n_cost']:.2f} | "
              f"{100 * r['mixed_over_per_n_minus_1']:+.2f}% +- {100 * r['ci95']:.2f}% | "
              f"{r['greedy_cost']:.2f} |" for r in record["pipelines"]]
    lines += ["", "Allocator (shipped) against the optimal allocation, every task offloaded:", "",
              "| N | largest network | worst sub-network | best sub-network |", "|---|---|---|---|"]
    lines += [f"| {g['n_users']} | {100 * g['largest_gap']:.3f}% | {100 * g['worst_gap']:.3f}% | "
              f"{100 * g['best_gap']:.3f}% |" for g in record["allocator_gap"]]
    return "\n".join(lines) + "\n"


def write(record: dict, out) -> list[str]:
    """``OUT.json`` and ``OUT.md`` of a record; returns their paths."""
    out = pathlib.Path(out)
    files.write_json(record, out.with_suffix(".json"))
    files.atomic_write(out.with_suffix(".md"), markdown(record))
    return [str(out.with_suffix(".json")), str(out.with_suffix(".md"))]
