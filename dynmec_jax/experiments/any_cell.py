"""One pipeline for any cell: its cost against the certified optimum across the cells.

* :func:`cell_grid`: the cells measured: Table II at every N, then one field
  at a time around Table II (the two ends of its trained range and the
  middle, log-middle for a log range) at every N, then ``n_random`` cells
  drawn from the whole range (every ranged field at once, N uniform over
  the N range).
* :func:`evaluate_cells`: per cell, ``batch`` held-out scenarios; the
  certified optimum of sum_i C_i (Eq. 24-25, :mod:`dynmec_jax.baselines.exact`,
  a bound: no inference delay) and each pipeline's greedy decision, costed
  with its own inference delay (Eq. 34-35) and without it; reported as
  ``mean(cost) / mean(optimum) - 1`` with the 95% CI of the paired
  per-scenario differences (:func:`dynmec_jax.stats.relative_gap`), and the
  share of tasks offloaded by each.
* :func:`markdown` / :func:`figure` / :func:`write`: ``results/any_cell.md``,
  ``.json`` and ``.png``.

Units: SI in the cells; costs as Eq. 24-25; gaps dimensionless.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from dynmec_jax import cell as cell_lib
from dynmec_jax import evaluation, files, plotting, stats, system
from dynmec_jax.baselines import exact
from dynmec_jax.train import allocator as train_allocator

#: Fields varied one at a time (issue 21: at least these).
FIELDS = ("bandwidth_max", "f_server", "efficiency", "tx_power", "noise_psd",
          "path_loss_const", "path_loss_exp", "beta")
#: Bar colours of the figure, one per pipeline.
PALETTE = ("#999999", "#e69f00", "#0072b2", "#009e73", "#d55e00", "#cc79a7", "#56b4e9",
           "#f0e442", "#000000")
#: N of every cell of the one-field-at-a-time grid.
N_USERS = (10, 30, 60)


def _middle(r: cell_lib.FieldRange) -> float:
    return math.sqrt(r.lo * r.hi) if r.scale == "log" else 0.5 * (r.lo + r.hi)


def cell_grid(base: system.SystemParams, ranges, fields=FIELDS, ns=N_USERS, n_random: int = 8,
              seed: int = 0) -> list[dict]:
    """The cells of the module doc: ``{"label", "field", "value", "n_users", "cell"}`` each
    (``cell`` a :class:`SystemParams` with ``n_users`` set; ``field`` "table2" or
    "random" for those).  ``ranges``: the trained range (:func:`dynmec_jax.cell.parse_range`);
    a field not in it raises ``ValueError``."""
    by_name = {r.name: r for r in ranges}
    rows = [{"label": "Table II", "field": "table2", "value": None, "n_users": n,
             "cell": base.replace(n_users=n)} for n in ns]
    for f in fields:
        if f not in by_name:
            raise ValueError(f"field {f!r} is not in the trained range {sorted(by_name)}")
        r = by_name[f]
        for v in (r.lo, _middle(r), r.hi):
            for n in ns:
                rows.append({"label": f"{f} = {v:.3g}", "field": f, "value": float(v),
                             "n_users": n, "cell": base.replace(n_users=n, **{f: float(v)})})
    if n_random:
        cells = cell_lib.sample_cells(jax.random.key(seed), base, n_random, ranges)
        n_rand = np.asarray(jax.random.randint(jax.random.key(seed + 1), (n_random,),
                                               min(ns), max(ns) + 1))
        for i in range(n_random):
            fields_i = {r.name: float(np.asarray(getattr(cells, r.name))[i]) for r in ranges}
            rows.append({"label": f"random {i}", "field": "random", "value": fields_i,
                         "n_users": int(n_rand[i]),
                         "cell": base.replace(n_users=int(n_rand[i]), **fields_i)})
    return rows


@jax.jit
def _pipeline_costs(pipe, scn, sp):
    """Per scenario: the pipeline's cost with and without its inference delay, the cost of
    its offloading set under the optimal (KKT) allocation, no inference delay, the cost
    of its set after the one-flip search (:func:`dynmec_jax.evaluation.pipeline_search`)
    with and without the inference delays, and the share of tasks it offloads."""
    res = evaluation.pipeline_method(pipe, scn, sp)
    with_inf = evaluation.scenario_metrics(scn, res, sp).cost
    without = evaluation.scenario_metrics(scn, evaluation.without_inference(res), sp).cost
    kkt = evaluation.without_inference(evaluation.optimal(scn, sp, res.decision.offload))
    set_kkt = evaluation.scenario_metrics(scn, kkt, sp).cost
    found = evaluation.searched(res, scn, sp)         # = evaluation.pipeline_search
    search_inf = evaluation.scenario_metrics(scn, found, sp).cost
    search = evaluation.scenario_metrics(scn, evaluation.without_inference(found), sp).cost
    return (with_inf, without, set_kkt, search, search_inf,
            jnp.mean(res.decision.offload.astype(jnp.float32)))


@jax.jit
def _greedy_cost(scn, sp):
    return evaluation.scenario_metrics(scn, evaluation.greedy(scn, sp), sp).cost


def _gap(a, b) -> dict:
    g = stats.relative_gap(a, b)
    return {"mean": g["mean"], "ci": g["ci"]}


def _optimum(scn, sp, time_limit: float, cache, key: str):
    """``(cost (B,), offload share, uncertified count)`` of the certified optimum, read from
    or written to the directory ``cache`` (None: no cache) under ``key``."""
    path = None if cache is None else pathlib.Path(cache) / (
        hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
    if path is not None and path.is_file():
        z = np.load(path)
        return z["cost"], float(z["share"]), int(z["uncertified"])
    opt = exact.exact_optimum(scn, sp, time_limit=time_limit)
    out = (np.asarray(opt.cost, np.float64), float(np.mean(opt.offload)),
           int(np.sum(np.asarray(opt.status) != "optimal")))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, cost=out[0], share=out[1], uncertified=out[2])
    return out


def _without_records(pipe):
    """``pipe`` with its (and its allocator's) JSON record emptied: the records are static
    fields of the pytrees, so pipelines that differ only in them (the seeds of a recipe)
    then share one compiled program instead of one each."""
    return pipe.replace(record="{}", allocator=pipe.allocator.replace(record="{}"))


def _seed_costs(pipes, scn, sp):
    """``(with inference (B,), without (B,), its set + KKT (B,), searched (B,), searched
    with inference (B,), offload share, [costs without inference per seed])`` of one
    pipeline or of several seeds of one recipe (costs averaged over the seeds)."""
    outs = [jax.device_get(_pipeline_costs(_without_records(p), scn, sp)) for p in pipes]
    mean = [np.mean([np.asarray(o[j], np.float64) for o in outs], axis=0) for j in range(5)]
    per_seed = [np.asarray(o[1], np.float64) for o in outs]
    return (*mean, float(np.mean([o[5] for o in outs])), per_seed)


def _top_share(cost, ref, top: int = 5) -> float:
    """Share of the excess cost over the optimum carried by the ``top`` worst scenarios."""
    d = np.sort(cost - ref)[::-1]
    total = float(np.sum(d))
    return float(np.sum(d[:top]) / total) if total > 0 else 0.0


def _matches(g: dict, field: str, value: float) -> bool:
    return g["field"] == field and math.isclose(g["value"], value, rel_tol=1e-6, abs_tol=1e-12)


def evaluate_cells(pipes: dict, grid: list[dict], batch: int, seed: int,
                   time_limit: float = 60.0, progress=print, cache=None,
                   per_cell=()) -> list[dict]:
    """Per cell of ``grid`` (:func:`cell_grid`), the rows of the module doc.

    ``pipes``: ``{name: Pipeline}`` decided on the same scenarios
    (``system.sample_scenarios(fold_in(key(seed), i), cell, batch)`` for cell
    ``i``); a value may be a list of pipelines, the seeds of one recipe: its
    costs are averaged over the seeds (so its gap is the mean of the seeds'
    gaps) and ``seed_gaps`` lists each seed's.  Each row: the cell's
    ``label``, ``field``, ``value``, ``n_users``; ``optimum_cost`` (mean
    sum_i C_i), ``optimum_offload`` (share), ``uncertified`` (scenarios where
    the solver hit ``time_limit``); ``greedy`` gap; and per pipeline ``{name:
    {"gap": {mean, ci}, "gap_with_inference": {mean, ci}, "gap_set_kkt": {mean, ci},
    "top5_share", "offload": share, "warnings": [...], "seed_gaps": [...]}}``:
    ``gap_set_kkt`` is the gap of the pipeline's offloading set under the
    optimal allocation (:func:`dynmec_jax.evaluation.optimal`, no inference
    delay), so ``gap - gap_set_kkt`` is the allocator's part of the gap and
    ``gap_set_kkt`` the scheduler's; ``top5_share`` the share of the excess
    cost carried by the 5 worst scenarios; ``gap_search`` and
    ``gap_search_with_inference`` the pipeline followed by the one-flip search
    (:func:`dynmec_jax.evaluation.pipeline_search`), without and with the
    inference delays (its own included).  ``per_cell``: ``(field, value,
    Pipeline)`` entries, pipelines trained for one cell alone, decided only on
    the cells of the grid where ``field == value``: ``row["per_cell"]`` then
    holds its gaps and, per pipeline of ``pipes``, ``vs`` = (mean cost of
    that pipeline - mean cost of the per-cell one) / mean optimum with the
    95% CI of the paired differences (points of the optimum; > 0: the
    per-cell pipeline is better).  ``cache``: a directory keeping each cell's
    optimum (keyed by the cell, the scenarios' seed and number), so a second
    run with other pipelines reuses it.
    """
    rows = []
    for i, g in enumerate(grid):
        t0 = time.perf_counter()
        sp = g["cell"]
        scn = system.sample_scenarios(jax.random.fold_in(jax.random.key(seed), i), sp, batch)
        key = json.dumps([files.to_jsonable(sp), sp.n_users, seed, i, batch, time_limit],
                         sort_keys=True)
        ref, share, uncertified = _optimum(scn, sp, time_limit, cache, key)
        row = {k: g[k] for k in ("label", "field", "value", "n_users")}
        row.update(optimum_cost=float(ref.mean()), optimum_offload=share,
                   uncertified=uncertified,
                   greedy=_gap(np.asarray(_greedy_cost(scn, sp), np.float64), ref),
                   pipelines={})
        costs = {}
        for name, pipe in pipes.items():
            group = list(pipe) if isinstance(pipe, list | tuple) else [pipe]
            with_inf, without, set_kkt, search, search_inf, share, per_seed = _seed_costs(
                group, scn, sp)
            costs[name] = without
            row["pipelines"][name] = {
                "gap": _gap(without, ref), "gap_with_inference": _gap(with_inf, ref),
                "gap_set_kkt": _gap(set_kkt, ref), "top5_share": _top_share(without, ref),
                "gap_search": _gap(search, ref),
                "gap_search_with_inference": _gap(search_inf, ref),
                "offload": share, "warnings": group[0].cell_warnings(sp),
                "seed_gaps": [_gap(c, ref)["mean"] for c in per_seed]}
        for field, value, pipe in per_cell:
            if not _matches(g, field, value):
                continue
            with_inf, without, _, _, _, share, _ = _seed_costs([pipe], scn, sp)
            row["per_cell"] = {
                "gap": _gap(without, ref), "gap_with_inference": _gap(with_inf, ref),
                "offload": share, "vs": {n: stats.mean_ci((c - without) / ref.mean())
                                         for n, c in costs.items()}}
        rows.append(row)
        progress(f"[{i + 1}/{len(grid)}] {row['label']}, N = {row['n_users']}: " + ", ".join(
            f"{k} {100 * v['gap']['mean']:+.2f}% ({100 * v['gap_with_inference']['mean']:+.2f}%"
            " with inference)" for k, v in row["pipelines"].items())
            + f"; optimum offloads {100 * row['optimum_offload']:.0f}% "
            f"({time.perf_counter() - t0:.1f} s)")
    return rows


def allocator_gaps(alloc, ranges, n_users: int = 30, batch: int = 256, seed: int = 7,
                   skip=("efficiency", "beta")) -> list[dict]:
    """The allocator's gap to the optimal weighted delay (every task offloaded, KKT
    optimum; Eq. 12-20) at Table II and at both ends of each ranged field (``skip``:
    fields that do not change that problem).  Rows ``{"label", "largest_gap",
    "worst_gap"}``: the largest sub-network's and the worst sub-network's
    mean(weighted delay) / mean(optimum) - 1 (dimensionless)."""
    base = alloc.sys_params.replace(n_users=n_users)
    cells = [("Table II", base)] + [
        (f"{r.name} = {v:.3g}", base.replace(**{r.name: v}))
        for r in ranges if r.name not in skip for v in (r.lo, r.hi)]
    rows = []
    for label, sp in cells:
        scn = system.sample_scenarios(jax.random.key(seed), sp, batch)
        g = np.asarray(train_allocator.evaluate_subnets(alloc, scn, np.ones(scn.shape, bool),
                                                        sp)["gap"])
        rows.append({"label": label, "largest_gap": float(g[-1, -1]),
                     "worst_gap": float(g.max())})
    return rows


def summary(rows: list[dict]) -> dict:
    """Per pipeline: the worst gap without inference delay over the cells, the number of
    cells within 1.5% and 1% of the optimum (mean gap), and the mean gap."""
    out = {}
    for name in rows[0]["pipelines"] if rows else ():
        gaps = np.asarray([r["pipelines"][name]["gap"]["mean"] for r in rows])
        search = np.asarray([r["pipelines"][name]["gap_search"]["mean"] for r in rows])
        search_inf = np.asarray([r["pipelines"][name]["gap_search_with_inference"]["mean"]
                                 for r in rows])
        with_inf = np.asarray([r["pipelines"][name]["gap_with_inference"]["mean"]
                               for r in rows])
        out[name] = {"worst_gap": float(gaps.max()), "mean_gap": float(gaps.mean()),
                     "within_1.5pct": int(np.sum(gaps <= 0.015)),
                     "within_1pct": int(np.sum(gaps <= 0.01)), "cells": int(gaps.size),
                     "mean_gap_with_inference": float(with_inf.mean()),
                     "search_worst_gap": float(search.max()),
                     "search_within_1pct": int(np.sum(search <= 0.01)),
                     "search_mean_gap_with_inference": float(search_inf.mean()),
                     "search_helps_with_inference": int(np.sum(search_inf < with_inf))}
        seeds = np.asarray([r["pipelines"][name].get("seed_gaps", []) for r in rows])
        if seeds.ndim == 2 and seeds.shape[1] > 1:   # several seeds: the worst of any seed
            out[name].update({"seeds": int(seeds.shape[1]), "worst_seed_gap": float(seeds.max()),
                              "every_seed_within_1.5pct": int(np.sum(seeds.max(1) <= 0.015))})
    return out


def markdown(record: dict) -> str:
    """``results/any_cell.md``: one row per cell, the gaps of every pipeline."""
    rows = record["rows"]
    names = list(rows[0]["pipelines"]) if rows else []
    lines = ["# One pipeline for any cell", "",
             f"Made by `{record['command']}`: {record['batch']} held-out scenarios per cell "
             f"(seed {record['seed']}); gap = mean sum_i C_i (Eq. 24-25) / mean certified "
             "optimum - 1, with the 95% CI of the paired differences; \"with inf.\" charges "
             "the pipeline's own inference delay (Eq. 34-35), the optimum none.  "
             f"Trained range of each pipeline: {record['ranges']}.", ""]
    for name, s in record["summary"].items():
        lines.append(f"- **{name}**: worst gap {100 * s['worst_gap']:+.2f}%, mean "
                     f"{100 * s['mean_gap']:+.2f}%; within 1.5%: {s['within_1.5pct']}/"
                     f"{s['cells']} cells, within 1%: {s['within_1pct']}/{s['cells']}."
                     + (f"  Mean of {s['seeds']} seeds; the worst seed's worst gap "
                        f"{100 * s['worst_seed_gap']:+.2f}%, every seed within 1.5% in "
                        f"{s['every_seed_within_1.5pct']}/{s['cells']} cells."
                        if "seeds" in s else "")
                     + (f"  With the one-flip search: worst gap "
                        f"{100 * s['search_worst_gap']:+.2f}%, within 1%: "
                        f"{s['search_within_1pct']}/{s['cells']}; with inference, mean "
                        f"{100 * s['search_mean_gap_with_inference']:+.2f}% against "
                        f"{100 * s['mean_gap_with_inference']:+.2f}% without the search, lower "
                        f"in {s['search_helps_with_inference']}/{s['cells']} cells."
                        if "search_worst_gap" in s else ""))
    head = "| cell | N | optimum offloads | greedy + KKT | " + " | ".join(
        f"{n} gap | {n} with inf. | {n} offloads" for n in names) + " |"
    lines += ["", head, "|" + "---|" * (4 + 3 * len(names))]
    for r in rows:
        cells = [r["label"] if r["field"] != "random" else
                 r["label"] + " (" + ", ".join(f"{k}={v:.3g}" for k, v in r["value"].items()) + ")",
                 str(r["n_users"]), f"{100 * r['optimum_offload']:.0f}%",
                 f"{100 * r['greedy']['mean']:+.2f}%"]
        for n in names:
            p = r["pipelines"][n]
            seeds = p.get("seed_gaps", [])
            cells += [f"{100 * p['gap']['mean']:+.2f}% +- {100 * p['gap']['ci']:.2f}%"
                      + (" (seeds " + " / ".join(f"{100 * v:+.2f}" for v in seeds) + ")"
                         if len(seeds) > 1 else ""),
                      f"{100 * p['gap_with_inference']['mean']:+.2f}%",
                      f"{100 * p['offload']:.0f}%" + (" (outside range)" if p["warnings"] else "")]
        lines.append("| " + " | ".join(cells) + " |")
    miss = [r for r in rows if max(p["gap"]["mean"] for p in r["pipelines"].values()) > 0.015]
    if miss:
        lines += ["", "Where the gap comes from, in the cells above 1.5%: \"set + KKT\" is the "
                  "pipeline's offloading set with the optimal allocation (so gap - set + KKT is "
                  "the allocator's part, set + KKT the scheduler's); \"top 5\" the share of "
                  "the excess cost over the optimum carried by the 5 worst scenarios; "
                  "\"search\" the pipeline followed by the one-flip search "
                  "(`evaluation.pipeline_search`), without and with the inference delays "
                  "(the search's own operations charged by Eq. 9).", "",
                  "| cell | N | " + " | ".join(
                      f"{n} gap | {n} set + KKT | {n} top 5 | {n} search | {n} search with inf."
                      for n in names) + " |",
                  "|" + "---|" * (2 + 5 * len(names))]
        for r in miss:
            cells = [r["label"], str(r["n_users"])]
            for n in names:
                p = r["pipelines"][n]
                cells += [f"{100 * p['gap']['mean']:+.2f}%",
                          f"{100 * p['gap_set_kkt']['mean']:+.2f}%",
                          f"{100 * p['top5_share']:.0f}%",
                          f"{100 * p['gap_search']['mean']:+.2f}%",
                          f"{100 * p['gap_search_with_inference']['mean']:+.2f}%"]
            lines.append("| " + " | ".join(cells) + " |")
    spec = [r for r in rows if "per_cell" in r]
    if spec:
        lines += ["", "Against pipelines trained for one cell alone, on the same scenarios: "
                  "\"vs\" = (mean cost of the pipeline - that of the per-cell one) / mean "
                  "optimum, in points, with the 95% CI of the paired differences (> 0: the "
                  "per-cell pipeline is better).", "",
                  "| cell | N | per-cell gap | per-cell with inf. | " + " | ".join(
                      f"{n} gap | {n} vs per-cell" for n in names) + " |",
                  "|" + "---|" * (4 + 2 * len(names))]
        for r in spec:
            q = r["per_cell"]
            cells = [r["label"], str(r["n_users"]),
                     f"{100 * q['gap']['mean']:+.2f}% +- {100 * q['gap']['ci']:.2f}%",
                     f"{100 * q['gap_with_inference']['mean']:+.2f}%"]
            for n in names:
                cells += [f"{100 * r['pipelines'][n]['gap']['mean']:+.2f}%",
                          f"{100 * q['vs'][n]['mean']:+.2f} +- {100 * q['vs'][n]['ci']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    if any(r["uncertified"] for r in rows):
        lines += ["", "Scenarios whose optimum the solver did not certify within its time "
                  "limit: " + ", ".join(f"{r['label']} N={r['n_users']}: {r['uncertified']}"
                                         for r in rows if r["uncertified"]) + "."]
    return "\n".join(lines) + "\n"


def figure(record: dict) -> Figure:
    """Gap to the optimum (no inference delay) per cell, one bar per pipeline, 95% CI."""
    rows = record["rows"]
    names = list(rows[0]["pipelines"]) if rows else []
    labels = [f"{r['label'] if r['field'] != 'random' else r['label']}, N={r['n_users']}"
              for r in rows]
    fig = Figure(figsize=(8.0, max(3.0, 0.22 * len(rows) + 1.2)), layout="constrained")
    ax = fig.add_subplot()
    pos = np.arange(len(rows), dtype=float)
    h = 0.8 / max(len(names), 1)
    for j, n in enumerate(names):
        m = np.asarray([100 * r["pipelines"][n]["gap"]["mean"] for r in rows])
        ci = np.asarray([100 * r["pipelines"][n]["gap"]["ci"] for r in rows])
        ax.barh(pos + (j - (len(names) - 1) / 2) * h, m, h * 0.95, xerr=ci, capsize=2,
                color=PALETTE[j % len(PALETTE)], label=n)
    for x, style in ((1.5, "--"), (1.0, ":")):
        ax.axvline(x, color="grey", linestyle=style, linewidth=0.8)
    ax.set_xscale("symlog", linthresh=2.0)   # linear up to 2%, then log: gaps span 0.1-200%
    ax.set_xlim(left=-1.0)
    ax.set_yticks(pos)
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("cost / certified optimum - 1 [%] (no inference delay; symlog above 2%)")
    ax.grid(True, axis="x", alpha=0.3)
    if names:
        ax.legend(fontsize="small")
    return fig


def write(record: dict, out) -> list[str]:
    """``OUT.json``, ``OUT.md`` and ``OUT.png`` of a record; returns their paths."""
    out = pathlib.Path(out)
    rec = dict(record)
    rec["rows"] = [{k: v for k, v in r.items()} for r in record["rows"]]
    files.write_json(rec, out.with_suffix(".json"))
    files.atomic_write(out.with_suffix(".md"), markdown(record))
    plotting.save_figure(figure(record), out.with_suffix(".png"))
    return [str(out.with_suffix(s)) for s in (".json", ".md", ".png")]
