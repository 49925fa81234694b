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
   pre-trained policy) and RL (the scheduler with the largest fixed
   allocator) and evaluates the V.B methods on scenarios where users have
   computing power.  All methods of an item see the same held-out scenarios.
5. **Figures** (``results/fig*.png`` + ``.json``, :mod:`~dynmec_jax.experiments.figures`),
   ``results/claims.md`` (the claims of :mod:`dynmec_jax.experiments.claims`),
   ``results/summary.json`` and ``results/README.md``
   (:mod:`~dynmec_jax.experiments.report`).

What one sweep item computes is in :mod:`dynmec_jax.experiments.sections`.

Units: SI inside; figures show ms, kbit, GHz, MMACs (labelled).
"""

from __future__ import annotations

import copy
import json
import pathlib
import time

import jax
import jax.numpy as jnp
from absl import logging
from tqdm.auto import tqdm

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import files, sweep, system
from dynmec_jax.experiments import claims, fig12, figures, report, sections
from dynmec_jax.experiments.names import (
    AXES,
)
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train import config as train_config


def validate_config(cfg) -> None:
    """Host-side checks of a reproduction config; ``ValueError`` naming the field.

    The allocator and Algorithm 1 settings are checked by building their typed
    configs (:mod:`dynmec_jax.train.config`); the rest is checked here.
    """
    train_config.allocator_config(cfg.allocator)
    seeds = list(cfg.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(int(s) < 0 for s in seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
    for name in AXES + ("n_users",):
        vals = list(cfg.sweeps[name])
        if not vals or any(not v > 0 for v in vals):
            raise ValueError(f"sweeps.{name} must be a non-empty list of positive values, "
                             f"got {vals}")
    if any(int(n) != n or n < 1 for n in cfg.sweeps.n_users):
        raise ValueError("sweeps.n_users must be positive integers, got "
                         f"{list(cfg.sweeps.n_users)}")
    for sec, fields in (("va", ("pretrain_steps", "batch", "eval_batch", "ga_batch",
                                "ga_iters", "ga_pop_factor")),
                        ("vb", ("episodes", "batch", "eval_batch"))):
        for f in fields:
            if int(cfg[sec][f]) < 1:
                raise ValueError(f"{sec}.{f} must be >= 1, got {cfg[sec][f]}")
    if cfg.va.ga_batch > cfg.va.eval_batch or cfg.va.ga_batch > cfg.vb.eval_batch:
        raise ValueError("va.ga_batch must not exceed va.eval_batch and vb.eval_batch")
    for n in cfg.sweeps.n_users:   # the typed configs of Algorithm 1 check the rest
        try:
            sections.train_configs(cfg, int(n))
        except ValueError as e:
            raise ValueError(f"{e} (set in the va/vb sections)") from e
    if int(cfg.static.steps) < 1:
        raise ValueError(f"static.steps must be >= 1, got {cfg.static.steps}")
    train_config.allocator_config(static_config(cfg))
    f12 = cfg.fig12
    for c in f12.cases:
        if c not in ("full", "width", "depth"):
            raise ValueError(f"fig12.cases must be among full/width/depth, got {c!r}")
    if not 0 < f12.target < 1 or int(f12.eval_every) < 1 or int(f12.batch) < 1:
        raise ValueError("fig12.target must be in (0, 1); fig12.eval_every, batch >= 1")
    if int(cfg.chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
    system.validate(system.params_from_overrides(cfg.allocator.system.to_dict()))


def static_config(cfg):
    """The allocator config of the static model (Section V.A): ``model.kind = "static"``."""
    c = copy.deepcopy(cfg.allocator)
    c.model.kind = "static"
    c.train.phase_steps = (int(cfg.static.steps), 0, 0, 0)
    return c


def _load_seeds(workdir: pathlib.Path, n: int) -> list:
    return [allocator_lib.load_allocator(workdir / "seeds" / f"seed_{i}") for i in range(n)]


def allocators_ready(cfg, workdir) -> bool:
    """Whether the MoE and static allocators of ``cfg`` are trained under ``workdir``."""
    workdir = pathlib.Path(workdir)
    return all((workdir / f"allocator_{name}" / "allocator_eval.json").is_file()
               and all((workdir / f"allocator_{name}" / "seeds" / f"seed_{i}" / "params.msgpack")
                       .is_file() for i in range(int(c.n_seeds)))
               for name, c in (("moe", cfg.allocator), ("static", static_config(cfg))))


def claim_allocator_workdirs(cfg, workdir) -> None:
    """Records the allocator configs under ``workdir``; ``ValueError`` (before any compute)
    if it holds allocators trained with other configs."""
    for name, c in (("moe", cfg.allocator), ("static", static_config(cfg))):
        files.claim_workdir(c, pathlib.Path(workdir) / f"allocator_{name}")


def train_allocators(cfg, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Trains (or resumes) the MoE and static allocators; returns their records and models.

    Returns ``{"moe": record, "static": record, "moe_models": [...],
    "static_models": [...], "moe_wall_s", "static_wall_s"}``.
    """
    out = {}
    for name, c in (("moe", cfg.allocator), ("static", static_config(cfg))):
        wd = workdir / f"allocator_{name}"
        done = wd / "allocator_eval.json"
        n = int(c.n_seeds)
        files.claim_workdir(c, wd)  # a different config in wd raises ValueError
        if done.is_file() and all((wd / "seeds" / f"seed_{i}" / "params.msgpack").is_file()
                                  for i in range(n)):
            rec = json.loads(done.read_text())
            logging.info("allocators %s: reusing %s", name, wd)
        else:
            t0 = time.perf_counter()
            rec = train_allocator.train_and_evaluate(c, wd, progress=progress)
            logging.info("allocators %s: %.1f s", name, time.perf_counter() - t0)
        out[name] = rec
        out[f"{name}_models"] = _load_seeds(wd, n)
    return out


def stack_allocators(models: list):
    """Stacks allocators of one architecture along a new leading axis (a pytree).

    The static ``record`` (JSON text) of the first is kept for all.
    """
    models = [m.replace(record=models[0].record) for m in models]
    return jax.tree.map(lambda *a: jnp.stack(a), *models)


def fig12_config(cfg):
    """The allocator config used for the training-cost runs (``fig12.batch``)."""
    c = copy.deepcopy(cfg.allocator)
    c.train.batch = int(cfg.fig12.batch)
    return c


def run_fig12(cfg, store: sweep.ResultStore, progress: bool = True) -> list[dict]:
    """Training cost (Fig. 12) per (case, method, seed); each a stored record."""
    f = cfg.fig12
    c = fig12_config(cfg)
    conf = {"allocator": c.to_dict(), "fig12": f.to_dict()}
    items = [(ci, mi, s) for ci in range(len(f.cases)) for mi in range(2) for s in f.seeds]
    records = []
    for ci, mi, s in tqdm(items, desc="Fig. 12 training cost", unit="run", disable=not progress):
        point = {"case": ci, "method": mi}
        rec = store.try_read("fig12", point, s)
        if rec is None or rec.get("config") != files.to_jsonable(conf):
            t0 = time.perf_counter()
            r = fig12.training_cost(train_config.allocator_config(c), sections.base_params(cfg),
                                    f.cases[ci], ("progressive", "traditional")[mi], s,
                                    target=f.target, eval_every=f.eval_every,
                                    max_steps=f.max_steps, eval_batch=f.eval_batch,
                                    eval_seed=int(c.eval.seed))
            rec = store.write("fig12", point, s,
                              {"steps": r["steps"], "wall_time_s": r["wall_time_s"],
                               "reached": float(r["reached"]),
                               "final_max_gap": r["final_max_gap"]},
                              config=conf, wall_time_s=time.perf_counter() - t0,
                              extra={"stages": r["stages"]})
            logging.info("Fig. 12 %s %s seed %d: %d steps, %.1f s", f.cases[ci],
                         ("progressive", "traditional")[mi], s, r["steps"], r["wall_time_s"])
        records.append(rec)
    return records


def sweep_points(cfg) -> list[dict]:
    """The distinct points of the shared-shape sweep (the union of the three axes)."""
    default = sections.default_point(cfg)
    points = []
    for a in AXES:
        for v in cfg.sweeps[a]:
            p = dict(default, **{a: float(v)})
            if p not in points:
                points.append(p)
    return points


def run_sweeps(cfg, store: sweep.ResultStore, allocs: dict, progress: bool = True,
               mesh=None) -> dict:
    """Runs (or resumes) the sweeps of Figs. 5-11; returns ``{"main": records, n: records}``."""
    conf = files.to_jsonable(cfg.to_dict())
    moe_stack = stack_allocators(allocs["moe_models"])
    static_stack = stack_allocators(allocs["static_models"])
    n_alloc = len(allocs["moe_models"])
    seeds = [int(s) for s in cfg.seeds]
    n_default = sections.base_params(cfg).n_users

    def compute_for(n):
        item = sections.make_item(cfg, n, moe_stack, static_stack, n_alloc)
        return jax.vmap(item)

    out = {"main": sweep.run_sweep(store, "sweep_main", sweep_points(cfg), seeds,
                                   compute_for(n_default), config=conf, mesh=mesh,
                                   chunk_size=int(cfg.chunk_size), progress=progress)}
    default_recs = [r for r in out["main"] if r["point"] == sections.default_point(cfg)]
    for n in cfg.sweeps.n_users:
        n = int(n)
        if n == n_default:  # the Table II point of the main sweep (same program, same item)
            out[n] = default_recs
            continue
        out[n] = sweep.run_sweep(store, f"sweep_n{n}", [{"n_users_point": float(n)}], seeds,
                                 _drop_point(compute_for(n)), config=conf, mesh=mesh,
                                 chunk_size=int(cfg.chunk_size), progress=progress)
    return out


def _drop_point(fn):
    """Adapts a compute function to the N sweep, whose point only labels N (no override)."""
    def compute(point_batch, seed_batch):
        return fn({k: v for k, v in point_batch.items() if k != "n_users_point"}, seed_batch)
    return compute


def run(cfg, workdir, results_dir, progress: bool = True, mesh=None) -> dict:
    """Runs (or resumes) the whole reproduction; writes figures, claims and README.

    ``workdir`` holds the resumable state (allocator checkpoints, the result
    store); ``results_dir`` receives ``fig*.png``/``.json``, ``claims.md``,
    ``summary.json``, ``config.json`` and ``README.md``.  Returns the summary.
    """
    validate_config(cfg)
    t_start = time.perf_counter()
    workdir = pathlib.Path(workdir)
    results_dir = pathlib.Path(results_dir)
    store = sweep.ResultStore(workdir / "store")
    store.check_writable()
    results_dir.mkdir(parents=True, exist_ok=True)
    times = {}

    t0 = time.perf_counter()
    allocs = train_allocators(cfg, workdir, progress)
    times["allocators"] = time.perf_counter() - t0
    fig04 = figures.fig04_data(allocs["moe"])

    t0 = time.perf_counter()
    fig12 = figures.fig12_data(cfg, run_fig12(cfg, store, progress))
    times["fig12"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sweeps = run_sweeps(cfg, store, allocs, progress, mesh)
    times["sweeps"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tabs = figures.tables(cfg, sweeps)
    names = figures.write_figures(cfg, tabs, fig04, fig12, results_dir)
    rows = claims.evaluate(cfg, tabs, fig04, fig12)
    times["figures"] = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    # Times summed over every invocation that built this workdir (a rerun after a kill,
    # or one that only redraws the figures, adds to them), so they stay true on reuse.
    tfile = workdir / "timings.json"
    prev = json.loads(tfile.read_text()) if tfile.is_file() else {
        "invocations": 0, "wall_time_s": 0.0, "peak_rss_mb": 0.0,
        "stage_wall_time_s": {k: 0.0 for k in times}}
    total = {"invocations": prev["invocations"] + 1,
             "wall_time_s": prev["wall_time_s"] + wall,
             "peak_rss_mb": max(prev["peak_rss_mb"], report.peak_rss_mb()),
             "stage_wall_time_s": {k: prev["stage_wall_time_s"].get(k, 0.0) + v
                                   for k, v in times.items()}}
    files.atomic_write(tfile, json.dumps(total, indent=1))
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
    files.atomic_write(results_dir / "config.json",
                       json.dumps(files.to_jsonable(cfg.to_dict()), indent=1) + "\n")
    files.atomic_write(results_dir / "README.md", report.results_readme(cfg, summary))
    return summary
