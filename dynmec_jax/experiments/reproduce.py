"""The reproduction of Section V (Figs. 4-12, Table I) as one resumable program.

:func:`run` does, in order, each stage skipping work already stored under
``workdir``:

1. **Allocators** (Section IV.A-B): ``cfg.allocator.n_seeds`` MoE allocators
   trained side by side with progressive shrinking on the default system
   (:func:`dynmec_jax.train.allocator.train_and_evaluate`, orbax-resumable), and
   as many static models (Section V.A).  Sweep seed ``s`` uses allocator seed
   ``s % n_seeds``: the allocator is trained once, on the default
   distribution, and shared by every sweep point (the paper trains one
   allocation model and deploys it under every condition).
2. **Fig. 4** from the allocators' evaluation against the optimum.
3. **Fig. 12**: :func:`dynmec_jax.experiments.fig12.training_cost` per (case,
   method, seed), one result record each.
4. **Sweeps** (Figs. 5-11): one :func:`dynmec_jax.sweep.run_sweep` over the
   union of the data-amount, task-complexity and server-power axes (same
   shapes: one compiled program, ``vmap`` over points x seeds, sharded over
   the devices), and one per number of users N (a new shape each).  Every
   item (point, seed) pre-trains the three policies of Section V.A (full,
   fix width, fix depth; Algorithm 1, lines 2-6), evaluates the V.A methods
   with every task offloaded, then trains PMRL (Algorithm 1 from the
   pre-trained policy), RL (the scheduler with the largest fixed allocator)
   and DROO, and evaluates the V.B methods on scenarios where users have
   computing power.  All methods of an item see the same held-out scenarios.
   Then **the certified optimum** of each item's first held-out scenarios, on
   the host (:mod:`~dynmec_jax.experiments.optimum`).
5. **Figures** (``results/fig*.png`` + ``.json``, :mod:`~dynmec_jax.experiments.figures`),
   ``results/claims.md`` (the claims of :mod:`dynmec_jax.experiments.claims`),
   ``results/summary.json`` and ``results/README.md``
   (:mod:`~dynmec_jax.experiments.report`).

What one sweep item computes is in :mod:`dynmec_jax.experiments.sections`.

Units: SI inside; figures show ms, kbit, GHz, MMACs (labelled).
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
from absl import logging

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import files, sweep
from dynmec_jax.experiments import claims, fig12, figures, optimum, report, sections
from dynmec_jax.experiments.config import ReproduceConfig
from dynmec_jax.experiments.names import AXES
from dynmec_jax.store import ResultStore
from dynmec_jax.train import allocator as train_allocator


def _load_seeds(workdir: pathlib.Path, n: int) -> list:
    return [allocator_lib.load_allocator(workdir / "seeds" / f"seed_{i}") for i in range(n)]


def _allocator_configs(cfg: ReproduceConfig) -> tuple:
    return (("moe", cfg.allocator), ("static", cfg.static_allocator()))


def allocators_ready(cfg: ReproduceConfig, workdir) -> bool:
    """Whether the MoE and static allocators of ``cfg`` are trained under ``workdir``."""
    return all(train_allocator.finished(c, pathlib.Path(workdir) / f"allocator_{name}")
               for name, c in _allocator_configs(cfg))


def claim_allocator_workdirs(cfg: ReproduceConfig, workdir) -> None:
    """Records the allocator configs under ``workdir``; ``ValueError`` (before any compute)
    if it holds allocators trained with other configs."""
    for name, c in _allocator_configs(cfg):
        files.claim_workdir(c, pathlib.Path(workdir) / f"allocator_{name}")


def train_allocators(cfg: ReproduceConfig, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Trains (or resumes) the MoE and static allocators; returns their records and models.

    Returns ``{"moe": record, "static": record, "moe_models": [...],
    "static_models": [...]}``.
    """
    out = {}
    for name, c in _allocator_configs(cfg):
        wd = pathlib.Path(workdir) / f"allocator_{name}"
        if train_allocator.finished(c, wd):
            rec = files.read_json(wd / "allocator_eval.json")
            logging.info("allocators %s: reusing %s", name, wd)
        else:
            t0 = time.perf_counter()
            rec = train_allocator.train_and_evaluate(c, wd, progress=progress)
            logging.info("allocators %s: %.1f s", name, time.perf_counter() - t0)
        out[name] = rec
        out[f"{name}_models"] = _load_seeds(wd, c.n_seeds)
    return out


def stack_allocators(models: list):
    """Stacks allocators of one architecture along a new leading axis (a pytree).

    The static ``record`` (JSON text) of the first is kept for all.
    """
    models = [m.replace(record=models[0].record) for m in models]
    return jax.tree.map(lambda *a: jnp.stack(a), *models)


def sweep_points(cfg: ReproduceConfig) -> list[dict]:
    """The distinct points of the shared-shape sweep (the union of the three axes)."""
    default = sections.default_point(cfg)
    points = []
    for a in AXES:
        for v in getattr(cfg.sweeps, a):
            p = dict(default, **{a: float(v)})
            if p not in points:
                points.append(p)
    return points


def run_sweeps(cfg: ReproduceConfig, store: ResultStore, allocs: dict, progress: bool = True,
               mesh=None) -> dict:
    """Runs (or resumes) the sweeps of Figs. 5-11; returns ``{"main": records, n: records}``."""
    conf = files.to_jsonable(cfg)
    moe_stack = stack_allocators(allocs["moe_models"])
    static_stack = stack_allocators(allocs["static_models"])
    n_alloc = len(allocs["moe_models"])
    seeds = list(cfg.seeds)
    n_default = cfg.system.n_users

    def compute_for(n, drop=()):
        # One compiled program per method family (sections.make_stages), not one monolith.
        return sections.staged_compute(
            sections.make_stages(cfg, n, moe_stack, static_stack, n_alloc), drop,
            stacks=(moe_stack, static_stack), map_stages=sections.map_on_one_device(mesh))

    out = {"main": sweep.run_sweep(store, "sweep_main", sweep_points(cfg), seeds,
                                   compute_for(n_default), config=conf, mesh=mesh,
                                   chunk_size=cfg.chunk_size, progress=progress)}
    default_recs = [r for r in out["main"] if r["point"] == sections.default_point(cfg)]
    for n in cfg.sweeps.n_users:
        if n == n_default:  # the Table II point of the main sweep (same program, same item)
            out[n] = default_recs
            continue
        out[n] = sweep.run_sweep(store, f"sweep_n{n}", [{"n_users_point": float(n)}], seeds,
                                 compute_for(n, ("n_users_point",)), config=conf, mesh=mesh,
                                 chunk_size=cfg.chunk_size, progress=progress)
    return out


def run_sweeps_in(cfg: ReproduceConfig, workdir, dump=None) -> int:
    """The sweeps of Figs. 5-11 alone (``dynmec-sweep``): trains the allocators under
    ``workdir`` if missing, runs (or resumes) the sweeps into ``workdir/store``, and with
    ``dump`` writes every stored number as one JSON object (``"figure/point/seed_k/name"``
    keys, for comparing runs).  Returns the number of records."""
    workdir = pathlib.Path(workdir)
    allocs = train_allocators(cfg, workdir)
    sweeps = run_sweeps(cfg, ResultStore(workdir / "store"), allocs)
    if dump is not None and jax.process_index() == 0:
        flat = {f"{r['figure']}/{r['point_key']}/seed_{r['seed']}/{k}": v
                for recs in sweeps.values() for r in recs for k, v in r["result"].items()}
        files.atomic_write(dump, files.dumps(flat, sort_keys=True, indent=0))
    return sum(len(v) for v in sweeps.values())


def run(cfg: ReproduceConfig, workdir, results_dir, progress: bool = True, mesh=None,
        optimum_workers: int = 1) -> dict:
    """Runs (or resumes) the whole reproduction; writes figures, claims and README.

    ``workdir`` holds the resumable state (allocator checkpoints, the result
    store); ``results_dir`` receives ``fig*.png``/``.json``, ``claims.md``,
    ``summary.json``, ``config.json`` and ``README.md``.  ``optimum_workers``:
    processes solving the certified optimum (the launcher: one per CPU core;
    :func:`dynmec_jax.experiments.optimum.solve_records`).  Returns the summary.
    """
    t_start = time.perf_counter()
    workdir = pathlib.Path(workdir)
    results_dir = pathlib.Path(results_dir)
    store = ResultStore(workdir / "store")
    store.check_writable()
    results_dir.mkdir(parents=True, exist_ok=True)
    times = {}

    t0 = time.perf_counter()
    allocs = train_allocators(cfg, workdir, progress)
    times["allocators"] = time.perf_counter() - t0
    fig04 = figures.fig04_data(allocs["moe"])

    t0 = time.perf_counter()
    fig12_data = fig12.data(cfg.fig12, fig12.run(cfg.fig12_allocator(), cfg.fig12, store,
                                                 progress))
    times["fig12"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sweeps = run_sweeps(cfg, store, allocs, progress, mesh)
    times["sweeps"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if jax.process_index() == 0:
        sweeps["optima"] = optimum.solve_records(cfg, store, sweeps, progress,
                                                   optimum_workers)
    times["optimum"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tabs = figures.tables(cfg, sweeps)
    names = figures.write_figures(cfg, tabs, fig04, fig12_data, results_dir)
    rows = claims.evaluate(cfg, tabs, fig04, fig12_data)
    times["figures"] = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    # Times summed over every invocation that built this workdir (a rerun after a kill,
    # or one that only redraws the figures, adds to them), so they stay true on reuse.
    tfile = workdir / "timings.json"
    prev = report.read_timings(tfile, list(times))
    total = {"invocations": prev["invocations"] + 1,
             "wall_time_s": prev["wall_time_s"] + wall,
             "peak_rss_mb": max(prev["peak_rss_mb"], report.peak_rss_mb()),
             "stage_wall_time_s": {k: prev["stage_wall_time_s"].get(k, 0.0) + v
                                   for k, v in times.items()}}
    files.write_json(total, tfile, indent=1)
    summary = {
        "preset": cfg.preset, "seeds": list(cfg.seeds), "figures": names,
        "stage_wall_time_s": times, "wall_time_s": wall, "all_invocations": total,
        "peak_rss_mb": report.peak_rss_mb(), "machine": report.machine(),
        "versions": files.versions(),
        "allocator": {k: allocs["moe"][k] for k in ("max_gap_all", "max_gap_random",
                                                    "full_gap_all", "steps")},
        "static_allocator": {k: allocs["static"][k] for k in ("full_gap_all", "steps")},
        "claims": {s: sum(r["status"] == s for r in rows) for s in claims.STATUSES},
    }
    header = (f"# Claims of Section V, checked against the `{cfg.preset}` run\n\n"
              "Each row is a statement of the paper's Section V (or Table I); status "
              "**reproduced** when every check holds at every swept point (means over seeds), "
              "**partly** when at least half do, else **not reproduced**.  Numbers in the "
              "figures' units (delays in ms unless marked).  Generated by "
              "`dynmec_jax/experiments/claims.py` from the stored records.")
    files.atomic_write(results_dir / "claims.md", claims.markdown(rows, header))
    files.write_json({"rows": rows}, results_dir / "claims.json")
    files.write_json(summary, results_dir / "summary.json")
    files.write_json(cfg, results_dir / "config.json", indent=1)
    files.atomic_write(results_dir / "README.md", report.results_readme(cfg, summary))
    return summary
