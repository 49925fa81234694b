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

from dynmec_jax import files, plotting
from dynmec_jax.experiments import sections
from dynmec_jax.experiments.names import (
    AXES,
    LABEL_SERIES,
    METRICS,
    NN_METHODS,
    NOT_PLOTTED,
    PANEL_ORDER,
    VA_METHODS,
    VB_METHODS,
    VB_OPTIMUM,
)


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
        cells = [[plotting.aggregate(a[:, k, d]) for d in range(a.shape[2])]
                 for k in range(a.shape[1])]
        return {"mean": [[c["mean"] for c in row] for row in cells],
                "ci": [[c["ci"] for c in row] for row in cells]}

    K, L = wd.shape[1:]
    return {"width": list(range(1, K + 1)), "depth": list(range(1, L + 1)),
            "wd": agg(wd), "wd_infer": agg(wdi), "gap": agg(gap),
            "optimal_wd": float(np.mean(opt)), "n_seeds": len(per),
            "inference_delay_s": per[0]["all"]["inference_delay_s"]}


def fig12_data(cfg, records: list[dict]) -> dict:
    """Fig. 12 numbers: steps and wall time per case and method, mean and 95% CI over seeds."""
    f = cfg.fig12
    out = {"cases": list(f.cases), "target": f.target, "seeds": list(f.seeds)}
    for mi, method in enumerate(("progressive", "traditional")):
        d = {}
        for field, name in (("steps", "steps"), ("wall_time_s", "seconds")):
            cells = [plotting.aggregate([r["result"][field] for r in records
                                         if r["point"] == {"case": ci, "method": mi}])
                     for ci in range(len(f.cases))]
            d[name] = {"mean": [c["mean"] for c in cells], "ci": [c["ci"] for c in cells]}
        d["reached"] = [all(r["result"]["reached"] for r in records
                            if r["point"] == {"case": ci, "method": mi})
                        for ci in range(len(f.cases))]
        out[method] = d
    return out


#: Axis display: label, scale from SI to the plotted unit.
AXIS_LABELS = {"size_avg": ("Average data amount s_avg [kbit]", 1e-3),
               "workload_avg": ("Average task complexity c_avg [cycles/bit]", 1.0),
               "n_users": ("Number of tasks N", 1.0),
               "f_server": ("Server computing power f_ser [GHz]", 1e-9)}


def _axis_points(cfg, sweeps: dict, axis: str) -> list[tuple[float, dict]]:
    """``[(x, record)]`` of one x-axis (x in SI), every seed's record."""
    if axis == "n_users":
        return [(float(n), r) for n in cfg.sweeps.n_users for r in sweeps[int(n)]]
    sp = sections.base_params(cfg)
    default = {a: float(getattr(sp, a)) for a in AXES}
    return [(r["point"][axis], r) for r in sweeps["main"]
            if all(math.isclose(r["point"][a], default[a], rel_tol=1e-9)
                   for a in AXES if a != axis)]


def axis_records(cfg, sweeps: dict, section: str, axis: str) -> list[dict]:
    """Records of one x-axis in :func:`dynmec_jax.plotting.sweep_table` form.

    ``section``: "va" or "vb"; ``axis``: a field of :data:`AXES` or
    "n_users".  Returns ``[{"method", "x", "seed", "metrics"}]`` with x in SI.
    Methods stored only at some points (the V.B exhaustive "Optimum", N <=
    12) appear where they were stored.
    """
    methods = VA_METHODS if section == "va" else VB_METHODS + (VB_OPTIMUM,)
    out = []
    for x, r in _axis_points(cfg, sweeps, axis):
        res = r["result"]
        for m in methods:
            if f"{section}/{m}/{METRICS[0]}" not in res:
                continue
            out.append({"method": m, "x": x, "seed": r["seed"],
                        "metrics": {k: res[f"{section}/{m}/{k}"] for k in METRICS}})
    return out


def policy_table(cfg, sweeps: dict, axis: str) -> dict:
    """The policy's Eq. 28 regret and labels along one axis, in ``sweep_table`` form.

    Series ``va`` (PolicyMoE, all tasks offloaded) and ``vb`` (PMRL's
    offload sets); metrics ``regret``, ``label_width``, ``label_depth``,
    ``label_macs`` (:func:`dynmec_jax.evaluation.policy_regret`).
    """
    recs = []
    for x, r in _axis_points(cfg, sweeps, axis):
        for sec in ("va", "vb"):
            recs.append({"method": sec, "x": x, "seed": r["seed"],
                         "metrics": {k: r["result"][f"policy/{sec}/{k}"]
                                     for k in ("regret", "label_width", "label_depth",
                                               "label_macs")}})
    return {k: plotting.sweep_table(recs, k)
            for k in ("regret", "label_width", "label_depth", "label_macs")}


def tables(cfg, sweeps: dict) -> dict:
    """``{section: {axis: {metric: sweep_table}}}`` for sections "va", "vb", and "policy"
    (``{axis: policy_table}``)."""
    out = {sec: {ax: {k: plotting.sweep_table(axis_records(cfg, sweeps, sec, ax), k)
                      for k in METRICS}
                 for ax in PANEL_ORDER}
           for sec in ("va", "vb")}
    out["policy"] = {ax: policy_table(cfg, sweeps, ax) for ax in PANEL_ORDER}
    return out


def _panels(tab: dict, metric: str, y_scale: float) -> list[dict]:
    """Figure panels of Figs. 5-9; the references in :data:`NOT_PLOTTED` are left out."""
    return [{"xlabel": AXIS_LABELS[ax][0], "x_scale": AXIS_LABELS[ax][1], "y_scale": y_scale,
             "letter": "abcd"[i],
             "table": _select(tab[ax][metric], [m for m in tab[ax][metric]["series"]
                                                if m not in NOT_PLOTTED])}
            for i, ax in enumerate(PANEL_ORDER)]


def _select(table: dict, methods) -> dict:
    return {"x": table["x"], "series": {m: table["series"][m] for m in methods
                                        if m in table["series"]}}


FIGURES = {
    # name: (section, metric, ylabel, y_scale, yscale, GA on a right axis)
    "fig05_delay": ("va", "delay", "Average service delay [ms]", 1e3, "linear", True),
    "fig06_miss_ratio": ("va", "miss_ratio", "Deadline miss ratio", 1.0, "linear", True),
    "fig07_delay_joint": ("vb", "delay", "Average service delay [ms]", 1e3, "linear", True),
    "fig08_miss_ratio_joint": ("vb", "miss_ratio", "Deadline miss ratio", 1.0, "linear", True),
    "fig09_energy_joint": ("vb", "energy", "User-side energy per scenario [J]", 1.0, "log",
                           False),
}


def write_figures(cfg, tabs: dict, fig04: dict, fig12: dict, out: pathlib.Path) -> list[str]:
    """Writes every figure (PNG) with its numbers (JSON) into ``out``; returns the names."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    plotting.plot_fig04(fig04, out / "fig04_model_size.png")
    files.write_json(fig04, out / "fig04_model_size.json")
    names.append("fig04_model_size")
    for name, (sec, metric, ylabel, ys, scale, right) in FIGURES.items():
        panels = _panels(tabs[sec], metric, ys)
        plotting.plot_sweep(panels, out / f"{name}.png", ylabel,
                            right_axis_methods=("GA",) if right else (), yscale=scale)
        files.write_json({"metric": metric, "unit_scale": ys, "ylabel": ylabel,
                          "panels": [{k: v for k, v in p.items()} for p in panels]},
                         out / f"{name}.json")
        names.append(name)
    t10 = _select(tabs["va"]["size_avg"]["allocator_macs"], NN_METHODS + ("Oracle",))
    t10["series"][LABEL_SERIES] = t10["series"].pop("Oracle")
    plotting.plot_bars(t10, out / "fig10_macs.png", "Allocation model MACs [M]",
                       AXIS_LABELS["size_avg"][0], y_scale=1e-6, x_scale=1e-3)
    files.write_json({"metric": "allocator_macs", "unit": "MACs", "table": t10},
                     out / "fig10_macs.json")
    t11 = _select(tabs["va"]["size_avg"]["inference_share"], NN_METHODS)
    plotting.plot_bars(t11, out / "fig11_inference_share.png", "Inference delay share [%]",
                       AXIS_LABELS["size_avg"][0], y_scale=100.0, x_scale=1e-3)
    files.write_json({"metric": "inference_share", "unit": "fraction", "table": t11},
                     out / "fig11_inference_share.json")
    names += ["fig10_macs", "fig11_inference_share"]
    plotting.plot_fig12(fig12, out / "fig12_training_cost.png")
    files.write_json(fig12, out / "fig12_training_cost.json")
    names.append("fig12_training_cost")
    return names
