"""A sweep over any field of ``SystemParams``: Section V.B methods against one parameter.

``launch/sweep.py --axis=beta --values=0,0.001,0.01,0.1,1,10`` runs
:func:`run_axis` over the points ``{field: value}`` with the other fields at
the run's defaults (Table II and ``cfg.allocator.system``): one compiled
program (:func:`dynmec_jax.experiments.sections.make_item`, ``vmap``-ed over
points and seeds, sharded over the devices), stored per (point, seed) in the
run's result store under ``axis_<field>`` (resumable).  :func:`axis_table`
aggregates the stored records (mean and 95% t-CI over seeds) and
:func:`write_axis` draws the delay and energy panels and writes their numbers
(JSON).  The number of users changes shapes and has its own sweep (Fig. 7(c)).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import jax
import numpy as np

from dynmec_jax import files, methods, plotting, sweep, system
from dynmec_jax.experiments import optimum, reproduce, sections
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.store import ResultStore

#: The methods of a study when none are named: the learned pipeline and the baselines
#: a reader compares it with (the beta study of docs/reproduction.md).
DEFAULT_METHODS = methods.names((methods.PMRL, methods.GREEDY, methods.RAND, methods.LOCAL))


def check_axis(field: str, values, base: system.SystemParams) -> list[float]:
    """The swept values as floats; ``ValueError`` (one line) for an unknown or unsweepable
    field, a value that is not a finite number, or one that makes the system invalid."""
    names = [f.name for f in dataclasses.fields(system.SystemParams)]
    if field not in names:
        raise ValueError(f"--axis: unknown SystemParams field {field!r} (fields: "
                         f"{', '.join(n for n in names if n != 'n_users')})")
    if field == "n_users":
        raise ValueError("--axis: n_users changes array shapes; its sweep is the config's "
                         "sweeps.n_users (Fig. 7(c))")
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"--values: {v!r} is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"--values: {v!r} is not finite")
        try:
            system.validate(base.replace(**{field: x}))
        except ValueError as e:
            raise ValueError(f"--values: {field}={v}: {e}") from None
        out.append(x)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--values must be distinct numbers, got {list(values)}")
    return out


def check_methods(chosen) -> tuple[str, ...]:
    """The requested Section V.B methods (registry names); ``ValueError`` naming an unknown
    one."""
    chosen = tuple(chosen) or DEFAULT_METHODS
    for m in chosen:
        try:
            methods.get("vb", m)
        except ValueError as e:
            raise ValueError(f"--methods: {e}") from None
    return chosen


def run_axis(cfg: ReproduceConfig, store: ResultStore, allocs: dict, field: str,
             values: list[float], chosen: tuple[str, ...], progress: bool = True,
             mesh=None) -> list[dict]:
    """Runs (or resumes) the sweep of ``field`` over ``values``; returns its records."""
    moe_stack = reproduce.stack_allocators(allocs["moe_models"])
    item = sections.make_item(cfg, cfg.system.n_users, moe_stack, None,
                              len(allocs["moe_models"]), chosen=chosen)
    conf = {"config": files.to_jsonable(cfg), "axis": field, "methods": list(chosen)}
    return sweep.run_sweep(store, f"axis_{field}", [{field: v} for v in values],
                           list(cfg.seeds), jax.vmap(item), config=conf, mesh=mesh,
                           chunk_size=cfg.chunk_size, progress=progress)


def axis_table(records: list[dict], field: str, chosen: tuple[str, ...],
               optima: dict | None = None) -> dict:
    """``{metric: sweep_table}`` of the records (x = the field's value, SI units); with the
    certified optimum's records (:func:`dynmec_jax.experiments.optimum.solve_records`) also
    the Optimum and, under ``"gap"``, every method's gap to it."""
    rows, gaps = [], []
    for r in records:
        res = optimum.merged(r, optima or {})
        vb = sections.ItemResult.from_flat(res).vb
        rows += [{"method": m, "x": r["point"][field], "seed": r["seed"],
                  "metrics": vb[m]._asdict()} for m in chosen if m in vb]
        gaps += [{"method": m, "x": r["point"][field], "seed": r["seed"],
                  "metrics": {"gap": g}} for m, g in optimum.gaps(res).items() if m in chosen]
    out = {k: plotting.sweep_table(rows, k)
           for k in ("delay", "energy", "miss_ratio", "cost", "offload_fraction")}
    if gaps:
        out["gap"] = plotting.sweep_table(gaps, "gap")
    return out


def write_axis(tables: dict, field: str, out_dir: pathlib.Path) -> list[str]:
    """``axis_<field>.png`` (delay and energy panels) and ``axis_<field>.json``."""
    xs = np.asarray(tables["delay"]["x"])
    positive = xs[xs > 0]
    log = positive.size > 1 and positive.max() / positive.min() >= 100
    panels = [{"xlabel": field, "table": tables["delay"], "y_scale": 1e3,
               "ylabel": "Mean delay [ms]", "title": "Delay", "letter": "a"},
              {"xlabel": field, "table": tables["energy"], "ylabel": "User energy per scenario [J]",
               "title": "User energy (sum over the tasks)", "letter": "b", "yscale": "log"}]
    if log:
        for p in panels:   # symlog keeps 0 on the axis next to the log-spaced values
            p.update(xscale="symlog", linthresh=float(positive.min()))
    png = plotting.plot_sweep(panels, out_dir / f"axis_{field}.png", ylabel="",
                              right_axis_methods=(), title=f"Section V.B methods against {field}",
                              styles=methods.styles())
    js = files.write_json({"field": field, "unit": "SI", "metrics": tables},
                          out_dir / f"axis_{field}.json")
    return [png, js]


def run_study(cfg: ReproduceConfig, workdir, field: str, values: list[float],
              chosen: tuple[str, ...], results, optimum_workers: int = 1
              ) -> tuple[int, list[str]]:
    """A study of one field (``dynmec-sweep --axis``): the allocators under ``workdir``
    (trained if missing), the sweep (:func:`run_axis`), and on process 0 the figure and
    JSON in ``results`` (:func:`write_axis`; the certified optimum in ``optimum_workers``
    processes, :func:`dynmec_jax.experiments.optimum.solve_records`).  Returns
    ``(records, files written)``."""
    workdir = pathlib.Path(workdir)
    allocs = reproduce.train_allocators(cfg, workdir)
    store = ResultStore(workdir / "store")
    records = run_axis(cfg, store, allocs, field, values, chosen)
    written = []
    if jax.process_index() == 0:
        optima = (optimum.solve_records(cfg, store, {"axis": records},
                                        workers=optimum_workers)
                  if methods.OPTIMUM.name in chosen else None)
        written = write_axis(axis_table(records, field, chosen, optima), field,
                             pathlib.Path(results))
    return len(records), written
