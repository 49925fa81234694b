"""Figure data of Section V: Fig. 4 and 12 from their records, the sweep tables of Figs. 5-11.

:func:`tables` turns the stored sweep records into per-axis tables of means
and 95% CIs over seeds; :func:`write_figures` draws every figure
(:mod:`dynmec_jax.plotting`) with its numbers beside it (JSON).  Units: SI in
the tables; the figures show ms, kbit, GHz and MMACs (labelled).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from dynmec_jax import files, methods, plotting, stats
from dynmec_jax.evaluation import METRICS
from dynmec_jax.experiments import optimum, sections
from dynmec_jax.experiments.names import AXES, LABEL_SERIES, PANEL_ORDER
from dynmec_jax.experiments.sections import REGRET, ItemResult

#: The neural-network allocators of Section V.A (Figs. 10, 11).
NN_METHODS = methods.names((methods.POLICY_MOE, methods.FIX_WIDTH_MOE, methods.FIX_DEPTH_MOE,
                            methods.FIX_MOE, methods.STATIC))


def fig04_data(moe_record: dict) -> dict:
    """Fig. 4 numbers from the allocator evaluation record (all tasks offloaded).

    ``wd``: importance-weighted delay sum (Eq. 18-20 objective, dimensionless)
    per (width, depth), mean and 95% CI over allocator seeds; ``wd_infer``:
    the same with the inference delay lambda M_Alloc / f_ser added to every
    task's delay (Fig. 4(b)); ``optimal_wd``: the KKT optimum's.
    """
    per = moe_record["per_seed"]
    wd = np.asarray([r["all"]["weighted_delay"] for r in per])        # (S, K, L)
    wdi = np.asarray([r["all"]["weighted_delay_infer"] for r in per])
    gap = np.asarray([r["all"]["gap"] for r in per])
    opt = [r["all"]["optimal_weighted_delay"] for r in per]

    def agg(a):
        cells = [[stats.mean_ci(a[:, k, d]) for d in range(a.shape[2])]
                 for k in range(a.shape[1])]
        return {"mean": [[c["mean"] for c in row] for row in cells],
                "ci": [[c["ci"] for c in row] for row in cells]}

    K, L = wd.shape[1:]
    return {"width": list(range(1, K + 1)), "depth": list(range(1, L + 1)),
            "wd": agg(wd), "wd_infer": agg(wdi), "gap": agg(gap),
            "optimal_wd": float(np.mean(opt)), "n_seeds": len(per),
            "inference_delay_s": per[0]["all"]["inference_delay_s"]}


#: Axis display: label, scale from SI to the plotted unit.
AXIS_LABELS = {"size_avg": ("Average data amount s_avg [kbit]", 1e-3),
               "workload_avg": ("Average task complexity c_avg [cycles/bit]", 1.0),
               "n_users": ("Number of tasks N", 1.0),
               "f_server": ("Server computing power f_ser [GHz]", 1e-9)}


def _axis_points(cfg, sweeps: dict, axis: str) -> list[tuple[float, dict]]:
    """``[(x, record)]`` of one x-axis (x in SI), every seed's record (its result merged
    with the certified optimum's where solved, :func:`optimum.merged`)."""
    optima = sweeps.get("optima", {})

    def with_opt(r):
        return dict(r, result=optimum.merged(r, optima))

    if axis == "n_users":
        return [(float(n), with_opt(r)) for n in cfg.sweeps.n_users for r in sweeps[n]]
    default = sections.default_point(cfg)
    return [(r["point"][axis], with_opt(r)) for r in sweeps["main"]
            if all(math.isclose(r["point"][a], default[a], rel_tol=1e-9)
                   for a in AXES if a != axis)]


def axis_records(cfg, sweeps: dict, section: str, axis: str) -> list[dict]:
    """Records of one x-axis in :func:`dynmec_jax.plotting.sweep_table` form.

    ``section``: "va" or "vb"; ``axis``: a field of :data:`AXES` or
    "n_users".  Returns ``[{"method", "x", "seed", "metrics"}]`` with x in SI,
    methods in the registry's order; a method stored only at some points
    (the Optimum at N <= 12) appears where it was stored.
    """
    out = []
    for x, r in _axis_points(cfg, sweeps, axis):
        res = getattr(ItemResult.from_flat(r["result"]), section)
        for m in methods.section(section):
            if m.name in res:
                out.append({"method": m.name, "x": x, "seed": r["seed"],
                            "metrics": res[m.name]._asdict()})
    return out


def policy_table(cfg, sweeps: dict, axis: str) -> dict:
    """The policy's Eq. 28 regret and labels along one axis, in ``sweep_table`` form.

    Series ``va`` (PolicyMoE, all tasks offloaded) and ``vb`` (PMRL's
    offload sets); metrics :data:`~dynmec_jax.experiments.sections.REGRET`
    (:func:`dynmec_jax.evaluation.policy_regret`).
    """
    recs = []
    for x, r in _axis_points(cfg, sweeps, axis):
        pol = ItemResult.from_flat(r["result"]).policy
        for sec in ("va", "vb"):
            if sec in pol:
                recs.append({"method": sec, "x": x, "seed": r["seed"], "metrics": pol[sec]})
    return {k: plotting.sweep_table(recs, k) for k in REGRET}


def gap_table(cfg, sweeps: dict, axis: str) -> dict:
    """Every Section V.B method's relative gap to the certified optimum along one axis
    (:func:`dynmec_jax.experiments.optimum.gaps`, per seed), in ``sweep_table`` form."""
    recs = [{"method": m, "x": x, "seed": r["seed"], "metrics": {"gap": g}}
            for x, r in _axis_points(cfg, sweeps, axis)
            for m, g in optimum.gaps(r["result"]).items()]
    order = [m.name for m in methods.section("vb")]
    recs.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    return plotting.sweep_table(recs, "gap")


def tables(cfg, sweeps: dict) -> dict:
    """``{section: {axis: {metric: sweep_table}}}`` for sections "va", "vb", "policy"
    (``{axis: policy_table}``) and "gap" (``{axis: gap_table}``)."""
    out = {sec: {ax: {k: plotting.sweep_table(axis_records(cfg, sweeps, sec, ax), k)
                      for k in METRICS}
                 for ax in PANEL_ORDER}
           for sec in ("va", "vb")}
    out["policy"] = {ax: policy_table(cfg, sweeps, ax) for ax in PANEL_ORDER}
    out["gap"] = {ax: gap_table(cfg, sweeps, ax) for ax in PANEL_ORDER}
    return out


def _panels(tab: dict, section: str, metric: str, y_scale: float) -> list[dict]:
    """Figure panels of Figs. 5-9: the section's plotted methods (registry order)."""
    shown = [m.name for m in methods.section(section) if m.plotted]
    return [{"xlabel": AXIS_LABELS[ax][0], "x_scale": AXIS_LABELS[ax][1], "y_scale": y_scale,
             "letter": "abcd"[i], "table": _select(tab[ax][metric], shown)}
            for i, ax in enumerate(PANEL_ORDER)]


def _select(table: dict, methods) -> dict:
    return {"x": table["x"], "series": {m: table["series"][m] for m in methods
                                        if m in table["series"]}}


FIGURES = {
    # name: (section, metric, ylabel, y_scale, yscale, right axis for the registry's)
    "fig05_delay": ("va", "delay", "Average service delay [ms]", 1e3, "linear", True),
    "fig06_miss_ratio": ("va", "miss_ratio", "Deadline miss ratio", 1.0, "linear", True),
    "fig07_delay_joint": ("vb", "delay", "Average service delay [ms]", 1e3, "linear", True),
    "fig08_miss_ratio_joint": ("vb", "miss_ratio", "Deadline miss ratio", 1.0, "linear", True),
    "fig09_energy_joint": ("vb", "energy", "User-side energy per scenario [J]", 1.0, "log",
                           False),
}


def _right_axis(section: str) -> tuple[str, ...]:
    return tuple(m.name for m in methods.section(section) if m.right_axis)


def write_figures(cfg, tabs: dict, fig04: dict, fig12: dict, out: pathlib.Path) -> list[str]:
    """Writes every figure (PNG) with its numbers (JSON) into ``out``; returns the names."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    plotting.plot_fig04(fig04, out / "fig04_model_size.png")
    files.write_json(fig04, out / "fig04_model_size.json")
    names.append("fig04_model_size")
    styles = methods.styles()
    for name, (sec, metric, ylabel, ys, scale, right) in FIGURES.items():
        panels = _panels(tabs[sec], sec, metric, ys)
        plotting.plot_sweep(panels, out / f"{name}.png", ylabel,
                            right_axis_methods=_right_axis(sec) if right else (), yscale=scale,
                            styles=styles)
        data = {"metric": metric, "unit_scale": ys, "ylabel": ylabel,
                "panels": [{k: v for k, v in p.items()} for p in panels]}
        if name == "fig05_delay":   # the allocator's own objective beside the mean delay
            data["weighted_delay_panels"] = _panels(tabs[sec], sec, "weighted_delay", 1.0)
        files.write_json(data, out / f"{name}.json")
        names.append(name)
    t10 = _select(tabs["va"]["size_avg"]["allocator_macs"], NN_METHODS + (methods.ORACLE.name,))
    t10["series"][LABEL_SERIES] = t10["series"].pop(methods.ORACLE.name)
    plotting.plot_bars(t10, out / "fig10_macs.png", "Allocation model MACs [M]",
                       AXIS_LABELS["size_avg"][0], y_scale=1e-6, x_scale=1e-3, styles=styles)
    files.write_json({"metric": "allocator_macs", "unit": "MACs", "table": t10},
                     out / "fig10_macs.json")
    t11 = _select(tabs["va"]["size_avg"]["inference_share"], NN_METHODS)
    plotting.plot_bars(t11, out / "fig11_inference_share.png", "Inference delay share [%]",
                       AXIS_LABELS["size_avg"][0], y_scale=100.0, x_scale=1e-3, styles=styles)
    files.write_json({"metric": "inference_share", "unit": "fraction", "table": t11},
                     out / "fig11_inference_share.json")
    names += ["fig10_macs", "fig11_inference_share"]
    gap_panels = [{"xlabel": AXIS_LABELS[ax][0], "x_scale": AXIS_LABELS[ax][1], "y_scale": 100.0,
                   "letter": "abcd"[i], "table": tabs["gap"][ax]}
                  for i, ax in enumerate(PANEL_ORDER)]
    plotting.plot_sweep(gap_panels, out / "gap_to_optimum.png",
                        "sum_i C_i above the certified optimum [%]", right_axis_methods=(),
                        yscale="symlog", styles=styles,
                        title="Section V.B: each method's gap to the certified optimum")
    files.write_json({"metric": "gap", "unit_scale": 100.0, "panels": gap_panels},
                     out / "gap_to_optimum.json")
    names.append("gap_to_optimum")
    plotting.plot_fig12(fig12, out / "fig12_training_cost.png")
    files.write_json(fig12, out / "fig12_training_cost.json")
    names.append("fig12_training_cost")
    return names
